"""``attendance db``: the store's schema, moving a workspace into a shared store, role grants.

- ``attendance db upgrade``: apply the schema migrations the configured store lacks
  (PostgreSQL: run as the database owner; SQLite files are upgraded when opened).
- ``attendance db copy --from WORKSPACE [--to URL]``: copy a one-machine workspace (its
  gallery with the crop images, attendance rows and events, model versions) into a shared
  store, then verify row counts and checksums. Safe to rerun: nothing is copied twice.
- ``attendance db grants --kiosk ROLE --admin ROLE``: print the least-privilege GRANTs.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import stat
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from common.config import Config, load_config
from common.errors import UserError
from common.names import InvalidName, validate_name
from common.runner import add_common_arguments_after_action
from common.urls import redact_url
from store.factory import (
    attendance_store_exists,
    embedding_store_exists,
    is_shared,
    open_attendance_store,
    open_embedding_store,
    store_grants,
    upgrade_store,
)
from store.records import CropEmbedding

HELP = "the store: upgrade its schema, copy a workspace into a shared store, print role grants"

log = logging.getLogger(__name__)

COPY_BATCH = 256  # crops per transaction


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the subcommands and their flags."""
    sub = parser.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    sub.add_parser("upgrade", help="apply the schema migrations the store lacks")
    copy = sub.add_parser(
        "copy", help="copy a workspace's gallery, crops and attendance into a shared store"
    )
    copy.add_argument("--from", dest="source", metavar="WORKSPACE", required=True)
    copy.add_argument(
        "--to", dest="target", metavar="URL", help="postgresql://... (default: the store key)"
    )
    grants = sub.add_parser("grants", help="print the GRANTs of a kiosk and an admin role")
    grants.add_argument("--kiosk", default="attendance_kiosk", help="the recognisers' role")
    grants.add_argument("--admin", default="attendance_admin", help="enrolment and HR's role")
    for action in (sub.choices["upgrade"], copy, grants):
        add_common_arguments_after_action(action)


def run(args: argparse.Namespace, cfg: Config) -> int:
    """Dispatch to the subcommand."""
    if args.db_command == "upgrade":
        return _upgrade(cfg)
    if args.db_command == "grants":
        try:
            statements = store_grants(args.kiosk, args.admin)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        print(";\n".join(statements) + ";")
        return 0
    target = cfg.replace(store=args.target) if args.target else cfg
    if not is_shared(target):
        raise UserError(
            "db copy needs a shared store to copy into: --to postgresql://user@host/db "
            "(or set the store key)"
        )
    report = copy_workspace(_source_config(Path(args.source)), target)
    for line in report.lines():
        print(line)
    return 0 if report.verified else 1


def _upgrade(cfg: Config) -> int:
    before, applied = upgrade_store(cfg)
    where = redact_url(cfg.store) if is_shared(cfg) else f"{cfg.db_path} and {cfg.gallery_path}"
    if not is_shared(cfg):
        print(f"{where}: up to date (SQLite files are upgraded when opened)")
    elif applied:
        print(f"{where}: schema {before or 0} -> applied {', '.join(applied)}")
    else:
        print(f"{where}: schema up to date (version {before})")
    return 0


def _source_config(root: Path) -> Config:
    """The configuration of the workspace at ``root``, on its own SQLite files."""
    root = root.expanduser()
    if not root.is_dir():
        raise UserError(f"--from {root}: not a folder; give the workspace to copy")
    env = {k: v for k, v in os.environ.items() if k != "ATTENDANCE_STORE"}
    return load_config(root, overrides={"store": ""}, env=env)


# --------------------------------------------------------------------------- copying
@dataclass
class Check:
    """One table's copy: source rows, rows found in the target, checksums equal."""

    table: str
    source: int
    found: int
    same: bool


@dataclass
class CopyReport:
    """What ``db copy`` copied and verified."""

    source: str
    target: str
    checks: list[Check]
    problems: list[str]  # rows that could not be copied: the copy is not verified
    excluded: list[str]  # people removed from the store: deliberately not copied

    @property
    def verified(self) -> bool:
        return not self.problems and all(c.same and c.found == c.source for c in self.checks)

    def lines(self) -> list[str]:
        out = [f"copied {self.source} -> {self.target}"]
        out += [
            f"  {c.table:<22} {c.source:>7} in the source, {c.found:>7} in the store, "
            f"checksum {'ok' if c.same else 'DIFFERS'}"
            for c in self.checks
        ]
        out += [f"  not copied: {reason}" for reason in self.problems]
        out += [f"  left out: {reason}" for reason in self.excluded]
        out.append(
            "verified: every source row is in the store"
            if self.verified
            else "NOT verified: rows are missing or differ (see above); fix them and run again "
            "(nothing is copied twice), or check whether the store already held other data "
            "for these people and days"
        )
        return out


def _digest(rows: Iterable[tuple]) -> str:
    text = json.dumps(sorted(rows, key=repr), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def copy_workspace(source: Config, target: Config) -> CopyReport:
    """Copy ``source``'s SQLite stores (and crop files) into the shared store of ``target``,
    then verify every table by count and checksum. People removed from the store are left out
    (a rerun after a removal does not bring them back)."""
    # the crops are published as the source workspace's own
    target = dataclasses.replace(target, root=source.root)
    checks: list[Check] = []
    problems: list[str] = []
    removed: dict = {}
    with open_embedding_store(target) as dst:
        if embedding_store_exists(source):
            with open_embedding_store(source) as src:
                removed = dict(dst.tombstones(src.identities()))  # type: ignore[attr-defined]
                for model_id in src.model_ids():
                    checks.append(_copy_gallery(source, src, dst, model_id, removed, problems))
        checks.append(_copy_models(source, dst))
        if attendance_store_exists(source):
            with open_attendance_store(source, create=False) as src_db:
                names = {r.name for r in src_db.rows()} | {e.name for e in src_db.events()}
            removed.update(dst.tombstones(names))  # type: ignore[attr-defined]
    if attendance_store_exists(source):
        with (
            open_attendance_store(source, create=False) as src,
            open_attendance_store(target) as dst,
        ):
            checks += _copy_history(src, dst, set(removed))
    excluded = [
        f"{name}: removed from the store on {when:%Y-%m-%d %H:%M %Z}"
        for name, when in sorted(removed.items())
    ]
    return CopyReport(str(source.root), redact_url(target.store), checks, problems, excluded)


def _copy_history(src, dst, removed: set[str]) -> list[Check]:
    """Copy attendance rows and events (not of ``removed`` people); one check each."""
    rows = [r for r in src.rows() if r.name not in removed]
    dst.import_rows(rows)
    wanted = {(r.name, r.date) for r in rows}
    found = [r for r in dst.rows() if (r.name, r.date) in wanted]
    events = [e for e in src.events() if e.name not in removed]
    dst.import_events(events)
    need = Counter((e.timestamp, e.name, e.distance, e.source, e.action) for e in events)
    have = Counter(
        k for e in dst.events() if (k := (e.timestamp, e.name, e.distance, e.source, e.action))
        in need
    )  # fmt: skip
    present = Counter({k: min(n, have[k]) for k, n in need.items()})
    return [
        Check("attendance", len(rows), len(found), _digest(rows) == _digest(found)),
        Check("events", len(events), sum(present.values()), present == need),
    ]


def _copy_gallery(
    source: Config, src, dst, model_id: str, removed: dict, problems: list[str]
) -> Check:
    """Copy the crops and embeddings of one model, a batch per transaction; the check compares
    (relpath, sha256, vector) of every crop copied."""
    stored = src.stored(model_id, None)
    vectors = src.vectors(model_id, {row.sha256 for rows in stored.values() for row in rows})
    base = Path(source.pre_images_dir).resolve()
    want: set[tuple[str, str, bytes]] = set()
    identities: set[str] = set()
    batch: list[CropEmbedding] = []
    for relpath, entries in sorted(stored.items()):
        for entry in entries:
            identity = relpath.split("/", 1)[0]
            if identity in removed:
                continue
            data = _read_crop(base, relpath)
            if data is None or entry.sha256 not in vectors:
                problems.append(f"{relpath}: no such crop file under {base}")
                continue
            if hashlib.sha256(data).hexdigest() != entry.sha256:
                problems.append(f"{relpath}: the crop changed since it was embedded")
                continue
            dim, vector = vectors[entry.sha256]
            batch.append(
                CropEmbedding(
                    entry.sha256, relpath, identity, entry.size, entry.mtime_ns, dim, vector, data
                )
            )
            want.add((relpath, entry.sha256, vector))
            identities.add(identity)
            if len(batch) >= COPY_BATCH:
                dst.insert(model_id, batch)
                batch = []
    if batch:
        dst.insert(model_id, batch)
    there = dst.stored(model_id, sorted(identities))
    there_vectors = dst.vectors(model_id, {sha for _, sha, _ in want})
    got = {
        key
        for relpath, entries in there.items()
        for e in entries
        if (key := (relpath, e.sha256, there_vectors.get(e.sha256, (0, b""))[1])) in want
    }
    return Check(f"gallery {model_id[:14]}", len(want), len(got), _digest(want) == _digest(got))


def _read_crop(base: Path, relpath: str) -> bytes | None:
    """The bytes of the crop ``base/<Name>/<file>.png``, read once; ``None`` unless ``relpath``
    (from a database file, so checked like any path read from a file) is exactly a valid
    identity folder and a file name in it, neither of them a symbolic link, the file regular."""
    parts = relpath.split("/")
    if len(parts) != 2 or parts[1] in ("", ".", ".."):
        return None
    try:
        if validate_name(parts[0]) != parts[0]:
            return None
    except InvalidName:
        return None
    folder = base / parts[0]
    if folder.is_symlink() or not folder.is_dir():
        return None
    try:
        fd = os.open(folder / parts[1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except (OSError, ValueError):  # ValueError: a NUL byte in the name
        return None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return None
        return handle.read()


def _copy_models(source: Config, dst) -> Check:
    """Record the workspace's fine-tuned model versions (id, threshold, metadata)."""
    from model.versions import list_versions, to_json

    want = {}
    for version in list_versions(source):
        threshold = version.meta.get("threshold")
        meta = json.loads(to_json({"version": version.version, **version.meta}))
        want[version.model_id] = (
            float(threshold) if isinstance(threshold, (int, float)) else None,
            meta,
        )
        dst.record_model(version.model_id, want[version.model_id][0], json.dumps(meta))
    there = dst.models()
    found = [key for key, value in want.items() if there.get(key) == value]
    return Check("model versions", len(want), len(found), len(found) == len(want))


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point (``python -m attendance.db_cli``)."""
    from common.runner import run_single

    return run_single("attendance db", HELP, configure, run, argv)
