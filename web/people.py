"""Changes an admin makes from the dashboard: removing a person, settings (worker threads)."""

from __future__ import annotations

import logging
from typing import Any

from common.config import Config, write_config_value
from common.errors import UserError
from scanner.remove_cli import footprint
from scanner.remove_cli import remove_person as remove_everywhere
from web.queries import NotFound, person_name

log = logging.getLogger(__name__)


def remove_person(cfg: Config, raw: str, purge: bool, by: str) -> dict[str, Any]:
    """Delete the person's photos, crops and embeddings (and with ``purge`` their history)
    everywhere, as ``attendance remove`` does; what was removed."""
    name = person_name(raw)
    before = footprint(cfg, name, purge)
    if not before.enrolled and not (purge and before.history):
        raise NotFound(f"{name!r} is not enrolled: nothing to remove")
    done = remove_everywhere(cfg, name, purge)
    log.info("%s removed %s%s", by, name, " and their history" if purge else "")
    return {
        "name": name,
        "photos": done.photos,
        "crops": done.crops,
        "embeddings": done.embeddings,
        "attendance_rows": done.attendance_rows,
        "events": done.events,
        "purged": purge,
    }


def change_settings(ctx: Any, threshold: float | None, version: str | None, by: str) -> Config:
    """Write the threshold and/or switch the active model version (``attendance.toml``, as
    ``attendance model use`` does), then reload the configuration. Running recognisers use
    the new values when they restart."""
    from model.versions import switch_version

    if threshold is None and not version:
        raise UserError("nothing to change: give a threshold or a model version")
    with ctx.lock:
        cfg = ctx.cfg
        if version and version != cfg.model_version:
            switch_version(cfg, version)
            log.info("%s switched the model to %s", by, version)
        if threshold is not None:
            write_config_value(cfg.root, "threshold", float(threshold))
            log.info("%s set the threshold to %.4f", by, threshold)
    return ctx.reconfigure()
