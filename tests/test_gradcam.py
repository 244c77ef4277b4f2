"""Grad-CAM: shape and range, state restored, and a map that finds what the net responds to."""
from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from fracture.errors import ModelError
from fracture.explain import CAM_METHODS, gradcam, heatmap_to_original, overlay_heatmap
from fracture.models import FractureModel, create_model
from fracture.preprocess.ops import resize_square

SIZE = 64


@pytest.fixture(scope="module")
def small_multitask() -> FractureModel:
    torch.manual_seed(0)
    return create_model("small_cnn", num_body_parts=3)


@pytest.fixture(scope="module")
def b0_gray() -> FractureModel:
    torch.manual_seed(0)
    return create_model("efficientnet_b0", in_chans=1)


class _BlobBackbone(nn.Module):
    """Two hand-set 5x5 filters: channel 0 fires on bright regions, channel 1 on dark ones."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, kernel_size=5, padding=2)
        with torch.no_grad():
            self.conv.weight[0].fill_(1 / 25)
            self.conv.bias[0] = -0.5
            self.conv.weight[1].fill_(-1 / 25)
            self.conv.bias[1] = 0.5
        self.act = nn.ReLU()
        self.num_features = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x)).mean(dim=(2, 3))


def _blob_model() -> FractureModel:
    model = FractureModel(_BlobBackbone(), arch="blob", num_features=2, gradcam_layer="act",
                          in_chans=1, drop_rate=0.0)
    with torch.no_grad():  # "fracture" = bright evidence minus dark evidence
        model.fracture_head.weight.copy_(torch.tensor([[4.0, -4.0]]))
        model.fracture_head.bias.zero_()
    return model


def _blob_image(center: tuple[int, int], radius: int = 6) -> torch.Tensor:
    yy, xx = np.mgrid[:SIZE, :SIZE]
    disk = ((yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius**2).astype(np.float32)
    return torch.from_numpy(disk)[None, None]


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "layercam"])
@pytest.mark.parametrize("center", [(44, 18), (12, 50)])
def test_cam_peaks_on_the_bright_blob(method, center):
    heatmap = gradcam(_blob_model(), _blob_image(center), method=method)
    peak = np.unravel_index(np.argmax(heatmap), heatmap.shape)
    assert np.hypot(peak[0] - center[0], peak[1] - center[1]) <= 4, (peak, center)
    # The map is off the blob: far corners stay cold.
    far = (SIZE - 1 - center[0], SIZE - 1 - center[1])
    assert heatmap[far] < 0.1


@pytest.mark.parametrize("method", sorted(CAM_METHODS))
def test_small_cnn_map_shape_range_and_state_restored(small_multitask, method):
    model = small_multitask
    model.train()
    for param in model.backbone.parameters():  # a frozen backbone, as in "frozen" training
        param.requires_grad_(False)
    marker = torch.full_like(model.fracture_head.weight, 7.0)
    model.fracture_head.weight.grad = marker
    try:
        heatmap = gradcam(model, torch.randn(1, 3, SIZE, SIZE), method=method, body_part=1)
        assert heatmap.shape == (SIZE, SIZE) and heatmap.dtype == np.float32
        assert 0.0 <= heatmap.min() and heatmap.max() <= 1.0
        assert model.training
        assert not any(p.requires_grad for p in model.backbone.parameters())
        assert all(p.requires_grad for p in model.fracture_head.parameters())
        assert model.fracture_head.weight.grad is marker
        assert model.backbone.stem[0].weight.grad is None
    finally:
        model.fracture_head.weight.grad = None
        for param in model.backbone.parameters():
            param.requires_grad_(True)


def test_body_part_target(small_multitask):
    x = torch.randn(3, SIZE, SIZE)  # (C, H, W) is accepted too
    predicted = gradcam(small_multitask, x, target="body_part")
    chosen = gradcam(small_multitask, x, target="body_part", body_part=2)
    assert predicted.shape == chosen.shape == (SIZE, SIZE)
    with pytest.raises(ModelError, match="multi-task"):
        gradcam(_blob_model(), _blob_image((30, 30)), target="body_part")


def test_efficientnet_map_and_eval_mode_kept(b0_gray):
    b0_gray.eval()
    heatmap = gradcam(b0_gray, torch.randn(1, 1, SIZE, SIZE))
    assert heatmap.shape == (SIZE, SIZE) and heatmap.dtype == np.float32
    assert np.isfinite(heatmap).all() and 0.0 <= heatmap.min() and heatmap.max() <= 1.0
    assert not b0_gray.training


def test_missing_target_layer_warns_and_falls_back(caplog):
    model = _blob_model()
    model.gradcam_layer_name = "no_such_layer"
    with caplog.at_level(logging.WARNING, logger="fracture.explain.gradcam"):
        heatmap = gradcam(model, _blob_image((20, 20)))
    assert "target layer missing" in caplog.text
    peak = np.unravel_index(np.argmax(heatmap), heatmap.shape)
    assert np.hypot(peak[0] - 20, peak[1] - 20) <= 4  # the fallback (the conv) also sees the blob


def test_bad_arguments(small_multitask):
    x = torch.randn(1, 3, SIZE, SIZE)
    with pytest.raises(ModelError, match="unknown Grad-CAM method"):
        gradcam(small_multitask, x, method="magic")
    with pytest.raises(ModelError, match="unknown Grad-CAM target"):
        gradcam(small_multitask, x, target="tumour")
    with pytest.raises(ModelError, match="one image"):
        gradcam(small_multitask, torch.randn(2, 3, SIZE, SIZE))


# ---------------------------------------------------------------- back to the original image
@pytest.mark.parametrize("shape", [(90, 50), (40, 100), (64, 64)])
def test_heatmap_to_original_inverts_the_letterbox(shape):
    h, w = shape
    original = np.zeros(shape, dtype=np.uint8)
    spot = (int(h * 0.8), int(w * 0.25))
    cv2.circle(original, (spot[1], spot[0]), max(3, min(h, w) // 10), 255, -1)
    letterboxed = resize_square(original, SIZE, mode="letterbox")
    back = heatmap_to_original(letterboxed.astype(np.float32) / 255, original.shape, "letterbox")
    assert back.shape == shape and back.dtype == np.float32
    rows, cols = np.mgrid[:h, :w]
    centroid = ((rows * back).sum() / back.sum(), (cols * back).sum() / back.sum())
    assert np.hypot(centroid[0] - spot[0], centroid[1] - spot[1]) <= 1.5, (centroid, spot)
    # The mapped-back map lines up with the original everywhere, padding gone.
    assert np.corrcoef(back.ravel(), original.ravel() / 255.0)[0, 1] > 0.9


def test_heatmap_to_original_padding_never_reaches_the_image():
    # A map that is 1 on the letterbox content and 0 on the padding comes back all ones.
    h, w = 100, 50
    content = resize_square(np.full((h, w), 255, np.uint8), SIZE, mode="letterbox") / 255.0
    back = heatmap_to_original(content.astype(np.float32), (h, w), "letterbox")
    assert back.min() == pytest.approx(1.0)


def test_heatmap_to_original_stretch_and_errors():
    heatmap = np.random.default_rng(0).random((SIZE, SIZE), dtype=np.float32)
    back = heatmap_to_original(heatmap, (30, 120, 3), "stretch")
    assert back.shape == (30, 120)
    with pytest.raises(ModelError, match="resize mode"):
        heatmap_to_original(heatmap, (30, 30), "crop")
    with pytest.raises(ModelError, match="square"):
        heatmap_to_original(heatmap[:, :10], (30, 30), "letterbox")


def test_overlay_heatmap():
    gray = np.tile(np.linspace(0, 255, 40, dtype=np.uint8), (30, 1))
    heatmap = np.zeros((SIZE, SIZE), np.float32)
    heatmap[:, SIZE // 2:] = 1.0
    blended = overlay_heatmap(gray, heatmap, alpha=0.4)
    assert blended.shape == (30, 40, 3) and blended.dtype == np.uint8
    np.testing.assert_array_equal(overlay_heatmap(gray, heatmap, alpha=0.0), np.dstack([gray] * 3))
    only_map = overlay_heatmap(gray, heatmap, alpha=1.0, colormap="jet")
    # jet: cold is blue, hot is red (RGB order).
    assert only_map[0, 0, 2] > 100 and only_map[0, 0, 0] < 50
    assert only_map[0, -1, 0] > 100 and only_map[0, -1, 2] < 50
    with pytest.raises(ModelError, match="colormap"):
        overlay_heatmap(gray, heatmap, colormap="rainbow-unicorn")
    with pytest.raises(ModelError, match="alpha"):
        overlay_heatmap(gray, heatmap, alpha=1.5)
    with pytest.raises(ModelError, match="uint8"):
        overlay_heatmap(gray.astype(np.float32), heatmap)
