"""Files the decoders choke on: every one is an ImageLoadError whose reason says what is wrong (a valid
float64 RGB TIFF is "unsupported", an invalid DICOM value is "invalid", only data cut short is
"truncated"), and a PALETTE COLOR DICOM without file meta is decoded through its palette."""
from __future__ import annotations

import io

import numpy as np
import pytest
import tifffile

from dicom_support import mono_dicom as _mono_dicom, palette_dicom_without_meta
from fracture.data.imageio import decode_image, load_image, read_image_header
from fracture.errors import ImageLoadError


@pytest.mark.parametrize("implicit", [True, False])
def test_palette_color_dicom_without_file_meta_is_decoded_through_its_palette(tmp_path, implicit):
    path = palette_dicom_without_meta(tmp_path / "face.dcm", implicit=implicit)
    image = load_image(path)
    assert image.shape == (32, 40) and image.dtype == np.uint8
    index = (np.arange(32 * 40) % 256).reshape(32, 40).astype(np.float64)
    luma = 0.299 * index + 0.587 * (255 - index)  # red ramp, green falling, no blue: not the raw indices
    assert np.corrcoef(image.ravel(), luma.ravel())[0, 1] > 0.99
    assert np.corrcoef(image.ravel(), index.ravel())[0, 1] < 0  # the palette was applied
    assert decode_image(path).format == "DICOM" and read_image_header(path).width == 40


@pytest.mark.parametrize(
    "name, kwargs, reason, words",
    [
        ("bits7", {"BitsAllocated": 7}, "invalid", "Bits Allocated"),
        ("rows0", {"Rows": 0}, "invalid", "Rows"),
        ("photometric", {"PhotometricInterpretation": "WEIRD"}, "invalid", "Photometric"),
        ("planar", {"SamplesPerPixel": 3}, "invalid", "Planar Configuration"),
        ("slope", {"RescaleSlope": "7.25", "RescaleIntercept": "0", "patch": (b"7.25", b"abc ")}, "invalid",
         "rescale or window value"),
        ("window", {"WindowCenter": "97531", "WindowWidth": "5678", "patch": (b"97531", b"x?!zq")}, "invalid",
         "rescale or window value"),
        ("short", {"pixel_data": bytes(100)}, "truncated", "less than expected"),
    ],
)
def test_bad_dicom_values_are_invalid_and_only_cut_data_is_truncated(tmp_path, name, kwargs, reason, words):
    path = _mono_dicom(tmp_path / f"{name}.dcm", **kwargs)
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    assert info.value.reason == reason and words in info.value.detail and str(path) in str(info.value)


def test_a_valid_float64_rgb_tiff_is_unsupported_not_truncated(tmp_path):
    path = tmp_path / "float.tif"
    tifffile.imwrite(path, np.random.default_rng(0).random((20, 30, 3)), photometric="rgb")
    for read in (load_image, read_image_header):
        with pytest.raises(ImageLoadError) as info:
            read(path)
        assert info.value.reason == "unsupported"
        assert "valid 30x20 TIFF with 3 sample(s) of 64-bit floating point" in info.value.detail
    cut = tmp_path / "cut.tif"
    cut.write_bytes(path.read_bytes()[:12])
    with pytest.raises(ImageLoadError) as info:
        load_image(cut)
    assert info.value.reason == "truncated"


def test_any_decoder_exception_is_one_typed_reason(monkeypatch, caplog):
    import fracture.data.imageio as imageio

    def broken(*_args):
        raise ZeroDivisionError("a plugin divided by zero")

    monkeypatch.setattr(imageio, "_load_pillow", broken)
    buffer = io.BytesIO()
    from PIL import Image

    Image.new("L", (4, 4)).save(buffer, format="PNG")
    with caplog.at_level("DEBUG", logger="fracture.data.imageio"):
        with pytest.raises(ImageLoadError) as info:
            load_image(buffer.getvalue(), name="x.png")
    assert info.value.reason == "invalid" and "ZeroDivisionError: a plugin divided by zero" in info.value.detail
    assert any(r.exc_info for r in caplog.records)  # the traceback went to the log

