"""``attendance remove NAME``: photos, crops and embeddings go; history only with --purge."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from test_scanner_enrol import ADA_TINT, ALAN_TINT, FakeEmbedder, rows_of, write_shots
from test_scanner_session import FakeDetector

from attendance.cli import main as attendance_main
from common.config import Config
from preprocess.pipeline import manifest_path, run_preprocess
from store.factory import open_attendance_store, open_embedding_store
from store.gallery import sync_gallery
from store.sqlite_embeddings import SQLiteEmbeddingStore


@pytest.fixture
def cfg(workspace: Config) -> Config:
    """Ada and Alan enrolled, each seen on two days."""
    write_shots(workspace, "Ada Lovelace", ADA_TINT, 3)
    write_shots(workspace, "Alan Turing", ALAN_TINT, 2, seed=100)
    run_preprocess(workspace, detector=FakeDetector(), progress=False)
    with open_embedding_store(workspace) as gallery:
        sync_gallery(gallery, workspace, FakeEmbedder(), progress=False)
    with open_attendance_store(workspace) as db:
        for day in (1, 2):
            for name in ("Ada Lovelace", "Alan Turing"):
                db.mark_present(name, dt.datetime(2024, 3, day, 9, 0), 0.5, "test")
    return workspace


def remove(cfg: Config, *args: str) -> int:
    return attendance_main(["remove", "--workspace", str(cfg.root), *args])


def history(cfg: Config, name: str) -> tuple[int, int]:
    with open_attendance_store(cfg) as db:
        return len(db.rows(name=name)), len(db.events(name=name))


def manifest_identities(cfg: Config) -> set[str]:
    entries = json.loads(manifest_path(cfg).read_text(encoding="utf-8"))["entries"]
    return {entry["identity"] for entry in entries.values()}


def test_remove_keeps_history_by_default(cfg: Config, capsys) -> None:
    alan_rows = rows_of(cfg, "Alan Turing")
    assert remove(cfg, "Ada Lovelace", "--yes") == 0
    out = capsys.readouterr().out
    assert "removed Ada Lovelace: 3 photo(s), 3 crop(s), 3 embedding(s)" in out
    assert "attendance history is kept" in out
    assert not (cfg.images_dir / "Ada Lovelace").exists()
    assert not (cfg.pre_images_dir / "Ada Lovelace").exists()
    assert rows_of(cfg, "Ada Lovelace") == []
    assert manifest_identities(cfg) == {"Alan Turing"}
    assert history(cfg, "Ada Lovelace") == (2, 2)
    # nobody else is touched
    assert rows_of(cfg, "Alan Turing") == alan_rows
    assert len(list((cfg.images_dir / "Alan Turing").iterdir())) == 2
    assert history(cfg, "Alan Turing") == (2, 2)


def test_purge_deletes_the_history_too(cfg: Config, capsys) -> None:
    assert remove(cfg, "Ada Lovelace", "--purge", "--yes") == 0
    out = capsys.readouterr().out
    assert "2 attendance row(s) and 2 event(s)" in out
    assert history(cfg, "Ada Lovelace") == (0, 0)
    assert history(cfg, "Alan Turing") == (2, 2)


def test_purge_after_a_plain_removal(cfg: Config, capsys) -> None:
    assert remove(cfg, "Ada Lovelace", "--yes") == 0
    assert remove(cfg, "Ada Lovelace", "--yes") == 2  # nothing enrolled any more
    assert "unknown name 'Ada Lovelace'" in capsys.readouterr().err
    assert remove(cfg, "Ada Lovelace", "--purge", "--yes") == 0  # but the history is there
    assert history(cfg, "Ada Lovelace") == (0, 0)


def test_asks_before_removing(cfg: Config, monkeypatch, capsys) -> None:
    questions = []

    def answer(reply: str):
        def fake_input(prompt: str = "") -> str:
            questions.append(prompt)
            return reply

        return fake_input

    monkeypatch.setattr("builtins.input", answer(""))  # the default is no
    assert remove(cfg, "Ada Lovelace") == 1
    assert "nothing removed" in capsys.readouterr().out
    assert questions[-1].startswith("Remove Ada Lovelace: 3 photo(s)") and "[y/N]" in questions[-1]
    assert len(rows_of(cfg, "Ada Lovelace")) == 3

    monkeypatch.setattr("builtins.input", answer("y"))
    assert remove(cfg, "Ada Lovelace", "--purge") == 0
    assert "2 attendance row(s)" in questions[-1]
    assert rows_of(cfg, "Ada Lovelace") == [] and history(cfg, "Ada Lovelace") == (0, 0)


def test_end_of_input_means_no(cfg: Config, monkeypatch) -> None:
    def closed(prompt: str = "") -> str:
        raise EOFError

    monkeypatch.setattr("builtins.input", closed)
    assert remove(cfg, "Ada Lovelace") == 1
    assert (cfg.images_dir / "Ada Lovelace").is_dir()


@pytest.mark.parametrize(
    ("name", "message"), [("Grace Hopper", "unknown name"), ("../x", "'../x'")]
)
def test_unknown_or_bad_name_is_a_one_line_error(cfg: Config, capsys, name, message) -> None:
    assert remove(cfg, name, "--yes") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    if message == "unknown name":
        assert "Ada Lovelace, Alan Turing" in err


def test_remove_in_an_empty_workspace_creates_nothing(workspace: Config, capsys) -> None:
    assert remove(workspace, "Ada", "--purge", "--yes") == 2
    assert not workspace.gallery_path.exists() and not workspace.db_path.exists()


# --------------------------------------------------------------------------- step order
STEPS = 4  # images/<Name>, preprocess (crops + records), pre_images/<Name>, gallery rows


class Crash(Exception):
    """A simulated interruption (power cut, Ctrl-C) between two removal steps."""


def hook_steps(monkeypatch, after_step) -> None:
    """Call ``after_step(k)`` right after the k-th removal step (0-based), in whatever order
    :func:`remove_person` runs them."""
    import preprocess.pipeline
    import scanner.remove_cli

    done = [0]

    def wrap(step):
        def wrapped(*args, **kwargs):
            result = step(*args, **kwargs)
            done[0] += 1
            after_step(done[0] - 1)
            return result

        return wrapped

    monkeypatch.setattr(scanner.remove_cli, "_rmtree", wrap(scanner.remove_cli._rmtree))
    monkeypatch.setattr(
        preprocess.pipeline, "run_preprocess", wrap(preprocess.pipeline.run_preprocess)
    )
    monkeypatch.setattr(
        SQLiteEmbeddingStore, "remove_identity", wrap(SQLiteEmbeddingStore.remove_identity)
    )


def assert_ada_gone(cfg: Config) -> None:
    assert not (cfg.images_dir / "Ada Lovelace").exists()
    assert not (cfg.pre_images_dir / "Ada Lovelace").exists()
    assert manifest_identities(cfg) == {"Alan Turing"}
    assert rows_of(cfg, "Ada Lovelace") == []
    assert len(rows_of(cfg, "Alan Turing")) == 2


@pytest.mark.parametrize("step", range(STEPS))
def test_a_sync_between_steps_cannot_bring_the_person_back(cfg: Config, monkeypatch, step) -> None:
    """A recogniser starting up (``load_gallery`` = full sync) while the removal runs."""
    from scanner.remove_cli import remove_person

    synced = []

    def sync_now(k: int) -> None:
        if k == step:
            with open_embedding_store(cfg) as gallery:
                sync_gallery(gallery, cfg, FakeEmbedder(), progress=False)
            synced.append(k)

    hook_steps(monkeypatch, sync_now)
    remove_person(cfg, "Ada Lovelace", purge=False)
    assert synced == [step]
    assert_ada_gone(cfg)
    with open_embedding_store(cfg) as gallery:  # and the next start-up sync neither
        sync_gallery(gallery, cfg, FakeEmbedder(), progress=False)
    assert rows_of(cfg, "Ada Lovelace") == []


@pytest.mark.parametrize("step", range(STEPS))
def test_running_again_finishes_an_interrupted_removal(cfg: Config, monkeypatch, step) -> None:
    from scanner.remove_cli import remove_person

    def crash(k: int) -> None:
        if k == step:
            raise Crash(f"interrupted after step {k}")

    with monkeypatch.context() as patch:
        hook_steps(patch, crash)
        with pytest.raises(Crash):
            remove_person(cfg, "Ada Lovelace", purge=True)
    assert history(cfg, "Ada Lovelace") == (2, 2)  # the purge comes last: not reached
    assert remove(cfg, "Ada Lovelace", "--purge", "--yes") == 0
    assert_ada_gone(cfg)
    assert history(cfg, "Ada Lovelace") == (0, 0)
    assert history(cfg, "Alan Turing") == (2, 2)


# ------------------------------------------------------------------ removal during a sync
class RemovedWhileEmbedding(FakeEmbedder):
    """A new model (so every crop is embedded afresh) whose ``embed`` call number ``when``
    runs, mid-sync, what ``attendance remove --yes Ada`` does in another terminal: the real
    removal, photos then crops then embeddings, on its own gallery connection."""

    model_id = "fake-colour-v2"

    def __init__(self, cfg: Config, when: int) -> None:
        super().__init__()
        self.cfg, self.when = cfg, when
        self.removed: list[int] = []

    def embed(self, crops):
        if len(self.embedded) == self.when:
            from scanner.remove_cli import remove_person

            done = remove_person(self.cfg, "Ada Lovelace", purge=False)
            assert not (self.cfg.pre_images_dir / "Ada Lovelace").exists()
            self.removed.append(done.embeddings)
        return super().embed(crops)


@pytest.mark.parametrize(
    ("batch", "when"),
    [(32, 0), (1, 0), (1, 1), (1, 2)],
    ids=["one-batch", "before-ada-1", "before-ada-2", "before-ada-3"],
)
def test_a_person_removed_during_a_start_up_sync_stays_removed(
    cfg: Config, batch: int, when: int
) -> None:
    """A recogniser's start-up sync is embedding Ada's crops when ``attendance remove`` runs:
    the rows the sync inserts afterwards must not bring her back (issue 9, item 2)."""
    cfg = cfg.replace(embed_batch=batch)
    embedder = RemovedWhileEmbedding(cfg, when)
    with open_embedding_store(cfg) as gallery:
        summary = sync_gallery(gallery, cfg, embedder, progress=False)
    assert embedder.removed, "the removal did not run during the sync"
    assert_ada_gone(cfg)
    # the crops in the batch being embedded when she was removed are not stored (the later
    # ones of a batch of 1 are not even read: they are gone)
    assert summary.vanished == (3 if batch > 1 else 1)
    with open_embedding_store(cfg) as fresh:  # what a recogniser loads next
        labels, _ = fresh.load(embedder.model_id, dim=embedder.dim)
        assert "Ada Lovelace" not in labels and labels.count("Alan Turing") == 2
        assert "Ada Lovelace" not in fresh.identities()
        sync_gallery(fresh, cfg, embedder, progress=False)  # and a later sync neither
        assert "Ada Lovelace" not in fresh.identities()
