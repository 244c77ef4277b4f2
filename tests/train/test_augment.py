"""Batch augmentation: reproducible, label-preserving geometry, values kept in [0, 1], burn-ins only where stamped."""
from __future__ import annotations

import torch

from fracture.preprocess.markers import stamp_bank
from fracture.train.augment import BatchAugment
from fracture.recipes.config import AugmentConfig

NONE = dict(hflip=False, vflip=False, rotation_deg=0.0, shift=0.0, zoom=0.0, brightness=0.0, contrast=0.0)


def _batch(n: int = 6, size: int = 16) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def test_same_seed_same_batches_and_state_resumes():
    first, second = BatchAugment(AugmentConfig(), seed=3), BatchAugment(AugmentConfig(), seed=3)
    batch = _batch()
    assert torch.equal(first(batch), second(batch))
    state = first.state_dict()
    expected = first(batch)
    resumed = BatchAugment(AugmentConfig(), seed=99)
    resumed.load_state_dict(state)
    assert torch.equal(resumed(batch), expected)
    assert not torch.equal(BatchAugment(AugmentConfig(), seed=4)(batch), second(batch))


def test_no_augmentation_is_the_identity():
    batch = _batch()
    out = BatchAugment(AugmentConfig(**NONE))(batch)
    assert torch.allclose(out, batch, atol=1e-6)


def test_flips_mirror_whole_images_and_nothing_else():
    batch = _batch(n=32)
    out = BatchAugment(AugmentConfig(**{**NONE, "hflip": True}), seed=0)(batch)
    mirrored = [torch.allclose(o, b.flip(-1), atol=1e-6) for o, b in zip(out, batch)]
    kept = [torch.allclose(o, b, atol=1e-6) for o, b in zip(out, batch)]
    assert all(m or k for m, k in zip(mirrored, kept))
    assert 4 < sum(mirrored) < 28  # about half of 32, each image on its own draw
    out = BatchAugment(AugmentConfig(**{**NONE, "vflip": True}), seed=0)(batch)
    flipped = [torch.allclose(o, b.flip(-2), atol=1e-6) for o, b in zip(out, batch)]
    kept = [torch.allclose(o, b, atol=1e-6) for o, b in zip(out, batch)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 4 < sum(flipped) < 28


def test_full_augmentation_changes_images_and_stays_in_range():
    batch = _batch(n=8, size=32)
    out = BatchAugment(AugmentConfig(rotation_deg=30, shift=0.2, zoom=0.2, brightness=0.3, contrast=0.3), seed=5)(batch)
    assert out.shape == batch.shape and out.dtype == batch.dtype
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert all(not torch.allclose(o, b, atol=1e-3) for o, b in zip(out, batch))


def test_brightness_shifts_a_flat_image_by_at_most_its_range():
    flat = torch.full((64, 1, 8, 8), 0.5)
    out = BatchAugment(AugmentConfig(**{**NONE, "brightness": 0.1}), seed=2)(flat)
    shifts = out.mean(dim=(1, 2, 3)) - 0.5
    assert float(shifts.abs().max()) <= 0.1 + 1e-6
    assert float(shifts.std()) > 0.02  # each image gets its own shift


def test_without_burn_ins_the_random_stream_is_the_affine_draws_alone():
    """burn_ins=0 draws nothing extra, so runs and resumed states from before burn-ins replay bit for bit."""
    batch = _batch(n=8, size=32)
    config = AugmentConfig(vflip=True, burn_ins=0.0)
    augment, affine_only = BatchAugment(config, seed=7), BatchAugment(config, seed=7)
    for _ in range(3):
        augment(batch)
        affine_only._draw(len(batch))
        assert torch.equal(augment.generator.get_state(), affine_only.generator.get_state())


def test_burn_ins_change_every_image_only_inside_one_stamp_sized_box():
    size = 64
    batch = _batch(n=16, size=size)
    plain = BatchAugment(AugmentConfig(burn_ins=0.0), seed=11)(batch)
    burnt = BatchAugment(AugmentConfig(burn_ins=1.0), seed=11)(batch)  # same affine draws, burn-ins after
    widest = max(s.mask.shape[1] / s.mask.shape[0] for s in stamp_bank("all"))
    max_height = round(size * 0.12)  # burn-in heights are 4-12% of the image
    for before, after in zip(plain, burnt):
        changed = (before - after).abs().amax(dim=0) > 1e-6
        assert changed.any()  # burn_ins=1.0: every image gets one
        ys, xs = torch.nonzero(changed, as_tuple=True)
        height, width = int(ys.max() - ys.min()) + 1, int(xs.max() - xs.min()) + 1
        assert height <= max_height and width <= min(size, widest * max_height + 1)
        assert int(changed.sum()) < 0.5 * size * size
    assert float(burnt.min()) >= 0.0 and float(burnt.max()) <= 1.0
