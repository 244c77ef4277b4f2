"""The preprocessed-image cache: same pixels as the uncached path, reuse,
invalidation, recovery from broken builds, failures, parallel builds."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fracture.cache import ImageCache, cache_info, clear_cache, compute_cache_key, default_cache_root
from fracture.cache import images as cache_images
from fracture.data import imageio
from fracture.errors import CacheError
from fracture.preprocess.pipeline import Pipeline

SIZE = 32
SPEC = [{"op": "clahe", "clip_limit": 2.0, "tile_grid": 4}, {"op": "resize", "size": SIZE, "mode": "letterbox"}]


def write_png(path: Path, seed: int, shape: tuple[int, int]) -> Path:
    rng = np.random.default_rng(seed)
    # smooth gradient plus noise, so CLAHE and resizing have work to do
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    img = (xx * 3 + yy * 2 + rng.integers(0, 40, shape)) % 256
    Image.fromarray(img.astype(np.uint8)).save(path)
    return path


@pytest.fixture()
def image_paths(tmp_path: Path) -> list[str]:
    folder = tmp_path / "imgs"
    folder.mkdir()
    shapes = [(40, 30), (25, 50), (64, 64), (33, 47), (50, 20), (36, 36)]
    return [str(write_png(folder / f"img{i}.png", i, s)) for i, s in enumerate(shapes)]


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def uncached(path: str, spec=SPEC) -> np.ndarray:
    out = Pipeline.from_spec(spec)(imageio.load_image(path))
    return out[:, :, None] if out.ndim == 2 else out


@pytest.fixture()
def decode_counter(monkeypatch) -> list[str]:
    """Records every decoded path (in-process builds only)."""
    calls: list[str] = []
    real = imageio.load_image

    def counting(source, **kwargs):
        calls.append(str(source))
        return real(source, **kwargs)

    monkeypatch.setattr(imageio, "load_image", counting)
    return calls


def test_pixels_equal_the_uncached_path(image_paths, root):
    seen = []
    cache = ImageCache.open_or_build(image_paths, SPEC, root, workers=0,
                                     progress=lambda d, t: seen.append((d, t)))
    assert cache.built and len(cache) == len(image_paths)
    assert cache.images.shape == (len(image_paths), SIZE, SIZE, 1)
    assert cache.images.dtype == np.uint8 and not cache.images.flags.writeable
    for i, path in enumerate(image_paths):
        np.testing.assert_array_equal(cache[i], uncached(path))
        assert cache.index_of(path) == i
    batch = cache.get_batch([4, 0, 2, 0])
    np.testing.assert_array_equal(batch, np.stack([uncached(image_paths[i]) for i in (4, 0, 2, 0)]))
    assert cache.valid_mask.all() and cache.failures == []
    assert cache.directory == root / cache.key
    assert cache.nbytes == len(image_paths) * SIZE * SIZE
    assert cache.spec == Pipeline.from_spec(SPEC).to_spec()
    assert seen[-1] == (len(image_paths), len(image_paths))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    with pytest.raises(CacheError, match="not in the image cache"):
        cache.index_of("/nowhere/else.png")


def test_multichannel_pipeline_is_cached_with_its_channels(image_paths, root):
    spec = [{"op": "canny_channel"}, {"op": "resize", "size": SIZE, "mode": "letterbox"}]
    cache = ImageCache.open_or_build(image_paths, spec, root, workers=0)
    channels = Pipeline.from_spec(spec).out_channels
    assert channels > 1 and cache.images.shape == (len(image_paths), SIZE, SIZE, channels)
    for i, path in enumerate(image_paths):
        np.testing.assert_array_equal(cache[i], uncached(path, spec))


def test_second_open_is_a_hit_without_decoding(image_paths, root, decode_counter):
    first = ImageCache.open_or_build(image_paths, SPEC, root, workers=0)
    assert sorted(decode_counter) == sorted(image_paths)
    decode_counter.clear()
    second = ImageCache.open_or_build(image_paths, SPEC, root, workers=0)
    assert decode_counter == []
    assert not second.built and second.key == first.key
    np.testing.assert_array_equal(np.asarray(second.images), np.asarray(first.images))
    assert compute_cache_key(image_paths, SPEC) == first.key


def test_changed_file_spec_or_list_gives_a_new_key(image_paths, root):
    base = ImageCache.open_or_build(image_paths, SPEC, root, workers=0)
    # a rewritten file (new content, new size/mtime)
    write_png(Path(image_paths[2]), seed=99, shape=(45, 45))
    st = os.stat(image_paths[2])
    os.utime(image_paths[2], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    changed = ImageCache.open_or_build(image_paths, SPEC, root, workers=0)
    assert changed.built and changed.key != base.key
    np.testing.assert_array_equal(changed[2], uncached(image_paths[2]))
    # a different spec
    other_spec = [{"op": "resize", "size": SIZE, "mode": "stretch"}]
    assert ImageCache.open_or_build(image_paths, other_spec, root, workers=0).key not in {
        base.key, changed.key}
    # a different list: one path fewer, or another order
    fewer = ImageCache.open_or_build(image_paths[:-1], SPEC, root, workers=0)
    reordered = ImageCache.open_or_build(image_paths[::-1], SPEC, root, workers=0)
    assert len({base.key, changed.key, fewer.key, reordered.key}) == 4
    np.testing.assert_array_equal(reordered[0], changed[len(image_paths) - 1])


def test_build_interrupted_by_progress_callback_leaves_nothing_and_recovers(image_paths, root):
    def explode(done, total):
        if done > 0:
            raise KeyboardInterrupt("stop")

    with pytest.raises(KeyboardInterrupt):
        ImageCache.open_or_build(image_paths, SPEC, root, workers=0, progress=explode)
    assert list(root.iterdir()) == []  # neither a store nor a temporary directory
    cache = ImageCache.open_or_build(image_paths, SPEC, root, workers=0)
    assert cache.built
    np.testing.assert_array_equal(cache[5], uncached(image_paths[5]))


def test_concurrent_build_that_finishes_first_wins(image_paths, root):
    """Another process publishing the same store mid-build: ours is dropped, theirs used."""
    rival: list[ImageCache] = []

    def rival_finishes_first(done, total):
        if done == total and not rival:
            rival.append(ImageCache.open_or_build(image_paths, SPEC, root, workers=0))

    cache = ImageCache.open_or_build(image_paths, SPEC, root, workers=0, progress=rival_finishes_first)
    assert rival[0].built and not cache.built and cache.directory == rival[0].directory
    assert cache.built_at == rival[0].built_at
    assert [p.name for p in root.iterdir()] == [cache.key]  # our temporary build is gone
    np.testing.assert_array_equal(cache[1], uncached(image_paths[1]))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _junk_build(root: Path, key: str, pid: int) -> Path:
    """A temporary directory as a killed build leaves it: data and an index."""
    junk = root / f"{key}.tmp-{pid}-deadbeef"
    junk.mkdir(parents=True)
    np.save(junk / cache_images.ARRAY_NAME, np.full((6, SIZE, SIZE, 1), 7, np.uint8))
    (junk / cache_images.INDEX_NAME).write_text('{"key": "%s"}' % key)
    return junk


def test_leftover_build_directories_are_never_read_and_are_cleaned(image_paths, root):
    key = compute_cache_key(image_paths, SPEC)
    killed = _junk_build(root, key, _dead_pid())
    stalled = _junk_build(root, "f" * 64, os.getpid())  # live pid, but no progress for hours
    old = time.time() - 2 * cache_images.STALE_BUILD_SECONDS
    os.utime(stalled, (old, old))
    running = _junk_build(root, "e" * 64, os.getpid())  # a build in progress elsewhere
    statuses = {row["directory"]: row["status"] for row in cache_info(root)}
    assert statuses == {str(killed): "abandoned", str(stalled): "abandoned", str(running): "building"}

    cache = ImageCache.open_or_build(image_paths, SPEC, root, workers=0)
    assert cache.built
    for i, path in enumerate(image_paths):
        np.testing.assert_array_equal(cache[i], uncached(path))
    assert not killed.exists() and not stalled.exists() and running.exists()


@pytest.mark.parametrize("damage", ["garbage_index", "missing_index", "wrong_key", "short_array"])
def test_damaged_store_is_rebuilt(image_paths, root, damage):
    first = ImageCache.open_or_build(image_paths, SPEC, root, workers=0)
    index_path = first.directory / cache_images.INDEX_NAME
    array_path = first.directory / cache_images.ARRAY_NAME
    del first
    if damage == "garbage_index":
        index_path.write_text("{not json")
    elif damage == "missing_index":
        index_path.unlink()
    elif damage == "wrong_key":
        index_path.write_text(index_path.read_text().replace('"key": "', '"key": "0'))
    else:
        data = array_path.read_bytes()
        array_path.write_bytes(data[: len(data) // 2])
    cache = ImageCache.open_or_build(image_paths, SPEC, root, workers=0)
    assert cache.built
    for i, path in enumerate(image_paths):
        np.testing.assert_array_equal(cache[i], uncached(path))
    assert [p.name for p in root.iterdir()] == [cache.key]


BAD_FILES = {"empty.png": "empty", "text.png": "not_an_image", "cut.png": "truncated",
             "missing.png": "unreadable"}


def _with_bad_files(image_paths: list[str]) -> tuple[list[str], dict[int, str]]:
    """The good paths with four bad ones mixed in, and {index: expected reason}."""
    folder = Path(image_paths[0]).parent
    good = Path(image_paths[0]).read_bytes()
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.png").write_text("not an image")
    (folder / "cut.png").write_bytes(good[: len(good) // 2])
    paths = list(image_paths)
    for pos, name in zip((1, 3, 5, 9), BAD_FILES):
        paths.insert(pos, str(folder / name))
    expected = {i: BAD_FILES[Path(p).name] for i, p in enumerate(paths) if Path(p).name in BAD_FILES}
    return paths, expected


def test_failures_are_recorded_zeroed_and_masked(image_paths, root):
    paths, expected = _with_bad_files(image_paths)
    cache = ImageCache.open_or_build(paths, SPEC, root, workers=0)
    assert {f.index: f.reason for f in cache.failures} == expected
    for failure in cache.failures:
        assert failure.path == paths[failure.index] and failure.path in failure.message
    assert [i for i in range(len(paths)) if not cache.valid_mask[i]] == sorted(expected)
    for i, path in enumerate(paths):
        if i in expected:
            assert not cache[i].any()
        else:
            np.testing.assert_array_equal(cache[i], uncached(path))
    reopened = ImageCache.open_or_build(paths, SPEC, root, workers=0)
    assert not reopened.built and reopened.failures == cache.failures
    np.testing.assert_array_equal(reopened.valid_mask, cache.valid_mask)


def test_parallel_build_gives_the_same_bytes(image_paths, tmp_path):
    paths, _ = _with_bad_files(image_paths)
    serial = ImageCache.open_or_build(paths, SPEC, tmp_path / "serial", workers=0)
    parallel = ImageCache.open_or_build(paths, SPEC, tmp_path / "parallel", workers=2)
    assert parallel.built and parallel.key == serial.key
    assert (parallel.directory / cache_images.ARRAY_NAME).read_bytes() == (
        serial.directory / cache_images.ARRAY_NAME).read_bytes()
    assert parallel.failures == serial.failures


def test_pickles_as_a_reference_to_its_directory(image_paths, root):
    cache = ImageCache.open_or_build(image_paths, SPEC, root, workers=0)
    blob = pickle.dumps(cache)
    assert len(blob) < cache.nbytes  # the pixels are mapped again, not copied
    clone = pickle.loads(blob)
    np.testing.assert_array_equal(clone.get_batch(range(len(clone))), cache.get_batch(range(len(cache))))


def test_bad_requests_raise_typed_errors(image_paths, root):
    with pytest.raises(CacheError, match="last step must be"):
        ImageCache.open_or_build(image_paths, [{"op": "clahe"}], root, workers=0)
    with pytest.raises(CacheError, match="no image paths"):
        ImageCache.open_or_build([], SPEC, root, workers=0)
    cache = ImageCache.open_or_build(image_paths, SPEC, root, workers=0)
    with pytest.raises(IndexError):
        cache.get_batch([0, len(image_paths)])


def test_info_and_clear(image_paths, root):
    a = ImageCache.open_or_build(image_paths, SPEC, root, workers=0)
    b = ImageCache.open_or_build(image_paths[:3], SPEC, root, workers=0)
    (root / "notes.txt").write_text("not ours")
    (root / "my-folder").mkdir()
    rows = {row["key"]: row for row in cache_info(root)}
    assert set(rows) == {a.key, b.key}
    assert rows[b.key]["status"] == "ok" and rows[b.key]["images"] == 3
    assert rows[a.key]["shape"] == [SIZE, SIZE, 1] and rows[a.key]["disk_bytes"] > 0
    old = time.time() - 3 * 86400
    os.utime(a.directory, (old, old))
    assert clear_cache(root, older_than_days=1) == [a.directory]
    assert [row["key"] for row in cache_info(root)] == [b.key]
    assert clear_cache(root) == [b.directory]
    assert sorted(p.name for p in root.iterdir()) == ["my-folder", "notes.txt"]


def test_cli_info_and_clear(image_paths, tmp_path, capsys):
    from fracture.cli import main

    cache = ImageCache.open_or_build(image_paths, SPEC, tmp_path / "cachedir" / "images", workers=0)
    assert main(["cache", "info", "--cache-dir", str(tmp_path / "cachedir")]) == 0
    out = capsys.readouterr().out
    assert cache.key[:12] in out and "6 images 32x32x1" in out and "clahe > resize" in out
    assert main(["cache", "clear", "--cache-dir", str(tmp_path / "cachedir")]) == 0
    assert "removed 1 " in capsys.readouterr().out
    assert not cache.directory.exists()


def test_cli_build_warms_the_store_training_opens(tmp_path, capsys, decode_counter):
    from fracture.cli import main
    from fracture.data import open_dataset

    data = tmp_path / "ds"
    for label in ("fractured", "normal"):
        (data / label).mkdir(parents=True)
        for i in range(4):
            write_png(data / label / f"{label}{i}.png", i, (30 + i, 40))
    (data / "normal" / "broken.png").write_bytes(b"")
    args = ["cache", "build", "--data", str(data), "--size", str(SIZE), "--preprocess", "clahe",
            "--cache-dir", str(tmp_path / "cachedir"), "--workers", "0"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "built in" in out and "1 images could not be loaded" in out and "[empty]" in out
    decode_counter.clear()
    # what the trainer does: the whole manifest, the preset plus the resize
    frame = open_dataset(data, seed=0).frame
    spec = Pipeline.from_spec("clahe").with_resize(SIZE, "letterbox").to_spec()
    cache = ImageCache.open_or_build(frame["path"].tolist(), spec, tmp_path / "cachedir" / "images")
    assert not cache.built and decode_counter == [] and len(cache) == 9
    assert main(args) == 0 and "already cached" in capsys.readouterr().out


def test_default_root_follows_the_cache_dir_setting(monkeypatch, tmp_path):
    monkeypatch.setenv("FRACTURE_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_root() == tmp_path / "c" / "images"


@pytest.mark.integration
def test_real_radiographs_match_the_uncached_path(fracatlas_root, root):
    paths = sorted(str(p) for p in (fracatlas_root / "images" / "Fractured").glob("*.jpg"))[:8]
    spec = [{"op": "clahe"}, {"op": "resize", "size": 64, "mode": "letterbox"}]
    cache = ImageCache.open_or_build(paths, spec, root, workers=2)
    assert cache.valid_mask.all()
    for i, path in enumerate(paths):
        np.testing.assert_array_equal(cache[i], uncached(path, spec))


def test_pixel_digests_find_a_changed_image(image_paths, root, caplog):
    """One image's bytes changed in place (same size): verify() names it; an open that
    samples it rebuilds the store with a warning."""
    cache = ImageCache.open_or_build(image_paths, SPEC, root, workers=0)
    assert cache.verify() == []
    array_path = cache.directory / cache_images.ARRAY_NAME
    header_len = array_path.stat().st_size - cache.nbytes
    slot = SIZE * SIZE
    with open(array_path, "r+b") as fh:
        fh.seek(header_len + 3 * slot + 5)
        fh.write(bytes([255 - int(cache.images[3].reshape(-1)[5])]))
    assert cache.verify() == [3]
    assert len(image_paths) < cache_images.VERIFY_SAMPLE  # so an open checks every image
    rebuilt = ImageCache.open_or_build(image_paths, SPEC, root, workers=0)
    assert rebuilt.built and rebuilt.verify() == []
    assert "image 3 do not match" in caplog.text
    for i, path in enumerate(image_paths):
        np.testing.assert_array_equal(rebuilt[i], uncached(path))
