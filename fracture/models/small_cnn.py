"""A small convolutional network that trains in minutes on a laptop CPU.

The student baselines in this field ("a custom CNN") are a handful of
conv-bn-relu blocks and a global average pool. This one follows that recipe with
strided convolutions instead of max-pooling, so a 224 px image costs about 80 M
multiply-adds (EfficientNet-B0: about 390 M) and the whole net has about 250 k
parameters. It exposes the same interface as a timm backbone created with
``num_classes=0``: ``forward`` returns pooled features and ``num_features`` says
how many.
"""
from __future__ import annotations

import torch
from torch import nn

SMALL_CNN_CHANNELS = (16, 32, 64, 128)


def _conv_bn_relu(in_chans: int, out_chans: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_chans, out_chans, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_chans),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    """Stem and strided conv-bn-relu stages, a last stride-1 block, global average pool.

    Args:
        in_chans: input channels (1 for grayscale, 3 for ImageNet-style input).
        channels: output channels of the stem and each stage; the last block
            keeps the width of the last stage.
    """

    # First convolution, so that pretrained weights can be adapted to 1 channel.
    first_conv = "stem.0"

    def __init__(self, in_chans: int = 3, channels: tuple[int, ...] = SMALL_CNN_CHANNELS) -> None:
        super().__init__()
        if not channels:
            raise ValueError("SmallCNN needs at least one channel width")
        self.in_chans = in_chans
        self.stem = _conv_bn_relu(in_chans, channels[0], stride=2)
        self.stages = nn.Sequential(
            *(_conv_bn_relu(c_in, c_out, stride=2) for c_in, c_out in zip(channels[:-1], channels[1:]))
        )
        # Stride 1 so the map Grad-CAM reads keeps a resolution of size / 16.
        self.last_block = _conv_bn_relu(channels[-1], channels[-1], stride=1)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = channels[-1]
        # Same key timm backbones carry, read by fracture.models.network.model_normalization.
        self.pretrained_cfg = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Unpooled feature map (B, num_features, H / 16, W / 16)."""
        return self.last_block(self.stages(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features (B, num_features)."""
        return self.global_pool(self.forward_features(x)).flatten(1)
