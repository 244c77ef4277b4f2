"""The one forward path: preprocessed uint8 images -> network input -> probabilities.

Training-time validation, ``fracture evaluate``, the Predict page
(:class:`fracture.serve.predictor.Predictor`), frozen-feature extraction and the
benchmarks all go through :func:`predict_batches` / :func:`extract_features`,
so the numbers the trainer reports, the ones written into a model card and the
ones the page shows cannot drift apart: the same uint8 -> float conversion,
normalisation, autocast on CUDA and flip TTA (:func:`forward_probs`).

This module is the core's; the trainer imports from it, never the reverse.
"""
from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch

AMP_DTYPE = torch.bfloat16  # inference autocast dtype on CUDA (no grad scaling needed)


@dataclass
class InputSpec:
    """How a model wants its input: channels and normalisation."""

    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> "InputSpec":
        """The spec a checkpoint's metadata records."""
        norm = meta["normalization"]
        return cls(in_chans=int(meta["in_chans"]), mean=tuple(norm["mean"]), std=tuple(norm["std"]))


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# ----------------------------------------------------------- uint8 -> tensor
def uint8_to_float(batch: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(B, H, W[, C]) uint8 -> (B, C, H, W) float32 in [0, 1], channels as stored.

    A numpy array is converted on the CPU; a tensor where it lies (on the GPU
    after a uint8 copy: a quarter of the bytes of float32 cross the bus).
    """
    tensor = batch if isinstance(batch, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(batch))
    if tensor.ndim == 3:
        tensor = tensor.unsqueeze(-1)
    return tensor.permute(0, 3, 1, 2).float().div_(255.0)


def match_channels(tensor: torch.Tensor, in_chans: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, in_chans, H, W): one gray channel repeated, or colour averaged to gray."""
    channels = tensor.shape[1]
    if channels == in_chans:
        return tensor.contiguous()
    if channels == 1:
        return tensor.expand(-1, in_chans, -1, -1).contiguous()
    if in_chans == 1:
        return tensor.mean(dim=1, keepdim=True)
    raise ValueError(f"cannot feed {channels}-channel images to a {in_chans}-channel model")


def uint8_to_tensor(batch: np.ndarray | torch.Tensor, in_chans: int) -> torch.Tensor:
    """(B, H, W[, C]) uint8 -> (B, in_chans, H, W) float32 in [0, 1] (see :func:`uint8_to_float`)."""
    return match_channels(uint8_to_float(batch), in_chans)


def normalize_batch(batch: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Channel-wise (x - mean) / std; mean/std given for 3 channels are averaged for 1."""
    mean_t, std_t = _channel_stats(tuple(mean), tuple(std), batch.shape[1], batch.dtype, batch.device)
    return (batch - mean_t) / std_t


@functools.lru_cache(maxsize=32)
def _channel_stats(
    mean: tuple[float, ...], std: tuple[float, ...], channels: int, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, C, 1, 1) mean and std on ``device``, made once: building them per batch
    from Python floats is a blocking host-to-device copy on CUDA (a stream sync)."""
    mean_t = torch.tensor(mean, dtype=dtype)
    std_t = torch.tensor(std, dtype=dtype)
    if mean_t.numel() != channels:
        mean_t, std_t = mean_t.mean().repeat(channels), std_t.mean().repeat(channels)
    return mean_t.view(1, -1, 1, 1).to(device), std_t.view(1, -1, 1, 1).to(device)


def prepare_batch(images: np.ndarray, spec: InputSpec, device: torch.device) -> torch.Tensor:
    """uint8 (B, H, W[, C]) -> normalised float tensor on ``device``.

    On CUDA the uint8 pixels cross the bus (pinned, without blocking) and are
    converted on the GPU: 4 to 12 times fewer bytes than a float batch.
    """
    if device.type == "cuda":
        pixels = torch.from_numpy(np.ascontiguousarray(images)).pin_memory()
        batch = uint8_to_tensor(pixels.to(device, non_blocking=True), spec.in_chans)
    else:
        batch = uint8_to_tensor(images, spec.in_chans)
    return normalize_batch(batch, spec.mean, spec.std)


# ----------------------------------------------------------------- batching
from fracture.serve.batching import iterate_batches  # noqa: E402,F401  (torch-free, shared with onnxruntime)


# --------------------------------------------------------------- forwarding
def autocast(device: torch.device, amp: bool = True):
    """bf16 autocast on CUDA when ``amp``; a no-op context elsewhere."""
    return torch.autocast(device.type, dtype=AMP_DTYPE, enabled=bool(amp) and device.type == "cuda")


def forward_probs(
    model: torch.nn.Module, batch: torch.Tensor, body: torch.Tensor | None = None, *, tta_hflip: bool = False,
    logits: tuple[torch.Tensor, torch.Tensor | None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Fracture probabilities (B,) and body-part logits of one ready batch; the one home of flip TTA.

    Args:
        logits: ``(logit, body_logits)`` of a forward on ``batch`` already made
            (e.g. together with a class-activation map); only the mirror is run then.
    """
    logit, body_logits = logits if logits is not None else model(batch, body_part=body)
    prob = torch.sigmoid(logit.float())
    if tta_hflip:
        flipped, _ = model(torch.flip(batch, dims=[3]), body_part=body)
        prob = (prob + torch.sigmoid(flipped.float())) / 2
    return prob, body_logits


@torch.no_grad()
def batch_probs(
    model: torch.nn.Module, batch: torch.Tensor, body: torch.Tensor | None = None, *, tta_hflip: bool = False,
    amp: bool = True, logits: tuple[torch.Tensor, torch.Tensor | None] | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Probabilities (B,) float64 and body-part probabilities (B, P) or None of one ready batch
    (from :func:`prepare_batch`), under autocast on CUDA; what :func:`predict_batches` runs per batch."""
    if body is not None:
        body = body.to(batch.device)
    with autocast(batch.device, amp):
        prob, body_logits = forward_probs(model, batch, body, tta_hflip=tta_hflip, logits=logits)
    body_probs = torch.softmax(body_logits.float(), dim=1).cpu().numpy() if body_logits is not None else None
    return prob.float().cpu().numpy().astype(np.float64), body_probs


def forward_features(model: torch.nn.Module, batch: torch.Tensor, *, tta_hflip: bool = False) -> torch.Tensor:
    """Pooled backbone features (B, F), averaged with the mirror's under flip TTA."""
    feats = model.forward_features(batch)
    if tta_hflip:
        feats = (feats + model.forward_features(torch.flip(batch, dims=[3]))) / 2
    return feats.float()


def head_probs(
    model: torch.nn.Module, features: torch.Tensor, body: torch.Tensor | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Probabilities from pooled features through the heads only (frozen-feature training)."""
    with eval_mode(model), torch.no_grad():
        logit, body_logits = model.forward_head(features, body_part=body)
    probs = torch.sigmoid(logit.float()).cpu().numpy().astype(np.float64)
    body_probs = torch.softmax(body_logits.float(), 1).cpu().numpy() if body_logits is not None else None
    return probs, body_probs


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module):
    """``model`` in eval mode for the block, its previous mode restored after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def ready_batches(
    fetch: Callable[[np.ndarray], np.ndarray], n_items: int, spec: InputSpec, *, device: torch.device, batch_size: int,
) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """``(positions, network-ready batch)`` for items 0..n-1, fetched one batch ahead on a thread."""
    for positions, images in iterate_batches(np.arange(n_items), batch_size, lambda p: (p, fetch(p))):
        yield positions, prepare_batch(images, spec, device)


@torch.no_grad()
def predict_batches(
    model: torch.nn.Module,
    fetch: Callable[[np.ndarray], np.ndarray],
    n_items: int,
    spec: InputSpec,
    *,
    device: torch.device,
    batch_size: int = 64,
    body_parts: np.ndarray | None = None,
    tta_hflip: bool = False,
    amp: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Fracture probabilities (N,) and body-part probabilities (N, P) or None.

    Args:
        fetch: maps an array of item positions to their uint8 images.
        body_parts: known body-part index per item (-1 unknown) for a
            multi-task model; unknown parts come from the model's own guess.
        tta_hflip: average the probabilities of the image and its mirror.
        amp: bf16 autocast on CUDA (ignored on the CPU).
    """
    probs: list[np.ndarray] = []
    body_probs: list[np.ndarray] = []
    with eval_mode(model):
        for positions, batch in ready_batches(fetch, n_items, spec, device=device, batch_size=batch_size):
            body = None
            if body_parts is not None:
                body = torch.as_tensor(body_parts[positions], dtype=torch.long, device=device)
            prob, body_prob = batch_probs(model, batch, body, tta_hflip=tta_hflip, amp=amp)
            probs.append(prob)
            if body_prob is not None:
                body_probs.append(body_prob)
    all_probs = np.concatenate(probs) if probs else np.zeros(0)
    return all_probs.astype(np.float64), (np.concatenate(body_probs) if body_probs else None)


@torch.no_grad()
def extract_features(
    model: torch.nn.Module,
    fetch: Callable[[np.ndarray], np.ndarray],
    n_items: int,
    spec: InputSpec,
    *,
    device: torch.device,
    batch_size: int = 64,
    tta_hflip: bool = False,
    amp: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Pooled backbone features (N, F) float32, through the same input path as :func:`predict_batches`."""
    chunks: list[np.ndarray] = []
    with eval_mode(model):
        for positions, batch in ready_batches(fetch, n_items, spec, device=device, batch_size=batch_size):
            with autocast(device, amp):
                chunks.append(forward_features(model, batch, tta_hflip=tta_hflip).cpu().numpy())
            if progress is not None:
                progress(int(positions[-1]) + 1, n_items)
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros((0, 0), dtype=np.float32)


def body_part_indices(parts: Sequence[str], vocabulary: Sequence[str]) -> np.ndarray:
    """Map body-part names to indices of ``vocabulary``; unknown names become -1."""
    lookup = {name: i for i, name in enumerate(vocabulary)}
    return np.array([lookup.get(p, -1) for p in parts], dtype=np.int64)
