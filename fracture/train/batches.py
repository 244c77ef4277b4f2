"""From cached uint8 images to model-ready batches, with background prefetch.

Images come out of :class:`fracture.cache.ImageCache` as one (B, S, S, C)
uint8 array per batch (a memcpy from a memory map), so the only per-batch work
left is a dtype conversion and the batch augmentation. A one-batch-ahead
prefetch thread overlaps the copy (and any disk read behind it) with the
model step; callers keep torch kernels off that thread, because on a CPU a
second thread's kernels start a second OpenMP team that fights the step's
threads for the same cores. On a GPU the batch crosses the bus as uint8 and is
converted there (:func:`uint8_to_tensor` takes a device tensor too): a quarter
of the bytes of float32, a twelfth when one gray channel becomes three.
"""
from __future__ import annotations

import functools
import queue
import threading
from typing import Callable, Iterator, Sequence

import numpy as np
import torch


def uint8_to_float(batch: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(B, H, W[, C]) uint8 -> (B, C, H, W) float32 in [0, 1], channels as stored.

    A numpy array is converted on the CPU; a tensor where it lies (on the GPU
    after a uint8 copy).
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


def epoch_indices(
    n_items: int,
    *,
    shuffle: bool,
    generator: torch.Generator,
    sample_weights: np.ndarray | None = None,
) -> np.ndarray:
    """Order of items for one epoch; with weights, a class-balanced draw with replacement."""
    if sample_weights is not None:
        weights = torch.as_tensor(sample_weights, dtype=torch.double)
        return torch.multinomial(weights, n_items, replacement=True, generator=generator).numpy()
    if shuffle:
        return torch.randperm(n_items, generator=generator).numpy()
    return np.arange(n_items)


def iterate_batches(
    order: np.ndarray,
    batch_size: int,
    fetch: Callable[[np.ndarray], tuple],
    *,
    prefetch: bool = True,
) -> Iterator[tuple]:
    """Yield ``fetch(batch_positions)`` for consecutive slices of ``order``.

    With ``prefetch`` the next batch is fetched on a background thread while
    the caller works on the current one.
    """
    slices = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if not prefetch or len(slices) < 2:
        for positions in slices:
            yield fetch(positions)
        return
    results: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()

    def producer() -> None:
        try:
            for positions in slices:
                if stop.is_set():
                    return
                results.put(("ok", fetch(positions)))
            results.put(("done", None))
        except BaseException as exc:  # re-raised in the consumer thread
            results.put(("error", exc))

    thread = threading.Thread(target=producer, daemon=True, name="batch-prefetch")
    thread.start()
    try:
        while True:
            kind, value = results.get()
            if kind == "done":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        while thread.is_alive():
            try:
                results.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)
