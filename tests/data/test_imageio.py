"""The safe image loader: every mode and depth to uint8 gray, every failure to one typed error."""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

from fracture.data.imageio import (
    MAX_PIXELS,
    ImageHeader,
    decode_image,
    load_image,
    read_image_header,
    rescale_to_uint8,
)
from fracture.errors import ImageLoadError



def _gradient(height: int = 32, width: int = 32) -> np.ndarray:
    return (np.arange(height * width).reshape(height, width) % 256).astype(np.uint8)


def _save(image: Image.Image, path: Path, **params) -> Path:
    image.save(path, **params)
    return path


def _check_gray(array: np.ndarray, shape: tuple[int, int]) -> None:
    assert array.dtype == np.uint8
    assert array.shape == shape
    assert array.flags["C_CONTIGUOUS"]


# ------------------------------------------------------------------- 8-bit


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif"])
def test_lossless_8bit_gray_keeps_values(tmp_path, suffix):
    pixels = _gradient(24, 40)
    path = _save(Image.fromarray(pixels), tmp_path / f"gray{suffix}")
    out = load_image(path)
    _check_gray(out, (24, 40))
    np.testing.assert_array_equal(out, pixels)


def test_jpeg_gray_close_to_source(tmp_path):
    pixels = np.full((32, 32), 140, np.uint8)
    out = load_image(_save(Image.fromarray(pixels), tmp_path / "a.jpg", quality=95))
    _check_gray(out, (32, 32))
    assert np.abs(out.astype(int) - 140).max() <= 2


def test_rgb_with_equal_channels_equals_gray(tmp_path):
    pixels = _gradient()
    rgb = np.stack([pixels] * 3, axis=-1)
    out = load_image(_save(Image.fromarray(rgb), tmp_path / "rgb.png"))
    np.testing.assert_array_equal(out, pixels)


def test_rgb_colour_uses_luma(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 1] = 255  # pure green: luma 0.587 * 255 ~ 150
    out = load_image(_save(Image.fromarray(rgb), tmp_path / "green.png"))
    assert 145 <= int(out[0, 0]) <= 155


def test_cmyk_maps_ink_to_darkness(tmp_path):
    image = Image.new("CMYK", (8, 8), (0, 0, 0, 0))  # no ink: white
    image.paste((0, 0, 0, 255), (0, 0, 4, 8))  # full black ink on the left half
    out = load_image(_save(image, tmp_path / "cmyk.tif"))
    _check_gray(out, (8, 8))
    assert out[0, 0] == 0 and out[0, 7] == 255


def test_cmyk_jpeg_loads(tmp_path):
    out = load_image(_save(Image.new("CMYK", (16, 12), (0, 0, 0, 100)), tmp_path / "cmyk.jpg"))
    _check_gray(out, (12, 16))


def test_palette_image_uses_palette_gray(tmp_path):
    image = Image.new("P", (4, 4), 2)
    image.putpalette([0, 0, 0, 255, 255, 255, 100, 100, 100])
    image.putpixel((0, 0), 1)
    out = load_image(_save(image, tmp_path / "p.png"))
    assert out[0, 0] == 255 and out[1, 1] == 100


def test_palette_transparency_composited_on_black(tmp_path):
    image = Image.new("P", (4, 4), 1)
    image.putpalette([10, 10, 10, 200, 200, 200])
    image.putpixel((0, 0), 0)
    out = load_image(_save(image, tmp_path / "pt.png", transparency=0))
    assert out[0, 0] == 0 and out[2, 2] == 200


def test_la_alpha_composited_on_black(tmp_path):
    gray = np.full((4, 4), 200, np.uint8)
    alpha = np.array([[0, 255, 128, 255]] * 4, np.uint8)
    image = Image.merge("LA", (Image.fromarray(gray), Image.fromarray(alpha)))
    out = load_image(_save(image, tmp_path / "la.png"))
    assert out[0, 0] == 0 and out[0, 1] == 200
    assert abs(int(out[0, 2]) - 100) <= 1


def test_rgba_alpha_composited_on_black(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = 180
    rgba[:, :2, 3] = 255
    out = load_image(_save(Image.fromarray(rgba), tmp_path / "rgba.png"))
    assert (out[:, :2] == 180).all() and (out[:, 2:] == 0).all()


# ----------------------------------------------------------- high bit depth


def test_16bit_rescaled_by_real_range(tmp_path):
    values = np.linspace(1000, 3000, 32 * 32).reshape(32, 32).astype(np.uint16)
    path = _save(Image.fromarray(values), tmp_path / "deep.png")
    assert Image.open(path).mode.startswith("I")
    out = load_image(path)
    _check_gray(out, (32, 32))
    assert out.min() == 0 and out.max() == 255
    assert out[0, 0] == 0 and out[-1, -1] == 255
    assert (np.diff(out.ravel().astype(int)) >= 0).all()  # order kept


def test_16bit_constant_image_is_zeros(tmp_path):
    out = load_image(_save(Image.fromarray(np.full((8, 8), 4000, np.uint16)), tmp_path / "flat.png"))
    assert out.dtype == np.uint8 and not out.any()


@pytest.mark.parametrize("dtype", [np.float32, np.int32])
def test_float_and_int32_tiff_rescaled(tmp_path, dtype):
    values = np.linspace(-5, 70000, 64).reshape(8, 8).astype(dtype)
    out = load_image(_save(Image.fromarray(values), tmp_path / "f.tif"))
    assert out[0, 0] == 0 and out[-1, -1] == 255


def test_rescale_ignores_non_finite():
    out = rescale_to_uint8(np.array([[np.nan, 0.0], [1.0, np.inf]]))
    assert out.tolist() == [[0, 0], [255, 0]]


# -------------------------------------------------------------------- EXIF


def test_exif_orientation_applied(tmp_path):
    pixels = np.zeros((10, 20), np.uint8)
    pixels[0, 0] = 255  # top-left marker
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = _save(image, tmp_path / "rot.png", exif=exif)
    out = load_image(path)
    assert out.shape == (20, 10)
    np.testing.assert_array_equal(out, np.rot90(pixels, k=-1))


def test_header_reports_displayed_size_for_rotated_jpeg(tmp_path):
    image = Image.new("L", (20, 10), 100)
    exif = image.getexif()
    exif[0x0112] = 6
    path = _save(image, tmp_path / "rot.jpg", exif=exif)
    header = read_image_header(path)
    assert (header.width, header.height) == (10, 20)
    assert load_image(path).shape == (20, 10)


# ------------------------------------------------------------------- DICOM


def _dicom(pixels: np.ndarray, photometric: str = "MONOCHROME2", bits: int = 12, **elements) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.Modality = "DX"
    ds.set_pixel_data(pixels, photometric, bits)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    return ds


def _save_dicom(ds: Dataset, path: Path, *, preamble: bool = True) -> Path:
    ds.save_as(path, enforce_file_format=preamble)
    return path


def _ramp(low: int = 100, high: int = 4000) -> np.ndarray:
    return np.linspace(low, high, 16 * 16).reshape(16, 16).astype(np.uint16)


def test_dicom_monochrome2_rescaled(tmp_path):
    out = load_image(_save_dicom(_dicom(_ramp()), tmp_path / "a.dcm"))
    _check_gray(out, (16, 16))
    assert out[0, 0] == 0 and out[-1, -1] == 255


def test_dicom_monochrome1_inverted(tmp_path):
    normal = load_image(_save_dicom(_dicom(_ramp()), tmp_path / "m2.dcm"))
    inverted = load_image(_save_dicom(_dicom(_ramp(), "MONOCHROME1"), tmp_path / "m1.dcm"))
    np.testing.assert_array_equal(inverted.astype(int), 255 - normal.astype(int))


def test_dicom_negative_rescale_slope_applied(tmp_path):
    out = load_image(_save_dicom(_dicom(_ramp(), RescaleSlope=-2, RescaleIntercept=100), tmp_path / "s.dcm"))
    assert out[0, 0] == 255 and out[-1, -1] == 0


def test_dicom_window_saturates_outside(tmp_path):
    ds = _dicom(_ramp(0, 4000), WindowCenter=2000, WindowWidth=1000)
    out = load_image(_save_dicom(ds, tmp_path / "w.dcm"))
    flat = out.ravel()
    values = _ramp(0, 4000).ravel()
    assert (flat[values < 1400] == 0).all()
    assert (flat[values > 2600] == 255).all()


def test_dicom_multiframe_uses_first_frame(tmp_path):
    frames = np.stack([_ramp(), _ramp()[::-1]])
    out = load_image(_save_dicom(_dicom(frames), tmp_path / "mf.dcm"))
    assert out.shape == (16, 16)
    assert out[0, 0] == 0  # first frame ramps up
    decoded = decode_image(tmp_path / "mf.dcm")
    assert decoded.notes == (f"{tmp_path / 'mf.dcm'}: a DICOM with 2 frames; only the first was used",)


def test_dicom_reduced_to_the_pixel_budget_before_its_luts(tmp_path):
    big = np.linspace(100, 4000, 64 * 48).reshape(64, 48).astype(np.uint16)
    decoded = decode_image(_save_dicom(_dicom(big), tmp_path / "big.dcm"), pixel_budget=800)
    assert decoded.image.shape == (32, 24) and decoded.reduction == 2
    assert decoded.image[0, 0] == 0 and decoded.image[-1, -1] == 255
    assert "reduced by 2" in decoded.notes[0]


def test_dicom_in_bands_equals_whole(tmp_path, monkeypatch):
    import fracture.data.imageio as imageio

    path = _save_dicom(_dicom(_ramp(), WindowCenter=2000, WindowWidth=1000), tmp_path / "w.dcm")
    whole = load_image(path)
    monkeypatch.setattr(imageio, "_CHUNK_VALUES", 20)
    np.testing.assert_array_equal(load_image(path), whole)


def test_dicom_detected_by_preamble_not_extension(tmp_path):
    out = load_image(_save_dicom(_dicom(_ramp()), tmp_path / "scan.png"))
    assert out.shape == (16, 16)


def test_dicom_without_preamble_loads_by_extension(tmp_path):
    path = _save_dicom(_dicom(_ramp()), tmp_path / "raw.dcm", preamble=False)
    assert path.read_bytes()[128:132] != b"DICM"
    assert load_image(path).shape == (16, 16)


def test_dicom_without_pixel_data(tmp_path):
    ds = _dicom(_ramp())
    del ds.PixelData
    with pytest.raises(ImageLoadError) as info:
        load_image(_save_dicom(ds, tmp_path / "report.dcm"))
    assert info.value.reason == "no_pixels"


def test_dicom_truncated_pixel_data(tmp_path):
    data = _save_dicom(_dicom(_ramp()), tmp_path / "a.dcm").read_bytes()
    with pytest.raises(ImageLoadError) as info:
        load_image(data[:-100], name="cut.dcm")
    assert info.value.reason == "truncated"


def test_dicom_header(tmp_path):
    header = read_image_header(_save_dicom(_dicom(np.zeros((10, 12), np.uint16)), tmp_path / "h.dcm"))
    assert header == ImageHeader(width=12, height=10, mode="MONOCHROME2", format="DICOM", bit_depth=12)


def test_dicom_too_many_pixels(tmp_path):
    with pytest.raises(ImageLoadError) as info:
        load_image(_save_dicom(_dicom(_ramp()), tmp_path / "big.dcm"), max_pixels=100)
    assert info.value.reason == "too_many_pixels"


# ---------------------------------------------------------------- failures


def _encoded(fmt: str) -> bytes:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(buffer, fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_file_is_rejected_not_filled(tmp_path, fmt, keep):
    data = _encoded(fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    assert info.value.reason == "truncated"
    assert str(path) in str(info.value)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_header_cut_short_is_truncated(fmt):
    with pytest.raises(ImageLoadError) as info:
        load_image(_encoded(fmt)[:20], name="head.bin")
    assert info.value.reason == "truncated"


def test_text_renamed_png_is_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("patient notes, not a picture\n" * 5)
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    assert info.value.reason == "not_an_image"
    assert "notes.png" in str(info.value)


def test_garbage_named_dcm_is_not_an_image():
    with pytest.raises(ImageLoadError) as info:
        load_image(b"hello, this is not DICOM" * 20, name="fake.dcm")
    assert info.value.reason == "not_an_image"


def test_empty_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    assert info.value.reason == "empty"
    with pytest.raises(ImageLoadError) as info:
        read_image_header(path)
    assert info.value.reason == "empty"


def test_missing_file_and_folder_are_unreadable(tmp_path):
    for target in (tmp_path / "nope.png", tmp_path):
        with pytest.raises(ImageLoadError) as info:
            load_image(target)
        assert info.value.reason == "unreadable"
    with pytest.raises(ImageLoadError) as info:
        read_image_header(tmp_path / "nope.png")
    assert info.value.reason == "unreadable"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a non-root POSIX user")
def test_permission_denied_is_unreadable(tmp_path):
    path = _save(Image.fromarray(_gradient()), tmp_path / "locked.png")
    path.chmod(0)
    try:
        with pytest.raises(ImageLoadError) as info:
            load_image(path)
        assert info.value.reason == "unreadable" and "permission" in info.value.detail
    finally:
        path.chmod(0o600)


def test_too_many_pixels_checked_before_decoding(tmp_path):
    path = _save(Image.fromarray(_gradient()), tmp_path / "a.png")
    with pytest.raises(ImageLoadError) as info:
        load_image(path, max_pixels=32 * 32 - 1)
    assert info.value.reason == "too_many_pixels"
    assert load_image(path, max_pixels=32 * 32).shape == (32, 32)
    assert MAX_PIXELS >= 16_000_000


def test_pillow_decompression_bomb_becomes_too_many_pixels(tmp_path, monkeypatch):
    path = _save(Image.fromarray(_gradient()), tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 1024 px > 2 * 100: Pillow refuses
    with pytest.raises(ImageLoadError) as info:
        load_image(path, max_pixels=10**9)
    assert info.value.reason == "too_many_pixels"


def test_bytes_upload_uses_name_in_errors():
    assert load_image(_encoded("PNG"), name="upload.png").shape == (64, 64)
    with pytest.raises(ImageLoadError) as info:
        load_image(b"\x00\x01garbage", name="xray_upload.png")
    assert info.value.path == "xray_upload.png"
    assert info.value.reason == "not_an_image"


# ------------------------------------------------------------------ headers


def test_header_of_16bit_png(tmp_path):
    path = _save(Image.fromarray(np.zeros((6, 9), np.uint16)), tmp_path / "d.png")
    header = read_image_header(path)
    assert (header.width, header.height, header.format, header.bit_depth) == (9, 6, "PNG", 16)


def test_header_does_not_decode_pixels(tmp_path):
    data = _encoded("PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])  # pixel data cut: load fails, header is fine
    header = read_image_header(path)
    assert (header.width, header.height, header.mode) == (64, 64, "L")
    with pytest.raises(ImageLoadError):
        load_image(path)


def test_header_of_text_file(tmp_path):
    path = tmp_path / "a.jpg"
    path.write_text("no image here")
    with pytest.raises(ImageLoadError) as info:
        read_image_header(path)
    assert info.value.reason == "not_an_image"
