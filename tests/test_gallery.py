"""store.gallery on the SQLite embedding store: sync, persistence, models, resuming, bad input."""

from __future__ import annotations

import logging
import shutil
import sqlite3
from pathlib import Path

import cv2
import numpy as np
import pytest

from common.config import Config
from common.names import InvalidName
from common.vectors import match_embeddings
from store.factory import open_embedding_store
from store.gallery import GalleryWatcher, SyncSummary, load_gallery, sync_gallery
from store.records import GalleryError
from store.sqlite_embeddings import SQLiteEmbeddingStore


class FakeEmbedder:
    """Deterministic stand-in: a fixed projection of the crop's 4x4 thumbnail, unit norm."""

    def __init__(self, model_id: str = "fake-v1", dim: int = 8, fail_after: int | None = None):
        self.model_id = model_id
        self.dim = dim
        self.calls: list[int] = []
        self.fail_after = fail_after
        self._projection = np.random.default_rng(42).normal(size=(48, dim))

    def embed(self, crops: np.ndarray) -> np.ndarray:
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise KeyboardInterrupt  # what a user's Ctrl-C in the middle of a sync looks like
        self.calls.append(len(crops))
        thumbs = np.stack([cv2.resize(c, (4, 4), interpolation=cv2.INTER_AREA) for c in crops])
        x = thumbs.reshape(len(crops), -1).astype(np.float64) / 255.0 - 0.5
        y = x @ self._projection
        return (y / np.linalg.norm(y, axis=1, keepdims=True)).astype(np.float32)

    @property
    def embedded(self) -> int:
        return sum(self.calls)


def write_crop(path: Path, seed: int, size: int = 160) -> Path:
    """A random-blocks RGB crop (distinct per seed), saved as PNG."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    rgb = cv2.resize(blocks, (size, size), interpolation=cv2.INTER_NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def enrol(cfg: Config, name: str, count: int, seed: int) -> list[Path]:
    return [write_crop(cfg.pre_images_dir / name / f"{i:04d}.png", seed + i) for i in range(count)]


@pytest.fixture
def cfg(workspace: Config) -> Config:
    cfg = workspace.replace(embed_batch=4)
    enrol(cfg, "Ada Lovelace", 5, seed=0)
    enrol(cfg, "Alan Turing", 3, seed=100)
    return cfg


def rows(cfg: Config) -> list[tuple]:
    with sqlite3.connect(cfg.gallery_path) as conn:
        return conn.execute(
            "SELECT sha256, model_id, identity, relpath, dim, length(vector) FROM embeddings "
            "ORDER BY relpath"
        ).fetchall()


def test_sync_embeds_everything_once_and_load_recomputes_nothing(cfg: Config) -> None:
    embedder = FakeEmbedder()
    with open_embedding_store(cfg) as gallery:
        summary = sync_gallery(gallery, cfg, embedder, progress=False)
        assert (summary.embedded, summary.unchanged, summary.removed) == (8, 0, 0)
        assert embedder.calls == [4, 4]  # batches of cfg.embed_batch
        labels, emb = gallery.load(embedder.model_id)
    assert labels == ["Ada Lovelace"] * 5 + ["Alan Turing"] * 3
    assert emb.shape == (8, 8) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-6)
    # the stored vectors are exactly what the embedder produced for those files
    from common.image_io import read_image

    expected = embedder.embed(
        np.stack([read_image(p) for p in sorted(cfg.pre_images_dir.glob("Ada*/*.png"))])
    )
    np.testing.assert_array_equal(emb[:5], expected)

    # a fresh process: sync finds nothing to do, load reads without the model
    again = FakeEmbedder()
    with open_embedding_store(cfg) as gallery:
        summary = sync_gallery(gallery, cfg, again, progress=False)
        assert (summary.embedded, summary.unchanged) == (0, 8)
        labels2, emb2 = gallery.load(again.model_id)
    assert again.calls == []
    assert labels2 == labels
    np.testing.assert_array_equal(emb2, emb)


def test_rows_record_sha_model_identity_relpath_and_dim(cfg: Config) -> None:
    from common.fsutil import sha256_file

    with open_embedding_store(cfg) as gallery:
        sync_gallery(gallery, cfg, FakeEmbedder(), progress=False)
    stored = rows(cfg)
    first = cfg.pre_images_dir / "Ada Lovelace" / "0000.png"
    assert stored[0] == (
        sha256_file(first),
        "fake-v1",
        "Ada Lovelace",
        "Ada Lovelace/0000.png",
        8,
        32,
    )
    assert len(stored) == 8


def test_adding_one_person_embeds_only_their_crops(cfg: Config) -> None:
    with open_embedding_store(cfg) as gallery:
        sync_gallery(gallery, cfg, FakeEmbedder(), progress=False)
        enrol(cfg, "Grace Hopper", 6, seed=200)
        embedder = FakeEmbedder()
        summary = sync_gallery(gallery, cfg, embedder, names=["Grace Hopper"], progress=False)
        assert summary.embedded == 6 and summary.unchanged == 0
        assert embedder.embedded == 6
        assert gallery.identities("fake-v1") == {
            "Ada Lovelace": 5,
            "Alan Turing": 3,
            "Grace Hopper": 6,
        }


def test_removing_a_folder_or_an_identity_drops_its_embeddings(cfg: Config) -> None:
    import shutil

    with open_embedding_store(cfg) as gallery:
        sync_gallery(gallery, cfg, FakeEmbedder(), progress=False)
        shutil.rmtree(cfg.pre_images_dir / "Alan Turing")
        embedder = FakeEmbedder()
        summary = sync_gallery(gallery, cfg, embedder, progress=False)
        assert summary.removed == 3 and embedder.calls == []
        assert gallery.identities() == {"Ada Lovelace": 5}
        assert gallery.remove_identity("Ada Lovelace") == 5
        assert gallery.load("fake-v1")[0] == []
        with pytest.raises(InvalidName):
            gallery.remove_identity("../etc")


def test_sync_of_one_name_whose_folder_is_gone_removes_only_that_person(cfg: Config) -> None:
    import shutil

    with open_embedding_store(cfg) as gallery:
        sync_gallery(gallery, cfg, FakeEmbedder(), progress=False)
        shutil.rmtree(cfg.pre_images_dir / "Alan Turing")
        (cfg.pre_images_dir / "Ada Lovelace" / "0000.png").unlink()
        summary = sync_gallery(gallery, cfg, FakeEmbedder(), names=["Alan Turing"], progress=False)
        assert summary.removed == 3
        assert gallery.identities() == {"Ada Lovelace": 5}  # Ada is out of scope: untouched


def test_changed_model_id_re_embeds_and_drops_old_rows(cfg: Config) -> None:
    with open_embedding_store(cfg) as gallery:
        sync_gallery(gallery, cfg, FakeEmbedder("fake-v1"), progress=False)
        new = FakeEmbedder("fake-v2", dim=4)
        summary = sync_gallery(gallery, cfg, new, progress=False)
        assert summary.embedded == 8 and summary.other_models == 8
        assert gallery.model_ids() == ["fake-v2"]
        labels, emb = gallery.load("fake-v2", dim=4)
        assert emb.shape == (8, 4)
        old_labels, old_emb = gallery.load("fake-v1")
        assert old_labels == [] and old_emb.shape == (0, 0)


def test_changed_crop_is_re_embedded_and_renamed_crop_reuses_its_vector(cfg: Config) -> None:
    folder = cfg.pre_images_dir / "Ada Lovelace"
    with open_embedding_store(cfg) as gallery:
        sync_gallery(gallery, cfg, FakeEmbedder(), progress=False)
        write_crop(folder / "0001.png", seed=999)  # new content, same name
        (folder / "0002.png").rename(folder / "0002-renamed.png")
        embedder = FakeEmbedder()
        summary = sync_gallery(gallery, cfg, embedder, progress=False)
        assert embedder.embedded == 1  # only the changed content went through the model
        assert (summary.embedded, summary.reused, summary.removed) == (1, 1, 2)
        relpaths = [r[3] for r in rows(cfg)]
        assert "Ada Lovelace/0002-renamed.png" in relpaths
        assert "Ada Lovelace/0002.png" not in relpaths
        assert len(relpaths) == 8


def test_interrupted_sync_keeps_finished_batches_and_resumes(cfg: Config) -> None:
    enrol(cfg, "Grace Hopper", 6, seed=200)  # 14 crops: batches of 4, 4, 4, 2
    with open_embedding_store(cfg) as gallery:
        with pytest.raises(KeyboardInterrupt):
            sync_gallery(gallery, cfg, FakeEmbedder(fail_after=2), progress=False)
        assert len(gallery.load("fake-v1")[0]) == 8  # two committed batches survive
        embedder = FakeEmbedder()
        summary = sync_gallery(gallery, cfg, embedder, progress=False)
        assert embedder.calls == [4, 2] and summary.unchanged == 8
        assert len(gallery.load("fake-v1")[0]) == 14


def test_unreadable_and_wrong_size_crops_are_skipped_not_fatal(cfg: Config) -> None:
    folder = cfg.pre_images_dir / "Ada Lovelace"
    (folder / "0005.png").write_bytes(b"not a png at all")
    write_crop(folder / "0006.png", seed=7, size=100)
    (folder / ".0007.png.tmp").write_bytes(b"half-written temp file")
    (folder / "notes.txt").write_text("ignored")
    with open_embedding_store(cfg) as gallery:
        summary = sync_gallery(gallery, cfg, FakeEmbedder(), progress=False)
        assert summary.embedded == 8
        reasons = dict(summary.skipped)
        assert set(reasons) == {"Ada Lovelace/0005.png", "Ada Lovelace/0006.png"}
        assert "0005.png" in reasons["Ada Lovelace/0005.png"]
        assert "100x100, expected 160x160" in reasons["Ada Lovelace/0006.png"]
        assert "2 crops skipped" in str(summary)


def test_invalid_identity_folders_are_ignored(cfg: Config) -> None:
    write_crop(cfg.pre_images_dir / ".hidden" / "0000.png", seed=1)
    write_crop(cfg.pre_images_dir / " padded" / "0000.png", seed=2)
    (cfg.pre_images_dir / "stray.png").write_bytes(b"")
    with open_embedding_store(cfg) as gallery:
        sync_gallery(gallery, cfg, FakeEmbedder(), progress=False)
        assert set(gallery.identities()) == {"Ada Lovelace", "Alan Turing"}


def test_empty_or_missing_pre_images_gives_an_empty_gallery(workspace: Config) -> None:
    with open_embedding_store(workspace) as store:
        labels, emb = load_gallery(store, workspace, FakeEmbedder(dim=8), progress=False)
    assert labels == [] and emb.shape == (0, 8)
    assert match_embeddings(np.ones((1, 8)), emb, labels, 1.0)[0].identity == "Unknown"


def test_load_gallery_then_match_finds_the_person(cfg: Config) -> None:
    embedder = FakeEmbedder()
    with open_embedding_store(cfg) as store:
        labels, emb = load_gallery(store, cfg, embedder, progress=False)
    from common.image_io import read_image

    probe = embedder.embed(read_image(cfg.pre_images_dir / "Alan Turing" / "0001.png")[None])
    match = match_embeddings(probe, emb, labels, threshold=0.1)[0]
    assert match.identity == "Alan Turing" and match.distance == pytest.approx(0.0, abs=1e-5)


def test_locked_database_gives_a_clear_error_and_loses_nothing(cfg: Config) -> None:
    with open_embedding_store(cfg) as gallery:
        sync_gallery(gallery, cfg, FakeEmbedder(), progress=False)
    enrol(cfg, "Grace Hopper", 2, seed=200)
    holder = sqlite3.connect(cfg.gallery_path)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process is writing
        with open_embedding_store(cfg.replace(db_timeout_seconds=0.2)) as gallery:
            with pytest.raises(GalleryError, match="locked by another process"):
                sync_gallery(gallery, cfg, FakeEmbedder(), progress=False)
            assert len(gallery.load("fake-v1")[0]) == 8  # readers still see the data
    finally:
        holder.rollback()
        holder.close()
    assert len(rows(cfg)) == 8


def test_a_file_that_is_not_a_database_is_refused_and_kept(workspace: Config) -> None:
    workspace.gallery_path.write_bytes(b"this is not SQLite" * 100)
    with pytest.raises(GalleryError, match="not a usable gallery database"):
        open_embedding_store(workspace)
    assert workspace.gallery_path.read_bytes() == b"this is not SQLite" * 100


def test_corrupt_vector_is_reported_by_load_and_repaired_by_sync(cfg: Config) -> None:
    with open_embedding_store(cfg) as gallery:
        sync_gallery(gallery, cfg, FakeEmbedder(), progress=False)
    with sqlite3.connect(cfg.gallery_path) as conn:
        conn.execute(
            "UPDATE embeddings SET vector = ? WHERE relpath = ?", (b"xx", "Alan Turing/0000.png")
        )
    with open_embedding_store(cfg) as gallery:
        with pytest.raises(GalleryError, match="Alan Turing/0000.png"):
            gallery.load("fake-v1")
        embedder = FakeEmbedder()
        sync_gallery(gallery, cfg, embedder, progress=False)
        assert embedder.calls == [1]
        assert gallery.load("fake-v1")[1].shape == (8, 8)


def test_newer_schema_is_refused(workspace: Config) -> None:
    with sqlite3.connect(workspace.gallery_path) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(GalleryError, match="newer"):
        open_embedding_store(workspace)


def test_summary_text() -> None:
    summary = SyncSummary("m", embedded=2, reused=1, unchanged=3, removed=4, other_models=5)
    assert str(summary) == (
        "gallery m: 2 embedded, 1 reused, 3 unchanged, 4 removed, 5 of other models dropped"
    )
    summary.vanished = 2  # crops deleted (a person removed) while the sync embedded them
    assert str(summary).endswith(", 2 removed or changed meanwhile (not stored)")


@pytest.mark.weights
@pytest.mark.sample
def test_real_embedder_gallery_recognises_a_held_out_photo(
    workspace: Config, embedder, detector, sample_dir: Path
) -> None:
    """Enrol two sample people from two train photos each; a val photo finds the right one."""
    from common.image_io import encode_png, read_image
    from preprocess.pipeline import crop_largest_face

    people = ("elton_john", "madonna")
    for person in people:
        for k, photo in enumerate(sorted((sample_dir / "train" / person).glob("*.jpg"))[:2]):
            crop, _ = crop_largest_face(read_image(photo), detector, workspace)
            out = workspace.pre_images_dir / person / f"{k:04d}.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(encode_png(crop))
    with open_embedding_store(workspace) as store:
        labels, emb = load_gallery(store, workspace, embedder, progress=False)
    assert labels == ["elton_john"] * 2 + ["madonna"] * 2
    with open_embedding_store(workspace) as gallery:
        assert gallery.model_ids() == [embedder.model_id]
    for person in people:
        photo = sorted((sample_dir / "val" / person).glob("*.jpg"))[0]
        crop, _ = crop_largest_face(read_image(photo), detector, workspace)
        match = match_embeddings(embedder.embed(crop[None]), emb, labels, workspace.threshold)[0]
        assert match.identity == person and match.known


# --------------------------------------------------------------------------- load_identity
def test_load_identity_gives_one_persons_relpaths_and_vectors(cfg: Config) -> None:
    with open_embedding_store(cfg) as gallery:
        sync_gallery(gallery, cfg, FakeEmbedder(), progress=False)
        labels, everyone = gallery.load("fake-v1")
        relpaths, vectors = gallery.load_identity("fake-v1", "Alan Turing", dim=8)
        assert relpaths == [f"Alan Turing/{i:04d}.png" for i in range(3)]
        np.testing.assert_array_equal(vectors, everyone[[i for i, n in enumerate(labels)
                                                        if n == "Alan Turing"]])  # fmt: skip
        assert vectors.dtype == np.float32
        assert gallery.load_identity("fake-v2", "Alan Turing")[0] == []  # another model
        nobody, empty = gallery.load_identity("fake-v1", "Grace Hopper", dim=8)
        assert nobody == [] and empty.shape == (0, 8)
        with pytest.raises(InvalidName):
            gallery.load_identity("fake-v1", "../Alan Turing")
        with pytest.raises(GalleryError, match="expected 4"):
            gallery.load_identity("fake-v1", "Alan Turing", dim=4)


def test_load_identity_reports_a_corrupt_vector(cfg: Config) -> None:
    with open_embedding_store(cfg) as gallery:
        sync_gallery(gallery, cfg, FakeEmbedder(), progress=False)
    with sqlite3.connect(cfg.gallery_path) as conn:
        conn.execute(
            "UPDATE embeddings SET vector = ? WHERE relpath = ?", (b"xx", "Alan Turing/0001.png")
        )
    with open_embedding_store(cfg) as gallery:
        with pytest.raises(GalleryError, match="Alan Turing/0001.png"):
            gallery.load_identity("fake-v1", "Alan Turing")
        assert len(gallery.load_identity("fake-v1", "Ada Lovelace")[0]) == 5


# --------------------------------------------------------------------------- watching
class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_change_token_changes_only_for_other_connections_commits(cfg: Config) -> None:
    with open_embedding_store(cfg) as watcher, open_embedding_store(cfg) as scanner:
        first = watcher.change_token()
        assert watcher.change_token() == first
        sync_gallery(watcher, cfg, FakeEmbedder(), progress=False)  # its own writes do not count
        assert watcher.change_token() == first
        scanner.remove_identity("Alan Turing")  # another connection commits
        assert watcher.change_token() != first


def test_watcher_reloads_only_after_a_change_and_at_most_every_interval(cfg: Config) -> None:
    with open_embedding_store(cfg) as gallery:
        sync_gallery(gallery, cfg, FakeEmbedder(), progress=False)
    clock = FakeClock()
    with GalleryWatcher(
        open_embedding_store(cfg), "fake-v1", dim=8, interval=2.0, clock=clock
    ) as watch:
        clock.now += 5.0
        assert watch.poll() is None and watch.checks == 1  # nothing changed
        enrol(cfg, "Grace Hopper", 2, seed=200)
        with open_embedding_store(cfg) as scanner:  # the scanner, on another connection
            sync_gallery(scanner, cfg, FakeEmbedder(), names=["Grace Hopper"], progress=False)
        clock.now += 1.0
        assert watch.poll() is None and watch.checks == 1  # not due yet: the file is not read
        clock.now += 1.0
        labels, vectors = watch.poll()
        assert labels == ["Ada Lovelace"] * 5 + ["Alan Turing"] * 3 + ["Grace Hopper"] * 2
        assert vectors.shape == (10, 8) and watch.reloads == 1
        clock.now += 2.0
        assert watch.poll() is None and watch.checks == 3  # loaded once per change
        with open_embedding_store(cfg) as remover:
            remover.remove_identity("Ada Lovelace")
        clock.now += 2.0
        assert watch.poll()[0] == ["Alan Turing"] * 3 + ["Grace Hopper"] * 2


def test_watcher_reloads_nothing_when_it_loads_for_another_model(cfg: Config, caplog) -> None:
    with open_embedding_store(cfg) as gallery:
        sync_gallery(gallery, cfg, FakeEmbedder(), progress=False)
    with GalleryWatcher(open_embedding_store(cfg), "fake-v1", dim=8, interval=0.0) as watch:
        with open_embedding_store(cfg) as other:
            sync_gallery(
                other, cfg, FakeEmbedder("fake-v2", dim=4), progress=False
            )  # model switched
        labels, vectors = watch.poll()
        assert labels == [] and vectors.shape == (0, 8)
    assert "no embeddings for model fake-v1 any more (it has fake-v2)" in caplog.text


def test_watcher_retries_a_failed_reload_and_keeps_going(cfg: Config, monkeypatch, caplog) -> None:
    with open_embedding_store(cfg) as gallery:
        sync_gallery(gallery, cfg, FakeEmbedder(), progress=False)
    with GalleryWatcher(open_embedding_store(cfg), "fake-v1", interval=0.0) as watch:
        with open_embedding_store(cfg) as other:
            other.remove_identity("Alan Turing")

        def broken(self, model_id, dim=None):
            raise GalleryError(f"{self.path}: cannot read the gallery: disk I/O error")

        monkeypatch.setattr(SQLiteEmbeddingStore, "load", broken)
        assert watch.poll() is None and watch.poll() is None
        assert caplog.text.count("was not reloaded") == 1  # warned once, not at every check
        monkeypatch.undo()
        assert watch.poll()[0] == ["Ada Lovelace"] * 5  # the change is not forgotten
        assert watch.poll() is None


def test_watcher_follows_a_gallery_moved_away_and_rebuilt(cfg: Config, caplog) -> None:
    caplog.set_level(logging.INFO, logger="store.sqlite_embeddings")
    with open_embedding_store(cfg) as gallery:
        sync_gallery(gallery, cfg, FakeEmbedder(), progress=False)
    with GalleryWatcher(open_embedding_store(cfg), "fake-v1", interval=0.0) as watch:
        aside = cfg.gallery_path.with_name("gallery-old.sqlite")
        cfg.gallery_path.rename(aside)
        for suffix in ("-wal", "-shm"):
            wal = Path(f"{cfg.gallery_path}{suffix}")
            if wal.exists():
                wal.rename(Path(f"{aside}{suffix}"))
        assert watch.poll() is None
        assert "gallery.sqlite is missing" in caplog.text
        shutil.rmtree(cfg.pre_images_dir / "Ada Lovelace")
        with open_embedding_store(cfg) as rebuilt:  # a new file, rebuilt from pre_images/
            sync_gallery(rebuilt, cfg, FakeEmbedder(), progress=False)
        assert watch.poll()[0] == ["Alan Turing"] * 3
        assert "replaced by a new file" in caplog.text


def test_watcher_survives_an_unusable_replacement_and_the_original_coming_back(
    cfg: Config, caplog
) -> None:
    """A replacement that is not a gallery cannot be opened: the watcher keeps its connection
    and warns; when the original file is moved back, changes to it are picked up again."""
    with open_embedding_store(cfg) as gallery:
        sync_gallery(gallery, cfg, FakeEmbedder(), progress=False)
    with GalleryWatcher(open_embedding_store(cfg), "fake-v1", interval=0.0) as watch:
        aside = cfg.gallery_path.with_name("gallery-aside.sqlite")
        cfg.gallery_path.rename(aside)
        cfg.gallery_path.write_bytes(b"not a database at all" * 100)
        assert watch.poll() is None
        assert "was not reloaded" in caplog.text
        cfg.gallery_path.unlink()
        aside.rename(cfg.gallery_path)
        with open_embedding_store(cfg) as other:
            other.remove_identity("Alan Turing")
        assert watch.poll()[0] == ["Ada Lovelace"] * 5


def test_symlinked_crops_and_identity_folders_are_never_read(cfg: Config, tmp_path: Path) -> None:
    """Crops are read from pre_images/ only: a crop file or a person folder that is a link
    (to anywhere) is skipped, so the gallery cannot be fed from outside the workspace."""
    outside = tmp_path / "outside"
    outside.mkdir()
    ada = cfg.pre_images_dir / "Ada Lovelace"
    shutil.copy(next(ada.glob("*.png")), outside / "x.png")
    (ada / "linked.png").symlink_to(outside / "x.png")
    (cfg.pre_images_dir / "Eve").symlink_to(outside, target_is_directory=True)
    with open_embedding_store(cfg) as gallery:
        sync_gallery(gallery, cfg, FakeEmbedder(), progress=False)
        relpaths, _ = gallery.load_identity("fake-v1", "Ada Lovelace")
        assert "Ada Lovelace/linked.png" not in relpaths
        assert "Eve" not in gallery.identities()
