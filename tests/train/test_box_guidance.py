"""Box-guided training: box geometry, masks that follow augmentation, the loss, the CAM forward, EMA, init."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fracture.data.boxes import box_mask, boxes_to_input, parse_yolo
from fracture.errors import ConfigError, TrainingError
from fracture.models import create_model
from fracture.preprocess.ops import letterbox_geometry
from fracture.train import TrainConfig, read_events
from fracture.train.augment import BatchAugment
from fracture.train.box_guidance import MASK_SIZE, box_loss, build_box_masks, check_supported
from fracture.recipes.config import AugmentConfig
from fracture.train.trainer import train


def test_yolo_lines_become_clipped_boxes_and_bad_lines_are_reported():
    problems = []
    boxes = parse_yolo("0 0.5 0.5 0.2 0.4\n0 0.95 0.1 0.2 0.4\nnot a box\n\n0 0.5 0.5 0 0.1\n", "x.txt", problems)
    assert boxes[0] == pytest.approx((0.4, 0.3, 0.6, 0.7))
    assert boxes[1] == pytest.approx((0.85, 0.0, 1.0, 0.3))  # clipped to the image
    assert len(boxes) == 2
    assert [p.reason.split(":")[0] for p in problems] == ["line 3", "line 5"]


def test_letterbox_geometry_maps_boxes_into_the_padded_square():
    # a 100 (high) x 200 (wide) image in a 100 px square: scaled by 0.5, 25 px bars above and below
    assert letterbox_geometry(100, 200, 100) == (25, 0, 50, 100)
    (box,) = boxes_to_input([(0.0, 0.0, 0.5, 1.0)], (100, 200), 100, "letterbox")
    assert box == pytest.approx((0.0, 0.25, 0.5, 0.75))
    assert boxes_to_input([(0.1, 0.2, 0.3, 0.4)], (100, 200), 100, "stretch")[0] == (0.1, 0.2, 0.3, 0.4)
    mask = box_mask([box], 100, 100)
    assert mask.sum() == 50 * 50 and mask[25:75, :50].all()


def test_masks_only_for_positive_images_with_boxes_and_a_size():
    boxes = [((0.1, 0.1, 0.3, 0.3),), (), ((0.5, 0.5, 0.9, 0.9),), ((0.5, 0.5, 0.9, 0.9),)]
    sizes = [(100, 100), (100, 100), None, (50, 100)]
    masks, has_box = build_box_masks(boxes, sizes, 64, "letterbox", [1, 1, 1, 0])
    assert has_box.tolist() == [True, False, False, False]
    assert masks.shape == (4, MASK_SIZE, MASK_SIZE) and masks[1:].sum() == 0


def test_masks_get_exactly_the_images_flip_and_affine():
    """A mask fed as an image and as a mask comes out the same: the same grid moves both."""
    mask = torch.from_numpy(box_mask([(0.1, 0.2, 0.4, 0.5), (0.6, 0.6, 0.9, 0.8)], 64, 64)).repeat(6, 1, 1)
    config = AugmentConfig(hflip=True, vflip=True, rotation_deg=20, shift=0.1, zoom=0.2, brightness=0.0, contrast=0.0)
    images, masks = BatchAugment(config, seed=3)(mask.unsqueeze(1).clone(), mask.clone())
    assert torch.allclose(images[:, 0], masks, atol=1e-6)
    assert not torch.allclose(masks, mask)  # it did move
    # the same draws with and without masks: the images do not depend on whether masks ride along
    alone = BatchAugment(config, seed=3)(mask.unsqueeze(1).clone())
    assert torch.equal(alone, images)


def test_box_loss_rewards_a_cam_inside_the_box_and_is_zero_without_boxes():
    masks = torch.zeros(2, 32, 32)
    masks[:, 0:16, 0:16] = 1.0
    inside = torch.full((2, 4, 4), -3.0)
    inside[:, 0, 0] = 3.0
    outside = torch.full((2, 4, 4), -3.0)
    outside[:, 3, 3] = 3.0
    has = torch.tensor([True, True])
    assert box_loss(inside, masks, has) < box_loss(outside, masks, has)
    cam = outside.clone().requires_grad_(True)
    none = box_loss(cam, masks, torch.tensor([False, False]))
    assert float(none.detach()) == 0.0
    assert none.requires_grad  # still in the graph, so every parameter gets a (zero) gradient
    none.backward()
    assert cam.grad is not None and not bool(cam.grad.any())
    mixed = box_loss(torch.stack([inside[0], outside[1]]), masks, torch.tensor([True, False]))
    torch.testing.assert_close(mixed, box_loss(inside, masks, has))  # images without a box count for nothing


@pytest.mark.parametrize("arch", ["small_cnn", "efficientnet_lite0"])
def test_cam_forward_gives_the_same_logit_and_a_map_whose_mean_is_the_logit(arch):
    torch.manual_seed(0)
    model = create_model(arch, in_chans=3).eval()
    check_supported(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logit, _ = model(x)
        logit2, _, cam = model(x, with_cam=True)
    assert torch.allclose(logit, logit2, atol=1e-5)
    assert cam.ndim == 3 and cam.shape[0] == 2
    bias = model.fracture_head.bias
    assert torch.allclose(cam.mean(dim=(1, 2)) + bias, logit, atol=1e-4)  # average pooling: CAM mean = logit


def test_box_guidance_needs_finetune_mode(tmp_path):
    with pytest.raises(ConfigError, match="finetune"):
        TrainConfig(data="x", mode="frozen", box_loss_weight=1.0).validate()
    with pytest.raises(ConfigError, match="ema_decay"):
        TrainConfig(data="x", ema_decay=0.2).validate()


def _config(data, tmp_path, **overrides) -> TrainConfig:
    values = dict(data=str(data), model="small_cnn", image_size=48, epochs=2, batch_size=16, lr=3e-3,
                  scheduler="none", cache_dir=str(tmp_path / "cache"), seed=0)
    values.update(overrides)
    return TrainConfig(**values)


def test_box_guided_run_on_the_demo_set_logs_its_boxes_and_uses_ema(demo_root, tmp_path):
    run = tmp_path / "run"
    train(_config(demo_root, tmp_path, box_loss_weight=1.0, ema_decay=0.9), run)
    events = read_events(run)
    assert any("box guidance:" in e.get("message", "") for e in events)
    assert events[-1]["event"] == "finished"
    # resume state carries the EMA copy
    state = torch.load(run / "resume_state.pt", weights_only=True)
    assert state["ema"] is not None


def test_init_checkpoint_must_match_the_architecture(demo_root, tmp_path):
    first = train(_config(demo_root, tmp_path, epochs=1), tmp_path / "a")
    second = train(_config(demo_root, tmp_path, epochs=1, init_checkpoint=str(first)), tmp_path / "b")
    assert second.is_file()
    with pytest.raises(TrainingError, match="init_checkpoint"):
        train(_config(demo_root, tmp_path, epochs=1, in_chans=1, init_checkpoint=str(first)), tmp_path / "c")


def test_without_boxes_the_guidance_changes_nothing(tmp_path):
    """Class folders carry no boxes: a run with box_loss_weight > 0 equals one without, bit for bit."""
    from _fake_datasets import make_class_folders
    from fracture.checkpoints.format import load_checkpoint

    root = make_class_folders(tmp_path / "folders", splits={"train": "train", "val": "val", "test": "test"})
    plain = train(_config(root, tmp_path, image_size=32), tmp_path / "plain")
    guided = train(_config(root, tmp_path, image_size=32, box_loss_weight=2.0), tmp_path / "guided")
    a, _ = load_checkpoint(plain)
    b, _ = load_checkpoint(guided)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name


def test_a_finished_run_is_calibrated_on_its_val_split(tmp_path):
    """Issue 11: temperature scaling (and the OOD statistics) fitted on val when training ends."""
    from fracture.checkpoints.format import read_checkpoint_meta
    from fracture.data.demo import make_demo_dataset

    root = make_demo_dataset(tmp_path / "demo", seed=1, studies=120, size_range=(64, 96))
    best = train(_config(root, tmp_path, epochs=1, image_size=32), tmp_path / "run")
    meta = read_checkpoint_meta(best)
    assert meta["calibration"]["temperature"] > 0
    assert meta["ood"]["threshold"] > 0


def test_a_tiny_val_split_finishes_uncalibrated_with_a_warning(demo_root, tmp_path, caplog):
    from fracture.checkpoints.format import read_checkpoint_meta

    best = train(_config(demo_root, tmp_path, epochs=1), tmp_path / "run")
    assert "calibration" not in read_checkpoint_meta(best)
    assert any("left uncalibrated" in r.getMessage() for r in caplog.records)
