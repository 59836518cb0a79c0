"""``attendance remove NAME``: forget a person (privacy).

Deletes the person's photos (``images/<Name>/``), crops (``pre_images/<Name>/`` and their
preprocessing records) and embeddings (every model's rows in the gallery), in that order, so
that a gallery sync running meanwhile cannot re-embed the person. The attendance
history stays unless ``--purge`` is given, which also deletes the person's rows from the
``attendance`` and ``events`` tables. Asks first; ``--yes`` skips the question. Every step is
idempotent, so an interrupted removal is finished by running the command again.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from common.config import Config
from common.errors import UserError
from common.names import list_identities, person_dir, validate_name
from store.factory import (
    attendance_store_exists,
    embedding_store_exists,
    open_attendance_store,
    open_embedding_store,
    remove_from_stores,
)

log = logging.getLogger(__name__)

HELP = "remove a person: delete their photos, crops and embeddings (--purge: attendance too)"


class RemoveError(UserError):
    """The person cannot be removed (unknown name, locked database, file permissions)."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="the person to remove, as enrolled")
    parser.add_argument(
        "--purge",
        action="store_true",
        help="also delete the person's attendance history (attendance rows and events)",
    )
    parser.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")


@dataclass
class Footprint:
    """What is stored about one person."""

    name: str
    photos: int
    crops: int
    embeddings: int
    attendance_rows: int = 0
    events: int = 0

    @property
    def enrolled(self) -> bool:
        return bool(self.photos or self.crops or self.embeddings)

    @property
    def history(self) -> bool:
        return bool(self.attendance_rows or self.events)


def _count_files(folder: Path) -> int:
    if not folder.is_dir():
        return 0
    return sum(1 for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def _gallery_count(cfg: Config, name: str) -> int:
    if not embedding_store_exists(cfg):
        return 0  # do not create an empty gallery just to look
    with open_embedding_store(cfg) as gallery:
        return gallery.identities().get(name, 0)


def history_counts(cfg: Config, name: str) -> tuple[int, int]:
    """``(attendance rows, events)`` recorded for ``name`` (0, 0 without a database)."""
    if not attendance_store_exists(cfg):
        return 0, 0
    with open_attendance_store(cfg, create=False) as db:
        return len(db.rows(name=name)), len(db.events(name=name))


def footprint(cfg: Config, name: str, with_history: bool) -> Footprint:
    """Count what is stored about ``name`` (a validated identity)."""
    rows, events = history_counts(cfg, name) if with_history else (0, 0)
    return Footprint(
        name=name,
        photos=_count_files(person_dir(cfg.images_dir, name)),
        crops=_count_files(person_dir(cfg.pre_images_dir, name)),
        embeddings=_gallery_count(cfg, name),
        attendance_rows=rows,
        events=events,
    )


def _rmtree(folder: Path) -> None:
    try:
        shutil.rmtree(folder)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise RemoveError(
            f"cannot delete {folder} ({exc.strerror or exc}); check its permissions and run "
            "`attendance remove` again"
        ) from None


def remove_person(cfg: Config, name: str, purge: bool) -> Footprint:
    """Delete everything stored about ``name``; return what was there.

    The order matters: the sources go before what is derived from them (photos, then crops
    and their preprocessing records, then embeddings), so a gallery sync or preprocess run
    in between (a recogniser starting up) cannot bring the person back. Each step is
    idempotent; running again after an interruption finishes the removal.
    """
    before = footprint(cfg, name, purge)
    _rmtree(person_dir(cfg.images_dir, name))
    if Path(cfg.images_dir).is_dir() and Path(cfg.pre_images_dir).is_dir():
        from preprocess.pipeline import run_preprocess

        # drops the crops it made and the person's preprocessing records
        run_preprocess(cfg, names=[name], progress=False)
    _rmtree(person_dir(cfg.pre_images_dir, name))
    # a shared store deletes crops, embeddings (and with purge the history) in one transaction
    _, rows, events = remove_from_stores(cfg, name, purge=purge)
    if purge:
        before.attendance_rows, before.events = rows, events
    return before


def describe(fp: Footprint, purge: bool) -> str:
    text = f"{fp.name}: {fp.photos} photo(s), {fp.crops} crop(s), {fp.embeddings} embedding(s)"
    if purge:
        return text + f", {fp.attendance_rows} attendance row(s) and {fp.events} event(s)"
    return text + "; the attendance history is kept (--purge deletes it too)"


def run(args: argparse.Namespace, cfg: Config) -> int:
    name = validate_name(args.name)
    person_dir(cfg.images_dir, name)  # refuses names that would leave the folder
    fp = footprint(cfg, name, args.purge)
    if not fp.enrolled and not (args.purge and fp.history):
        known = list_identities(cfg.images_dir)
        shown = ", ".join(known[:10]) + (" ..." if len(known) > 10 else "") if known else "none"
        raise RemoveError(f"unknown name {name!r}: nobody is enrolled under it (enrolled: {shown})")
    if not args.yes:
        if not sys.stdin or not sys.stdin.isatty():
            log.info("no terminal to ask on; pass --yes to remove without asking")
        from scanner.cli import confirm

        if not confirm(f"Remove {describe(fp, args.purge)}?", default=False):
            print("nothing removed")
            return 1
    done = remove_person(cfg, name, args.purge)
    print(f"removed {describe(done, args.purge)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m scanner.remove_cli NAME``."""
    from common.runner import run_single

    return run_single("attendance remove", HELP, configure, run, argv)


if __name__ == "__main__":
    sys.exit(main())
