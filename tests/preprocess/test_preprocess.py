"""Preprocessing operations, pipelines and tensor conversion, on generated images."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from fracture.errors import PreprocessError
from fracture.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    OPS,
    PRESETS,
    Pipeline,
    anisotropic_diffusion,
    canny_channel,
    canny_edges,
    canny_overlay,
    clahe,
    denormalize,
    list_ops,
    list_presets,
    normalize_intensity,
    resize_square,
    to_batch,
    to_tensor,
)


@pytest.fixture
def noisy() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(60, 90), dtype=np.uint8)


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(ys.min()), int(ys.max()), int(xs.min()), int(xs.max())


# ----------------------------------------------------------------------------- ops


@pytest.mark.parametrize("name", list(OPS))
def test_every_op_is_pure_and_returns_uint8(name, noisy):
    before = noisy.copy()
    out = Pipeline.from_spec([{"op": name}])(noisy)
    np.testing.assert_array_equal(noisy, before)
    assert out.dtype == np.uint8
    assert out is not noisy
    if name == "resize":
        assert out.shape == (224, 224)
    elif name == "canny_channel":
        assert out.shape == noisy.shape + (3,)
    else:
        assert out.shape == noisy.shape


def test_empty_pipeline_returns_a_copy(noisy):
    out = Pipeline.from_spec([])(noisy)
    np.testing.assert_array_equal(out, noisy)
    out[0, 0] ^= 0xFF
    assert out[0, 0] != noisy[0, 0]


@pytest.mark.parametrize("shape", [(40, 80), (40, 80, 3), (40, 80, 1), (200, 13)])
@pytest.mark.parametrize("mode", ["letterbox", "stretch"])
def test_resize_square_shapes(shape, mode):
    img = np.full(shape, 200, dtype=np.uint8)
    out = resize_square(img, 32, mode)
    assert out.shape == (32, 32) + shape[2:]
    assert out.dtype == np.uint8


def test_letterbox_keeps_aspect_and_pads_black():
    img = np.zeros((100, 200), dtype=np.uint8)
    img[28:68, 60:140] = 255  # 40 x 80 rectangle, aspect 2
    out = resize_square(img, 50, "letterbox")
    top, bottom, left, right = _bbox(out > 127)
    height, width = bottom - top + 1, right - left + 1
    assert abs(width - 2 * height) <= 1
    assert abs(width - 20) <= 1 and abs(height - 10) <= 1
    # The 200 x 100 image becomes 50 x 25 content, centred; the bands are black.
    assert not out[:12].any() and not out[37:].any()
    assert out[12:37].any(axis=1).sum() == height  # content rows: only the rectangle
    assert abs(top - (12 + 7)) <= 1 and abs(left - 15) <= 1


def test_stretch_fills_the_square():
    img = np.full((50, 100), 255, dtype=np.uint8)
    assert resize_square(img, 40, "stretch").min() == 255


@pytest.mark.parametrize("mode", ["letterbox", "stretch"])
@pytest.mark.parametrize("shape", [(120, 300), (300, 120), (500, 500)])
def test_resize_never_crops_border_content(mode, shape):
    h, w = shape
    img = np.zeros(shape, dtype=np.uint8)
    # Bright marks touching each border: a centre crop would lose the long-side ones.
    img[:8, w // 2 - 4:w // 2 + 4] = 255
    img[-8:, w // 2 - 4:w // 2 + 4] = 255
    img[h // 2 - 4:h // 2 + 4, :8] = 255
    img[h // 2 - 4:h // 2 + 4, -8:] = 255
    out = resize_square(img, 64, mode)
    content = np.nonzero(out.max(axis=1))[0], np.nonzero(out.max(axis=0))[0]
    rows, cols = content
    top, bottom, left, right = rows.min(), rows.max(), cols.min(), cols.max()
    # Every mark survives on the edge of the content area.
    assert out[top, (left + right) // 2] > 60
    assert out[bottom, (left + right) // 2] > 60
    assert out[(top + bottom) // 2, left] > 60
    assert out[(top + bottom) // 2, right] > 60
    if mode == "stretch" or h == w:
        assert (top, left, bottom, right) == (0, 0, 63, 63)


def test_resize_enlarges_small_images_smoothly():
    img = np.zeros((10, 10), dtype=np.uint8)
    img[:, 5:] = 200
    out = resize_square(img, 50)
    assert out.shape == (50, 50)
    # Linear interpolation leaves intermediate values at the step.
    assert len(np.unique(out[25])) > 2


def test_clahe_raises_local_contrast():
    rng = np.random.default_rng(1)
    base = 110 + rng.integers(0, 8, size=(128, 128))  # a dull, low-contrast image
    img = base.astype(np.uint8)
    out = clahe(img, clip_limit=3.0, tile_grid=4)
    assert out.std() > 2 * img.std()
    assert out.dtype == np.uint8 and out.shape == img.shape


def test_canny_finds_the_edges_of_a_square():
    img = np.zeros((64, 64), dtype=np.uint8)
    img[20:44, 20:44] = 200
    edges = canny_edges(img, low=50, high=150, blur=3)
    assert set(np.unique(edges)) <= {0, 255}
    top, bottom, left, right = _bbox(edges > 0)
    assert abs(top - 20) <= 2 and abs(bottom - 43) <= 2
    assert abs(left - 20) <= 2 and abs(right - 43) <= 2
    assert not edges[26:38, 26:38].any()  # nothing inside the flat square
    assert not edges[:14].any() and not edges[50:].any()  # nor outside it
    np.testing.assert_array_equal(canny_edges(img, blur=0) > 0, canny_edges(img, blur=0) == 255)


def test_canny_overlay_only_brightens_edges():
    img = np.zeros((64, 64), dtype=np.uint8) + 40
    img[20:44, 20:44] = 120
    edges = canny_edges(img) > 0
    out = canny_overlay(img, alpha=0.5)
    assert (out >= img).all()
    np.testing.assert_array_equal(out[~edges], img[~edges])
    assert (out[edges] > img[edges]).all()
    np.testing.assert_array_equal(canny_overlay(img, alpha=0.0), img)
    assert (canny_overlay(img, alpha=1.0)[edges] == 255).all()


def test_canny_channel_stacks_image_and_edges():
    img = np.zeros((64, 64), dtype=np.uint8)
    img[20:44, 20:44] = 200
    out = canny_channel(img)
    assert out.shape == (64, 64, 3)
    np.testing.assert_array_equal(out[..., 0], img)
    np.testing.assert_array_equal(out[..., 2], img)
    np.testing.assert_array_equal(out[..., 1], canny_edges(img))


def test_diffusion_reduces_noise_and_keeps_a_step_edge():
    rng = np.random.default_rng(2)
    clean = np.full((64, 64), 60.0)
    clean[:, 32:] = 180.0
    img = np.clip(clean + rng.normal(0, 8, clean.shape), 0, 255).astype(np.uint8)
    out = anisotropic_diffusion(img, iterations=20, kappa=30, gamma=0.2).astype(float)
    for half in (np.s_[:, 2:28], np.s_[:, 36:62]):
        assert out[half].var() < 0.5 * img.astype(float)[half].var()
    step = out[:, 33:36].mean() - out[:, 28:31].mean()
    assert step > 100  # the 120-level step is still there and still sharp
    assert out[:, :30].mean() < 70 and out[:, 34:].mean() > 170


@pytest.mark.parametrize("option", [1, 2])
def test_diffusion_is_stable_at_the_largest_step(option):
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, size=(40, 40), dtype=np.uint8)
    out = anisotropic_diffusion(img, iterations=100, kappa=50, gamma=0.25, option=option)
    assert out.std() < img.std()
    assert abs(float(out.mean()) - float(img.mean())) < 3  # zero flux: mass is kept
    np.testing.assert_array_equal(anisotropic_diffusion(img, iterations=0), img)


def test_normalize_intensity_stretches_and_keeps_constant_images():
    img = np.linspace(100, 140, 64 * 64).reshape(64, 64).astype(np.uint8)
    out = normalize_intensity(img, 0.0, 100.0)
    assert out.min() == 0 and out.max() == 255
    flat = np.full((16, 16), 77, dtype=np.uint8)
    np.testing.assert_array_equal(normalize_intensity(flat), flat)
    np.testing.assert_array_equal(normalize_intensity(np.zeros((8, 8), np.uint8)), 0)


@pytest.mark.parametrize("call, step, param", [
    (lambda im: clahe(im, clip_limit=0.0), "clahe", "clip_limit"),
    (lambda im: clahe(im, tile_grid=0), "clahe", "tile_grid"),
    (lambda im: canny_edges(im, blur=4), "canny", "blur"),
    (lambda im: canny_edges(im, low=200, high=100), "canny", "low"),
    (lambda im: canny_overlay(im, alpha=1.5), "canny_overlay", "alpha"),
    (lambda im: anisotropic_diffusion(im, gamma=0.3), "diffusion", "gamma"),
    (lambda im: anisotropic_diffusion(im, option=3), "diffusion", "option"),
    (lambda im: anisotropic_diffusion(im, iterations=2.5), "diffusion", "iterations"),
    (lambda im: normalize_intensity(im, low_pct=-1), "normalize", "low_pct"),
    (lambda im: resize_square(im, 8), "resize", "size"),
    (lambda im: resize_square(im, 64, "crop"), "resize", "mode"),
    (lambda im: resize_square(im, True), "resize", "size"),
])
def test_bad_parameters_name_the_step_and_parameter(call, step, param, noisy):
    with pytest.raises(PreprocessError) as info:
        call(noisy)
    assert repr(step) in str(info.value) and repr(param) in str(info.value)


def test_bad_images_are_refused():
    with pytest.raises(PreprocessError, match="uint8"):
        clahe(np.zeros((8, 8), np.float32))
    with pytest.raises(PreprocessError, match="grayscale"):
        clahe(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(PreprocessError, match="empty"):
        resize_square(np.zeros((0, 8), np.uint8), 32)
    with pytest.raises(PreprocessError, match="numpy"):
        Pipeline.from_spec("clahe")([[1, 2], [3, 4]])


# ------------------------------------------------------------------------ pipeline


def test_spec_round_trips_through_json(noisy):
    pipeline = Pipeline.from_spec([
        {"op": "clahe", "clip_limit": 3.0},
        {"op": "diffusion", "iterations": 5},
        {"op": "resize", "size": 48, "mode": "stretch"},
    ])
    spec = pipeline.to_spec()
    assert spec[0] == {"op": "clahe", "clip_limit": 3.0, "tile_grid": 8}
    assert spec[1] == {"op": "diffusion", "iterations": 5, "kappa": 30.0, "gamma": 0.15,
                       "option": 1}
    again = Pipeline.from_spec(json.loads(json.dumps(spec)))
    assert again == pipeline and again.to_spec() == spec
    assert Pipeline.from_spec(pipeline.to_json()) == pipeline
    np.testing.assert_array_equal(again(noisy), pipeline(noisy))
    assert pipeline(noisy).shape == (48, 48)


def test_integral_floats_from_json_are_accepted_as_ints():
    pipeline = Pipeline.from_spec([{"op": "resize", "size": 128.0}])
    assert pipeline.to_spec() == [{"op": "resize", "size": 128, "mode": "letterbox"}]
    assert isinstance(pipeline.to_spec()[0]["size"], int)


@pytest.mark.parametrize("spec, words", [
    ([{"op": "sharpen"}], ["'sharpen'", "clahe"]),
    ([{"op": "clahe", "clip": 2.0}], ["'clip'", "'clahe'", "clip_limit"]),
    ([{"op": "clahe", "clip_limit": 100.0}], ["'clahe'", "'clip_limit'", "maximum"]),
    ([{"op": "resize", "size": "big"}], ["'resize'", "'size'", "integer"]),
    ([{"op": "canny", "low": 200, "high": 100}], ["'canny'", "'low'", "'high'"]),
    ([{"clip_limit": 2.0}], ["unknown op", "None"]),
    (["clahe"], ["step 0", "dict"]),
    ({"op": "clahe"}, ["list of steps"]),
    ("sharpen", ["preset", "'sharpen'"]),
    ("[{'op': 1}", ["JSON"]),
    ([{"op": "canny_channel"}, {"op": "clahe"}], ["'clahe'", "'canny_channel'", "adds channels"]),
])
def test_bad_specs_name_the_op_and_parameter(spec, words):
    with pytest.raises(PreprocessError) as info:
        Pipeline.from_spec(spec)
    for word in words:
        assert word in str(info.value)


def test_list_ops_schema_is_json_and_defaults_are_valid():
    schema = list_ops()
    assert set(schema) == {"resize", "clahe", "canny", "canny_overlay", "canny_channel",
                           "diffusion", "normalize"}
    assert json.loads(json.dumps(schema)) == schema
    for name, op in schema.items():
        assert op["label"] and op["help"]
        for pname, param in op["params"].items():
            assert param["type"] in {"int", "float", "str"}
            if "min" in param:
                assert param["min"] <= param["default"] <= param["max"]
            if "choices" in param:
                assert param["default"] in param["choices"]
        # Defaults alone make a valid one-step pipeline.
        Pipeline.from_spec([{"op": name, **{k: v["default"] for k, v in op["params"].items()}}])
    assert schema["diffusion"]["params"]["gamma"]["max"] == 0.25


def test_out_channels_and_channel_steps():
    assert Pipeline.from_spec("clahe").out_channels == 1
    channel = Pipeline.from_spec("canny_channel").with_resize(32)
    assert channel.out_channels == 3
    img = np.zeros((20, 30), np.uint8)
    assert channel(img).shape == (32, 32, 3)


def test_with_resize_replaces_and_appends():
    base = Pipeline.from_spec([{"op": "resize", "size": 64}, {"op": "clahe"}])
    resized = base.with_resize(128, "stretch")
    assert [s["op"] for s in resized.to_spec()] == ["clahe", "resize"]
    assert resized.to_spec()[-1] == {"op": "resize", "size": 128, "mode": "stretch"}
    assert resized.image_size == 128
    assert base.image_size is None and len(base) == 2  # the original is unchanged
    assert resized.without_resize().to_spec() == [s for s in resized.to_spec()[:1]]
    with pytest.raises(PreprocessError, match="'size'"):
        base.with_resize(4)


def test_describe_is_one_readable_line():
    text = Pipeline.from_spec("clahe+diffusion").with_resize(224).describe()
    assert "CLAHE" in text and "diffusion" in text and "224" in text and "\n" not in text
    assert Pipeline.from_spec("none").describe() == "no preprocessing"


def test_presets_build_and_have_no_resize():
    assert {"none", "clahe", "canny_overlay", "diffusion", "clahe+diffusion"} <= set(PRESETS)
    for name, spec in list_presets().items():
        pipeline = Pipeline.from_spec(name)
        assert pipeline.to_spec() == spec
        assert pipeline.image_size is None


def test_preprocess_does_not_import_torch():
    code = ("import sys, fracture.preprocess, fracture.data.demo; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# -------------------------------------------------------------------------- tensor


def test_to_tensor_replicates_gray_and_normalises():
    torch = pytest.importorskip("torch")
    img = np.zeros((8, 10), np.uint8)
    img[:, 5:] = 255
    tensor = to_tensor(img, in_chans=3)
    assert tensor.dtype == torch.float32 and tuple(tensor.shape) == (3, 8, 10)
    for c in range(3):
        assert tensor[c, 0, 9].item() == pytest.approx((1 - IMAGENET_MEAN[c]) / IMAGENET_STD[c],
                                                       rel=1e-5)
        assert tensor[c, 0, 0].item() == pytest.approx(-IMAGENET_MEAN[c] / IMAGENET_STD[c],
                                                       rel=1e-5)
    gray = to_tensor(img, in_chans=1, mean=0.5, std=0.5)
    assert tuple(gray.shape) == (1, 8, 10)
    assert gray.min().item() == pytest.approx(-1) and gray.max().item() == pytest.approx(1)


def test_to_tensor_reduces_three_channels_to_their_mean():
    pytest.importorskip("torch")
    img = np.dstack([np.full((4, 4), v, np.uint8) for v in (0, 90, 180)])
    tensor = to_tensor(img, in_chans=1, mean=0.0, std=1.0)
    assert tensor.shape[0] == 1
    assert tensor[0, 0, 0].item() == pytest.approx(90 / 255, rel=1e-5)
    # canny_channel output keeps its channel order for a 3-channel model.
    three = to_tensor(img, in_chans=3, mean=0.0, std=1.0)
    assert three[1, 0, 0].item() == pytest.approx(90 / 255, rel=1e-5)


def test_to_batch_and_denormalize_round_trip():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    images = [rng.integers(0, 256, (12, 16), dtype=np.uint8) for _ in range(3)]
    batch = to_batch(images, in_chans=3)
    assert tuple(batch.shape) == (3, 3, 12, 16) and batch.dtype == torch.float32
    back = denormalize(batch)
    assert back.shape == (3, 12, 16, 3) and back.dtype == np.uint8
    np.testing.assert_array_equal(back[1][..., 0], images[1])
    single = denormalize(to_tensor(images[0], in_chans=1), IMAGENET_MEAN, IMAGENET_STD)
    np.testing.assert_array_equal(single, images[0])


def test_tensor_errors():
    pytest.importorskip("torch")
    with pytest.raises(PreprocessError, match="one size"):
        to_batch([np.zeros((4, 4), np.uint8), np.zeros((4, 5), np.uint8)])
    with pytest.raises(PreprocessError, match="at least one"):
        to_batch([])
    with pytest.raises(PreprocessError, match="in_chans"):
        to_tensor(np.zeros((4, 4), np.uint8), in_chans=2)
    with pytest.raises(PreprocessError, match="mean"):
        to_tensor(np.zeros((4, 4), np.uint8), in_chans=3, mean=(0.1, 0.2))
    with pytest.raises(PreprocessError, match="uint8"):
        to_tensor(np.zeros((4, 4), np.float32))
