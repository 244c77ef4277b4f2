"""Batch augmentation as tensor ops, on whatever device the batch is on.

Per-image PIL/OpenCV augmentation in worker processes is what starves a GPU
and eats a CPU; here a whole batch is flipped, rotated, shifted, zoomed and
contrast-jittered with one ``affine_grid``/``grid_sample`` call. It has its own
seeded generator, so a run is reproducible, and it is only ever applied to the
training split.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from fracture.preprocess.markers import scaled_mask, stamp_bank
from fracture.recipes.config import AugmentConfig


class BatchAugment:
    """Random flips, rotation, shift, zoom, brightness and contrast for a float batch in [0, 1]."""

    def __init__(self, config: AugmentConfig, seed: int = 0) -> None:
        self.config = config
        self.generator = torch.Generator().manual_seed(seed)

    def _uniform(self, n: int, low: float, high: float) -> torch.Tensor:
        return torch.rand(n, generator=self.generator) * (high - low) + low

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])

    def _draw(self, n: int) -> torch.Tensor:
        """All of a batch's random parameters as one (n, 8) CPU tensor.

        Drawn on the CPU from the run's generator (the same numbers on every
        device), in a fixed order: theta's six entries, then gain and bias.
        """
        cfg = self.config
        angle = self._uniform(n, -cfg.rotation_deg, cfg.rotation_deg) * math.pi / 180
        scale = 1.0 / self._uniform(n, 1 - cfg.zoom, 1 + cfg.zoom)  # grid scale is inverse zoom
        tx = self._uniform(n, -cfg.shift, cfg.shift) * 2
        ty = self._uniform(n, -cfg.shift, cfg.shift) * 2
        flip_x = torch.where(torch.rand(n, generator=self.generator) < 0.5, -1.0, 1.0) if cfg.hflip else torch.ones(n)
        flip_y = torch.where(torch.rand(n, generator=self.generator) < 0.5, -1.0, 1.0) if cfg.vflip else torch.ones(n)
        cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
        if cfg.brightness or cfg.contrast:
            gain = self._uniform(n, 1 - cfg.contrast, 1 + cfg.contrast)
            bias = self._uniform(n, -cfg.brightness, cfg.brightness)
        else:
            gain, bias = torch.ones(n), torch.zeros(n)
        return torch.stack([cos * flip_x, -sin * flip_y, tx, sin * flip_x, cos * flip_y, ty, gain, bias], dim=1)

    @torch.no_grad()
    def __call__(self, batch: torch.Tensor, masks: torch.Tensor | None = None, *, draw: int | None = None,
                 rows: slice | None = None):
        """Augment ``batch`` (B, C, H, W) float in [0, 1]; returns a new tensor.

        Under torchrun each rank holds ``rows`` of a global batch of ``draw``
        images: it draws the parameters for the whole global batch (so the
        generator advances alike on every rank, and its state is one state)
        and uses its rows, which makes N processes augment exactly as one.

        With ``masks`` (B, h, w) float (box masks, any resolution), the same
        flip/rotation/shift/zoom moves them too and ``(images, masks)`` is
        returned; the random draws are the same with or without masks.

        On CUDA the parameters cross in one pinned, non-blocking copy, so the
        augmentation queues behind the previous step instead of waiting for it.
        """
        n = batch.shape[0]
        params = self._draw(draw or n)
        if rows is not None:
            params = params[rows]
        if batch.device.type == "cuda":
            params = params.pin_memory().to(batch.device, non_blocking=True)
        params = params.to(batch.dtype)
        theta = params[:, :6].reshape(n, 2, 3)
        grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
        out = F.grid_sample(batch, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if masks is not None:
            mask_batch = masks.to(batch.dtype).unsqueeze(1)
            mask_grid = F.affine_grid(theta, list(mask_batch.shape), align_corners=False)
            masks = F.grid_sample(mask_batch, mask_grid, mode="bilinear", padding_mode="zeros",
                                  align_corners=False).squeeze(1)
        if self.config.brightness or self.config.contrast:
            gain, bias = params[:, 6].view(n, 1, 1, 1), params[:, 7].view(n, 1, 1, 1)
            mean = out.mean(dim=(1, 2, 3), keepdim=True)
            out = ((out - mean) * gain + mean + bias).clamp_(0.0, 1.0)
        if self.config.burn_ins > 0:
            burn = self._draw_burn_ins(draw or n)
            if rows is not None:
                burn = burn[rows]
            out = self._burn_in(out, burn)
        return out if masks is None else (out, masks)

    def _draw_burn_ins(self, n: int) -> torch.Tensor:
        """(n, 6) draws for the burn-ins: apply?, stamp, height, x, y, bright?; drawn after the
        affine draws, and only when burn-ins are on (a run without them keeps its random stream)."""
        return torch.rand(n, 6, generator=self.generator)

    def _burn_in(self, batch: torch.Tensor, burn: torch.Tensor) -> torch.Tensor:
        """Paste a marker or label into the chosen images (after the affine: markers are burnt
        into the film, they do not rotate with the anatomy, and they are not part of the box)."""
        bank = stamp_bank("all")
        _, _, height, width = batch.shape
        overlay = np.zeros((batch.shape[0], height, width), np.float32)
        values = np.ones(batch.shape[0], np.float32)
        for i, (apply, pick, size, x, y, bright) in enumerate(burn.tolist()):
            if apply >= self.config.burn_ins:
                continue
            mask = scaled_mask(bank[int(pick * len(bank)) % len(bank)], round(height * (0.04 + 0.08 * size)))
            mask = mask[:, : width]
            h, w = mask.shape
            top, left = int(y * (height - h)), int(x * (width - w))
            overlay[i, top: top + h, left: left + w] = mask
            values[i] = 0.9 + 0.1 * bright if bright > 0.2 else 0.05 * bright
        m = torch.from_numpy(overlay).to(batch.device, batch.dtype).unsqueeze(1)
        v = torch.from_numpy(values).to(batch.device, batch.dtype).view(-1, 1, 1, 1)
        return batch * (1 - m) + v * m
