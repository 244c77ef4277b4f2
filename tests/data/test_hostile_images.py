"""Hostile images and uploads: bounded memory, truncated JPEGs, special files, many frames, no tracebacks.

Every file is made here (tiny where possible); memory itself is measured by
``python -m fracture.bench.memory``, never asserted.
"""
from __future__ import annotations

import io
import sys
import os
import threading
import tomllib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

import fracture.data.imageio as imageio
from fracture.data.imageio import (
    MAX_PIXELS,
    decode_image,
    load_image,
    read_image_header,
    reduced_size,
    rescale_to_uint8,
)
from fracture.errors import ConfigError, ImageLoadError

REPO_ROOT = Path(__file__).resolve().parents[2]


def _png(image: Image.Image, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **params)
    return buffer.getvalue()


def _jpeg(array: np.ndarray, **params) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", **params)
    return buffer.getvalue()


def _radiograph_like(height: int = 240, width: int = 200, channels: int = 0) -> np.ndarray:
    """Smooth structure with texture, like an X-ray (no flat 128 anywhere)."""
    yy, xx = np.mgrid[0:height, 0:width]
    gray = (90 + 60 * np.sin(xx / 17.0) * np.cos(yy / 23.0) + (xx + yy) % 7).astype(np.uint8)
    if channels:
        return np.stack([gray, np.roll(gray, 3, axis=0), gray[::-1]], axis=-1)
    return gray


def _cut_with_eoi(data: bytes, keep: float) -> bytes:
    return data[: int(len(data) * keep)] + b"\xff\xd9"


# ============================================================== 1. bounded memory


def test_reduced_size_is_the_smallest_whole_factor_within_budget():
    assert reduced_size(300, 200, None) == (300, 200, 1)
    assert reduced_size(300, 200, 60_000) == (300, 200, 1)
    assert reduced_size(300, 200, 10_000) == (100, 67, 3)
    width, height, factor = reduced_size(8000, 7999, 8_000_000)
    assert factor == 3 and width * height <= 8_000_000
    for w, h, budget in [(7, 3, 2), (1000, 1, 10), (4097, 4097, 4_000_000)]:
        kept_w, kept_h, f = reduced_size(w, h, budget)
        assert kept_w * kept_h <= budget
        assert f == 1 or (-(-w // (f - 1))) * (-(-h // (f - 1))) > budget  # one less would not fit


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_pixel_budget_reduces_while_decoding_and_says_so(fmt):
    pixels = _radiograph_like(300, 400)
    data = _png(Image.fromarray(pixels)) if fmt == "PNG" else _jpeg(pixels, quality=95)
    decoded = decode_image(data, name=f"big.{fmt.lower()}", pixel_budget=10_000)
    assert decoded.image.shape == (75, 100) and decoded.image.dtype == np.uint8
    assert (decoded.width, decoded.height, decoded.reduction) == (400, 300, 4)
    assert len(decoded.notes) == 1 and "reduced by 4" in decoded.notes[0] and "big." in decoded.notes[0]
    expected = np.asarray(Image.fromarray(pixels).reduce(4), dtype=float)
    assert np.abs(decoded.image.astype(float) - expected).mean() < 3  # the same picture, smaller
    full = decode_image(data, name="big", pixel_budget=None)
    assert full.image.shape == (300, 400) and full.notes == () and full.reduction == 1


def test_budget_follows_exif_rotation():
    image = Image.fromarray(_radiograph_like(100, 300))
    exif = image.getexif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif)
    decoded = decode_image(buffer.getvalue(), name="rot.jpg", pixel_budget=3_000)
    assert decoded.image.shape == (75, 25)  # rotated: 300 rows x 100 columns, reduced by 4


def test_16bit_image_is_scaled_by_lookup_in_bands(monkeypatch):
    monkeypatch.setattr(imageio, "_CHUNK_VALUES", 97)  # many bands on a small image
    values = (np.arange(120 * 90).reshape(120, 90) * 5 + 1000).astype(np.uint16)
    out = load_image(_png(Image.fromarray(values)), name="deep.png")
    reference = np.rint((values.astype(float) - values.min()) * 255.0 / (values.max() - values.min()))
    np.testing.assert_array_equal(out, reference.astype(np.uint8))
    reduced = decode_image(_png(Image.fromarray(values)), name="deep.png", pixel_budget=3_000)
    assert reduced.image.shape == (60, 45) and reduced.image.min() < 10 and reduced.image.max() > 245


def test_1bit_image_is_0_or_255_and_reduces():
    bits = np.zeros((64, 80), bool)
    bits[::4] = True
    data = _png(Image.fromarray(bits))
    out = load_image(data, name="bits.png")
    assert set(np.unique(out).tolist()) == {0, 255}
    np.testing.assert_array_equal(out == 255, bits)
    reduced = decode_image(data, name="bits.png", pixel_budget=400)
    assert reduced.image.shape == (16, 20) and 0 < reduced.image.mean() < 255


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int32, np.float32, np.float64])
def test_rescale_in_bands_equals_the_whole_array_formula(monkeypatch, dtype):
    rng = np.random.default_rng(3)
    values = rng.integers(-300 if np.issubdtype(dtype, np.signedinteger) else 0, 250, (37, 23)).astype(dtype)
    if np.issubdtype(dtype, np.floating):
        values[0, 0], values[5, 5] = np.nan, -np.inf
    finite = np.isfinite(values.astype(float))
    low, high = values[finite].astype(float).min(), values[finite].astype(float).max()
    expected = np.clip(np.rint((np.where(finite, values.astype(float), low) - low) * (255.0 / (high - low))), 0, 255)
    monkeypatch.setattr(imageio, "_CHUNK_VALUES", 50)
    np.testing.assert_array_equal(rescale_to_uint8(values), expected.astype(np.uint8))
    assert rescale_to_uint8(np.float64(3.0)).shape == ()


@pytest.mark.parametrize("mode", ["L", "RGB", "1", "P", "PT", "RGBA", "LA", "CMYK"])
def test_band_conversion_equals_whole_image_conversion(monkeypatch, mode):
    rgb = _radiograph_like(50, 70, channels=3)
    base = Image.fromarray(rgb)
    if mode == "PT":
        image = base.convert("P")
        image.info["transparency"] = 0
    elif mode in ("RGBA", "LA"):
        image = base.convert(mode)
        image.putalpha(Image.fromarray((np.arange(50 * 70).reshape(50, 70) % 256).astype(np.uint8)))
    else:
        image = base.convert(mode)
    data = _png(image, transparency=0) if mode == "PT" else (
        _png(image) if mode != "CMYK" else _tiff(image))
    whole = load_image(data, name="x")
    monkeypatch.setattr(imageio, "_CHUNK_VALUES", 64)  # bands of one row
    np.testing.assert_array_equal(load_image(data, name="x"), whole)


def _tiff(image: Image.Image, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "TIFF", **params)
    return buffer.getvalue()


# ---------------------------------------------------------------- uploads


class _Upload:
    """Streamlit's UploadedFile, counting reads."""

    reads = 0

    def __init__(self, name: str, data: bytes) -> None:
        self.name, self._data = name, data

    def getvalue(self) -> bytes:
        _Upload.reads += 1
        return self._data


def test_files_past_the_upload_limit_are_reported_once_and_never_read():
    from fracture.ui.uploads import read_uploads

    good = _png(Image.fromarray(_radiograph_like(20, 20)))
    _Upload.reads = 0
    files = [_Upload(f"f{i}.png", good) for i in range(7)]
    loaded, problems = read_uploads(files, max_mb=1, max_files=3, pixel_budget=10**6, upload_pixel_budget=10**7)
    assert [item.name for item in loaded] == ["f0.png", "f1.png", "f2.png"]
    assert _Upload.reads == 3
    assert [p.reason for p in problems] == ["too_many_files"]
    assert "4 file(s)" in problems[0].message and "FRACTURE_MAX_UPLOAD_FILES" in problems[0].message


def test_upload_pixel_budget_refuses_later_files_before_decoding(monkeypatch):
    import fracture.ui.uploads as uploads

    image = _png(Image.fromarray(_radiograph_like(100, 100)))  # 10,000 pixels each
    decoded = []
    real = uploads.decode_image
    monkeypatch.setattr(uploads, "decode_image", lambda data, **kw: decoded.append(kw["name"]) or real(data, **kw))
    loaded, problems = uploads.read_uploads(
        [("a.png", image), ("b.png", image), ("c.png", image)], max_mb=1, max_files=10,
        pixel_budget=10**6, upload_pixel_budget=25_000)
    assert [item.name for item in loaded] == ["a.png", "b.png"]
    assert [(p.name, p.reason) for p in problems] == [("c.png", "over_budget")]
    assert "FRACTURE_MAX_UPLOAD_MEGAPIXELS" in problems[0].message
    assert decoded == ["a.png", "b.png"]  # c.png was judged from its header


def test_upload_images_are_kept_within_the_per_image_budget_with_a_note():
    from fracture.ui.uploads import read_uploads

    big = _png(Image.fromarray(_radiograph_like(200, 300)))
    loaded, problems = read_uploads([("big.png", big)], max_mb=1, max_files=4,
                                    pixel_budget=6_000, upload_pixel_budget=6_000)
    assert not problems
    assert loaded[0].image.shape == (50, 75) and loaded[0].image.size <= 6_000
    assert loaded[0].notes and "reduced by 4" in loaded[0].notes[0]


def test_a_tiny_1bit_bomb_upload_is_reduced_not_decoded_at_full_size():
    """A few-KB 1-bit PNG of 64 MP: kept at the per-image budget (the bench measures the memory)."""
    from fracture.ui.uploads import read_uploads

    bomb = _png(Image.new("1", (8000, 7999)), optimize=True)
    assert len(bomb) < 50_000
    loaded, problems = read_uploads([("bomb.png", bomb)], max_mb=1, max_files=4,
                                    pixel_budget=250_000, upload_pixel_budget=10**6)
    assert not problems and loaded[0].image.size <= 250_000


def test_upload_limits_come_from_the_environment(monkeypatch):
    from fracture.settings import get_settings

    monkeypatch.setenv("FRACTURE_MAX_UPLOAD_FILES", "5")
    monkeypatch.setenv("FRACTURE_MAX_IMAGE_MEGAPIXELS", "2.5")
    monkeypatch.setenv("FRACTURE_MAX_UPLOAD_MEGAPIXELS", "10")
    monkeypatch.setenv("FRACTURE_PREDICTION_CACHE_MB", "64")
    settings = get_settings()
    assert settings.max_upload_files == 5
    assert settings.max_image_pixels == 2_500_000 and settings.max_upload_pixels == 10_000_000
    assert settings.prediction_cache_mb == 64
    for name, value in [("FRACTURE_MAX_UPLOAD_FILES", "many"), ("FRACTURE_MAX_UPLOAD_FILES", "0"),
                        ("FRACTURE_MAX_IMAGE_MEGAPIXELS", "nan"), ("FRACTURE_MAX_UPLOAD_MEGAPIXELS", "inf")]:
        monkeypatch.setenv(name, value)
        with pytest.raises(ConfigError, match=name):
            get_settings(strict=True)
        monkeypatch.delenv(name)
    for name in ("FRACTURE_MAX_UPLOAD_FILES", "FRACTURE_MAX_IMAGE_MEGAPIXELS", "FRACTURE_MAX_UPLOAD_MEGAPIXELS",
                 "FRACTURE_PREDICTION_CACHE_MB"):
        monkeypatch.delenv(name, raising=False)
    defaults = get_settings()
    assert (defaults.max_upload_files, defaults.max_image_pixels, defaults.max_upload_pixels,
            defaults.prediction_cache_mb) == (64, 8_000_000, 64_000_000, 512)


# ------------------------------------------------------ prediction cache


def test_byte_budget_cache_drops_least_recently_used_by_bytes():
    from fracture.ui.bytecache import ByteBudgetCache

    cache = ByteBudgetCache(100)
    assert cache.put("a", "A", 40) and cache.put("b", "B", 40)
    assert cache.get("a") == "A"  # a is now the most recent
    assert cache.put("c", "C", 40)  # 120 > 100: b goes
    assert "b" not in cache and cache.get("a") == "A" and cache.get("c") == "C"
    assert cache.nbytes == 80 and len(cache) == 2
    assert not cache.put("huge", "H", 101) and "huge" not in cache and len(cache) == 2
    assert cache.put("a", "A2", 10) and cache.nbytes == 50 and cache.get("a") == "A2"
    cache.clear()
    assert len(cache) == 0 and cache.nbytes == 0 and cache.get("a", "none") == "none"


def test_prediction_cache_is_capped_in_bytes_and_shares_read_only_results(monkeypatch):
    from types import SimpleNamespace

    from fracture.ui import loaders

    calls = []

    class FakePredictor:
        def predict(self, images, **kwargs):
            calls.append(len(images))
            items = [SimpleNamespace(image=image, heatmap=np.zeros(image.shape, np.float32)) for image in images]
            return SimpleNamespace(images=items)

    monkeypatch.setattr(loaders, "_predictor", lambda path, signature: FakePredictor())
    monkeypatch.setenv("FRACTURE_PREDICTION_CACHE_MB", "1")  # ~1 MB
    loaders._prediction_cache.clear()
    try:
        first = np.full((200, 200), 1, np.uint8)  # 40 KB + 160 KB heatmap
        one = loaders.predict_study("ckpt", [first], ["a"], with_cam=True)
        again = loaders.predict_study("ckpt", [first.copy()], ["a"], with_cam=True)
        assert again is one and calls == [1]  # same pixels: cached
        assert first.flags.writeable and not one.images[0].image.flags.writeable
        assert not one.images[0].heatmap.flags.writeable
        for value in range(2, 8):  # 6 more results of ~200 KB each: the oldest must go
            loaders.predict_study("ckpt", [np.full((200, 200), value, np.uint8)], ["a"], with_cam=True)
        cache = loaders._prediction_cache(1024 * 1024)
        assert cache.nbytes <= 1024 * 1024 and len(cache) < 7
        loaders.predict_study("ckpt", [first], ["a"], with_cam=True)
        assert calls[-1] == 1 and len(calls) == 8  # evicted, so computed again
        huge = np.zeros((600, 600), np.uint8)  # 1.8 MB with its heatmap: never kept
        loaders.predict_study("ckpt", [huge], ["a"], with_cam=True)
        assert cache.nbytes <= 1024 * 1024
    finally:
        loaders._prediction_cache.clear()


# ===================================================== 2. truncated JPEGs


@pytest.mark.parametrize("channels", [0, 3])
@pytest.mark.parametrize("progressive", [False, True])
def test_jpeg_cut_short_with_an_end_marker_is_truncated(channels, progressive):
    data = _jpeg(_radiograph_like(240, 200, channels), quality=90, progressive=progressive)
    assert load_image(data, name="whole.jpg").shape == (240, 200)
    for keep in (0.4, 0.9):
        with pytest.raises(ImageLoadError) as info:
            load_image(_cut_with_eoi(data, keep), name="cut.jpg")
        assert info.value.reason == "truncated" and "cut.jpg" in str(info.value)
    with pytest.raises(ImageLoadError) as info:  # also when reduced while decoding (libjpeg draft)
        load_image(_cut_with_eoi(data, 0.4), name="cut.jpg", pixel_budget=3_000)
    assert info.value.reason == "truncated"
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_truly_flat_grey_jpeg_is_not_mistaken_for_a_cut_one():
    flat = np.full((64, 48), 128, np.uint8)
    np.testing.assert_array_equal(load_image(_jpeg(flat), name="flat.jpg"), flat)
    bottom = _radiograph_like(96, 64)
    bottom[-40:] = 128
    assert load_image(_jpeg(bottom, quality=95), name="bottom.jpg").shape == (96, 64)


def test_jpeg_header_larger_than_its_data_is_truncated_before_decoding(tmp_path):
    data = bytearray(_jpeg(_radiograph_like(64, 64)))
    sof = data.find(b"\xff\xc0")
    data[sof + 5:sof + 9] = (7900).to_bytes(2, "big") + (7900).to_bytes(2, "big")
    path = tmp_path / "liar.jpg"
    path.write_bytes(bytes(data))
    for call in (lambda: load_image(path), lambda: read_image_header(path)):
        with pytest.raises(ImageLoadError) as info:
            call()
        assert info.value.reason == "truncated"
        assert "7900x7900" in str(info.value) and "liar.jpg" in str(info.value)


def test_real_fracatlas_jpeg_cut_at_40_percent_with_an_end_marker(fracatlas_root):
    path = next(iter(sorted((fracatlas_root / "images" / "Fractured").glob("*.jpg"))))
    data = path.read_bytes()
    assert load_image(data, name=path.name).ndim == 2
    with pytest.raises(ImageLoadError) as info:
        load_image(_cut_with_eoi(data, 0.4), name=path.name)
    assert info.value.reason == "truncated"


# ====================================================== 3. special files


@pytest.fixture
def fifo(tmp_path):
    """A FIFO named like an image; a watchdog unblocks a reader that would hang (the test then fails)."""
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this system")
    path = tmp_path / "x.jpg"
    os.mkfifo(path)
    done = threading.Event()

    def unblock():
        while not done.wait(5):
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass

    watchdog = threading.Thread(target=unblock, daemon=True)
    watchdog.start()
    yield path
    done.set()


def test_fifo_named_jpg_is_refused_by_every_reader(fifo):
    for call in (lambda: load_image(fifo), lambda: decode_image(fifo), lambda: read_image_header(fifo)):
        with pytest.raises(ImageLoadError) as info:
            call()
        assert info.value.reason == "unreadable"
        assert "FIFO" in str(info.value) and "x.jpg" in str(info.value)


def test_symlink_to_dev_zero_is_refused(tmp_path):
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero")
    link = tmp_path / "zero.png"
    link.symlink_to("/dev/zero")
    for call in (lambda: load_image(link), lambda: read_image_header(link)):
        with pytest.raises(ImageLoadError) as info:
            call()
        assert info.value.reason == "unreadable" and "device" in str(info.value)


def test_file_over_the_byte_limit_is_too_large(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(_png(Image.fromarray(_radiograph_like(20, 20))))
    with pytest.raises(ImageLoadError) as info:
        decode_image(path, max_bytes=100)
    assert info.value.reason == "too_large"


def test_scans_report_special_files_and_never_cache_them(fifo, tmp_path):
    from fracture.data.header_cache import HeaderCache, file_stamps, scan_headers, scan_intensities

    good = tmp_path / "good.png"
    good.write_bytes(_png(Image.fromarray(_radiograph_like(20, 20))))
    paths = [str(fifo), str(good)]
    if os.path.exists("/dev/zero"):
        (tmp_path / "zero.jpg").symlink_to("/dev/zero")
        paths.append(str(tmp_path / "zero.jpg"))
    assert file_stamps([str(fifo)]) == [(-1, -1)]
    with HeaderCache(tmp_path / "cache.sqlite") as cache:
        headers, _ = scan_headers(paths, cache=cache)
        assert [r.ok for r in headers] == [False, True] + [False] * (len(paths) - 2)
        assert all(r.reason == "unreadable" for r in headers if not r.ok)
        assert len(cache) == 1  # only the regular file is cached
        intensities, _ = scan_intensities(paths, cache=cache)
        assert [r.ok for r in intensities] == [False, True] + [False] * (len(paths) - 2)


def test_image_cache_builder_reads_through_the_loader(fifo):
    from fracture.cache import images

    with pytest.raises(ImageLoadError) as info:
        images._load_image(str(fifo))
    assert info.value.reason == "unreadable"


def test_predict_cli_on_a_fifo_is_one_error_line(fifo, capsys):
    from fracture.cli import main

    assert main(["predict", str(fifo)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "x.jpg" in err[0] and "FIFO" in err[0]


# ==================================================== 4. several frames


def test_animated_gif_uses_the_first_frame_and_says_so():
    frames = [Image.new("L", (12, 10), value) for value in (30, 200, 90)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    decoded = decode_image(buffer.getvalue(), name="anim.gif")
    assert decoded.image.shape == (10, 12) and int(np.median(decoded.image)) == 30
    assert decoded.notes == ("anim.gif: a GIF with 3 frames; only the first was used",)


def test_multipage_tiff_uses_the_first_page_and_uploads_carry_the_note():
    from fracture.ui.uploads import read_uploads

    pages = [Image.fromarray(np.full((8, 9), value, np.uint8)) for value in (40, 220)]
    data = _tiff(pages[0], save_all=True, append_images=pages[1:])
    decoded = decode_image(data, name="pages.tif")
    assert (decoded.image == 40).all()
    assert decoded.notes == ("pages.tif: a TIFF with 2 pages; only the first was used",)
    loaded, problems = read_uploads([("pages.tif", data)], max_mb=1, max_files=4,
                                    pixel_budget=10**6, upload_pixel_budget=10**6)
    assert not problems and loaded[0].notes == decoded.notes


def test_formats_outside_the_radiograph_set_are_not_images():
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (1, 2, 3)).save(buffer, "ICO")
    with pytest.raises(ImageLoadError) as info:
        load_image(buffer.getvalue(), name="icon.png")
    assert info.value.reason == "not_an_image"


# =================================================== 5. no tracebacks in browsers


def test_streamlit_never_sends_error_details(monkeypatch):
    from streamlit import config

    settings = tomllib.loads((REPO_ROOT / ".streamlit" / "config.toml").read_text())
    assert settings["client"]["showErrorDetails"] == "none"
    assert "none" in {option.value for option in config.ShowErrorDetailsConfigOptions}

    from streamlit.testing.v1 import AppTest

    monkeypatch.chdir(REPO_ROOT)  # where Streamlit reads .streamlit/config.toml
    config.get_config_options(force_reparse=True)
    # AppTest leaves its script as sys.modules["__main__"]; worker processes started later in this
    # pytest process would re-import it (and die on its raise): put pytest's own back afterwards.
    monkeypatch.setitem(sys.modules, "__main__", sys.modules["__main__"])
    at = AppTest.from_string("raise RuntimeError('secret detail /etc/shadow')")
    at.run()
    shown = at.exception[0]
    assert "secret" not in shown.message and "RuntimeError" not in shown.message
    assert not shown.stack_trace


def test_max_pixels_is_still_refused_before_decoding():
    data = _png(Image.new("1", (9000, 9000)))  # 81 MP, a few KB
    with pytest.raises(ImageLoadError) as info:
        decode_image(data, name="huge.png", pixel_budget=10**6)
    assert info.value.reason == "too_many_pixels" and MAX_PIXELS < 81_000_000


def test_predict_cli_reduces_a_big_image_with_a_note_on_stderr(tmp_path, monkeypatch, capsys):
    """The CLI decodes within FRACTURE_MAX_IMAGE_MEGAPIXELS and prints the note (model faked: no torch run)."""
    from types import SimpleNamespace

    import fracture.serve.predictor
    from fracture.cli import main

    seen = []

    class FakePredictor:
        def predict(self, images, names, **kwargs):
            seen.extend(image.shape for image in images)
            item = SimpleNamespace(name=names[0], prob=0.25, label="not fractured", ood=None, is_radiograph=True,
                                   gate=None)
            return SimpleNamespace(images=[item], study_prob=0.25, study_label="not fractured", threshold=0.5,
                                   checkpoint="fake", body_part=None)

    monkeypatch.setattr(fracture.serve.predictor.Predictor, "from_checkpoint", classmethod(lambda cls, path, **kwargs: FakePredictor()))
    monkeypatch.setenv("FRACTURE_MAX_IMAGE_MEGAPIXELS", "0.03")
    path = tmp_path / "big.png"
    Image.fromarray(_radiograph_like(300, 400)).save(path)
    assert main(["predict", str(path), "--checkpoint", str(tmp_path / "any.safetensors")]) == 0
    captured = capsys.readouterr()
    assert seen == [(150, 200)]
    assert "note: " in captured.err and "reduced by 2" in captured.err and "big.png" in captured.err
    assert "study: p=0.250" in captured.out
