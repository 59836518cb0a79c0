"""``scanner`` / ``attendance scan``: enrol a person in about a minute.

Captures 30–35 good face shots into ``images/<Name>/`` (space bar, or ``--auto`` for
pose-diverse automatic capture), then preprocesses and embeds this person only, so
``face_recognizer`` knows them at once. ``--headless`` runs without a window from scripted keys.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import logging
import shlex
import sys
from pathlib import Path
from typing import Any

from common.config import Config
from common.errors import UserError
from common.names import InvalidName, list_identities, person_dir, validate_name

log = logging.getLogger(__name__)

HELP = "enrol a person: capture face shots into images/<Name>/ and make them recognisable"

KEYS_HELP = (
    "scripted keys for --headless, one step per frame: space[:N] (press space on the next N "
    "frames), wait[:N] (N frames without a key), auto (toggle auto capture), esc (finish). "
    'Example: --keys "space,space,wait:5,esc"'
)


class ScanError(UserError):
    """The scan cannot start as asked."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", help="the person's name (prompted for when omitted)")
    parser.add_argument(
        "--source",
        default="0",
        help="camera index, video file, stream URL or folder of images (default: camera 0)",
    )
    parser.add_argument(
        "--auto",
        action="store_true",
        help="capture automatically whenever the frame is good and the head pose differs "
        "enough (scan_pose_step degrees) from the shots already taken; the window leads the "
        "head through poses, and if no new pose comes for scan_relax_seconds the step is "
        "halved (down to scan_pose_step_min)",
    )
    parser.add_argument(
        "--headless", action="store_true", help="no window: drive the scan with --keys/--auto"
    )
    keys = parser.add_mutually_exclusive_group()
    keys.add_argument("--keys", metavar="SCRIPT", help=KEYS_HELP)
    keys.add_argument(
        "--keys-file", metavar="FILE", help="read the --keys script from FILE (# comments)"
    )
    parser.add_argument(
        "-y",
        "--yes",
        action="store_true",
        help="do not ask: append to an existing name and keep shots despite duplicate "
        "warnings (without a terminal, or with --headless, shots are kept with a warning)",
    )
    parser.add_argument(
        "--no-enrol",
        action="store_true",
        help="only capture; run call_preprocess and the recogniser's gallery update later",
    )
    parser.add_argument(
        "--enrol-after",
        action="store_true",
        help="preprocess and embed only after capture (default: while capturing)",
    )


# --------------------------------------------------------------------------- factories
def make_detector(cfg: Config) -> Any:
    """The MTCNN detector (tests substitute a shared or fake one)."""
    from preprocess.detectors import make_detector

    return make_detector(cfg)


def load_embedder(cfg: Config) -> Any:
    """The FaceNet embedder, warmed up so its first real batch is fast."""
    import numpy as np

    from model.embedder import Embedder

    embedder = Embedder.from_config(cfg)
    embedder.embed(np.zeros((1, embedder.input_size, embedder.input_size, 3), np.uint8))
    return embedder


# --------------------------------------------------------------------------- prompts
def interactive() -> bool:
    """True when a person can answer questions on this terminal."""
    return bool(sys.stdin and sys.stdin.isatty())


def confirm(question: str, default: bool) -> bool:
    """Ask a yes/no question; an empty answer is ``default``, end of input is "no"."""
    suffix = " [Y/n] " if default else " [y/N] "
    try:
        answer = input(question + suffix).strip().lower()
    except EOFError:
        return False
    if not answer:
        return default
    return answer in ("y", "yes")


def ask_name(given: str | None) -> str:
    """The validated name: ``--name`` or typed at the prompt (three tries)."""
    if given is not None:
        return validate_name(given)
    for attempt in range(3):
        try:
            raw = input("Name of the person to enrol: ")
        except EOFError:
            raise ScanError("no name given; pass --name NAME") from None
        try:
            return validate_name(raw)
        except InvalidName as exc:
            if attempt == 2 or not interactive():
                raise
            print(f"{exc}; try again", file=sys.stderr)
    raise ScanError("no valid name given; pass --name NAME")  # pragma: no cover


def _key_script(args: argparse.Namespace):  # noqa: ANN202
    from scanner.session import KeyScript

    if args.keys is not None:
        return KeyScript.parse(args.keys)
    if args.keys_file is not None:
        return KeyScript.from_file(Path(args.keys_file))
    return None


# --------------------------------------------------------------------------- run
def run(args: argparse.Namespace, cfg: Config) -> int:
    script = _key_script(args)
    if args.headless and script is None and not args.auto:
        raise ScanError("--headless needs --keys, --keys-file or --auto to capture anything")
    if script is not None and not args.headless:
        raise ScanError("--keys and --keys-file only apply with --headless")
    if not args.headless:
        from scanner.display import check_display

        check_display()  # before the slow model loading
    name = ask_name(args.name)
    folder = person_dir(cfg.images_dir, name)
    name = folder.name
    can_ask = interactive() and not args.headless and not args.yes
    if not _agree_to_append(cfg, name, folder, can_ask):
        print("cancelled: nothing captured")
        return 1

    import numpy as np

    from common.sources import open_source
    from scanner.enrol import Enroller, LockedDetector
    from scanner.quality import QualityLimits
    from scanner.session import CaptureSession, DownscaledDetector

    with open_source(args.source) as source:
        log.info("loading the face detector")
        detector = LockedDetector(make_detector(cfg))
        detector.detect(np.zeros((64, 64, 3), np.uint8))  # TensorFlow start-up, once
        loader: cf.ThreadPoolExecutor | None = None
        enroller: Enroller | None = None
        if not args.no_enrol:
            loader = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedder")
            enroller = Enroller(
                cfg,
                name,
                DownscaledDetector(detector, cfg.detect_width),
                loader.submit(load_embedder, cfg),
                background=not args.enrol_after,
            )
        try:
            session = CaptureSession(
                name,
                cfg.images_dir,
                detector,
                QualityLimits.from_config(cfg),
                target=cfg.target_shots,
                min_shots=cfg.min_shots,
                detect_width=cfg.detect_width,
                auto=args.auto,
                pose_step=cfg.scan_pose_step,
                relax_seconds=cfg.scan_relax_seconds,
                min_pose_step=cfg.scan_pose_step_min,
                on_shot=(lambda shot: enroller.shot_saved(shot.path)) if enroller else None,
            )
            print(f"scanning {name} from {source.describe()}: {session.total}/{session.target}")
            result = _capture(args, session, source, script)
            code = _report_capture(result, cfg)
            if enroller is not None and result.shots:
                code = max(code, _finish_enrolment(args, cfg, enroller, result, can_ask))
            return code
        finally:
            if enroller is not None:
                enroller.close()
            if loader is not None:
                loader.shutdown(wait=False, cancel_futures=True)


def _agree_to_append(cfg: Config, name: str, folder: Path, can_ask: bool) -> bool:
    from scanner.session import count_shots

    existing = count_shots(folder)
    others = [n for n in list_identities(cfg.images_dir) if n != name]
    for other in others:
        if other.casefold() == name.casefold():
            print(f"note: {other!r} is already enrolled; {name!r} differs only in upper/lower case")
    if not existing:
        return True
    print(
        f"{name} already has {existing} shot(s) in {folder}; new shots are added after them "
        "(nothing is overwritten)"
    )
    return not can_ask or confirm(f"Add more shots of {name}?", default=True)


def _capture(args: argparse.Namespace, session: Any, source: Any, script: Any) -> Any:
    if args.headless:
        from scanner.session import run_headless

        return run_headless(session, source, script if script is not None else ())
    from scanner.display import run_window

    footer = "space: capture   a: auto on/off   esc: finish"
    return run_window(session, source, title=f"scanner - {session.name}", footer=footer)


def _report_capture(result: Any, cfg: Config) -> int:
    print(
        f"saved {len(result.shots)} new shot(s) of {result.name} in {result.folder}: "
        f"{result.total}/{result.target} ({result.stopped_by})"
    )
    if len(result.shots) >= 2:
        print(pose_spread_line(result, cfg))
    if result.complete:
        return 0
    print(
        f"enrolment incomplete: {result.total} shot(s), at least {result.min_shots} needed; "
        f"run `scanner --name {_quoted(result.name)}` again to continue from there"
    )
    return 1


def pose_spread_line(result: Any, cfg: Config) -> str:
    """How widely the new shots cover head poses, and whether auto mode relaxed its step."""
    spread = result.spread
    line = (
        f"pose spread of the new shots: yaw range {spread.yaw_range:.0f}°, pitch range "
        f"{spread.pitch_range:.0f}° (std {spread.yaw_std:.1f}°/{spread.pitch_std:.1f}°, "
        f"nearest other shot {spread.mean_nearest:.1f}° on average)"
    )
    if result.relaxations:
        line += (
            f"; pose step relaxed {result.relaxations}x, {cfg.scan_pose_step:g}° -> "
            f"{result.pose_step:.2g}°, as the head barely moved"
        )
    return line


def _quoted(name: str) -> str:
    """``name`` as one shell word, safe to paste: ``$(…)``, backticks and quotes stay text."""
    return shlex.quote(name)


def _finish_enrolment(
    args: argparse.Namespace, cfg: Config, enroller: Any, result: Any, can_ask: bool
) -> int:
    from scanner.enrol import check_enrolment, crop_relpaths, discard_shots

    print(f"making {result.name} recognisable ...")
    timing = enroller.finish()
    print(timing.line())
    crops = crop_relpaths(cfg, result.new_paths)
    missing = [p.name for p, rel in crops.items() if rel is None]
    if missing:
        print(
            f"warning: {len(missing)} shot(s) gave no usable face crop and are not used: "
            + ", ".join(missing[:10])
            + (" ..." if len(missing) > 10 else "")
        )
    embedder = enroller.embedder()
    check = check_enrolment(cfg, result.name, result.new_paths, embedder)
    for line in check.lines():
        print(line)
    if check.suspicious:
        if args.yes:
            print("keeping the shots (--yes)")
        elif can_ask:
            if not confirm(f"Keep the {len(result.shots)} new shot(s) of {result.name}?", True):
                count = discard_shots(
                    cfg, result.name, result.new_paths, embedder, detector=enroller.detector
                )
                print(f"discarded {count} new shot(s) of {result.name} with their crops")
                return 1
        else:
            print(
                "keeping the shots (no one to ask; pass --yes to silence this); undo with "
                f"`attendance remove {_quoted(result.name)}`"
            )
    kept = check.new_count
    print(f"{result.name} is recognisable now ({kept} new embedding(s) in the gallery)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``scanner`` console script."""
    from common.runner import run_single

    return run_single("scanner", HELP, configure, run, argv)


if __name__ == "__main__":
    sys.exit(main())
