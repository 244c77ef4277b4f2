"""The resume state: everything a stopped run needs to continue exactly as if it had never stopped.

Written after every epoch (by rank 0 under torchrun) as ``RUN_DIR/resume_state.pt``:
weights, optimiser, schedules, AMP scaler, early-stopping counters, and every
random state the next epoch reads: torch's (CPU and CUDA), numpy's, Python's,
the augmentation generator and the epoch-order (sampler) generator; under
torchrun each rank's. Resuming after epoch k and training to N gives the same
weights as training to N in one go. The file is written to a temporary name
and moved into place, so a kill or a full disk leaves the previous state.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fracture.util.files import atomic_replace
from fracture.errors import TrainingError

RESUME_STATE = "resume_state.pt"


def capture_rng(augment, sampler: torch.Generator) -> dict[str, Any]:
    """This process's random states, as tensors and plain values (loadable with ``weights_only``)."""
    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": [py_version, list(py_state), py_gauss],
        "augment": augment.generator.get_state(),
        "sampler": sampler.get_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], augment, sampler: torch.Generator) -> None:
    torch.set_rng_state(state["torch"].cpu())
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["key"].cpu().numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    augment.generator.set_state(state["augment"].cpu())
    sampler.set_state(state["sampler"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def save_resume_state(run_dir: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` atomically (temporary file, ``os.replace``; the temporary is removed on failure)."""
    path = Path(run_dir) / RESUME_STATE
    with atomic_replace(path) as tmp:
        torch.save(state, tmp)
    return path


def load_resume_state(run_dir: Path, device: torch.device) -> dict[str, Any]:
    """The saved state.

    Raises:
        TrainingError: there is none (the run stopped before its first epoch ended).
    """
    path = Path(run_dir) / RESUME_STATE
    if not path.is_file():
        raise TrainingError(f"{run_dir}: no {RESUME_STATE}; the run stopped before its first epoch ended, "
                            "start it again")
    return torch.load(path, map_location=device, weights_only=True)


def rank_rng(state: dict[str, Any], rank: int, world_size: int) -> tuple[dict[str, Any] | None, bool]:
    """This rank's saved random states and whether they are exactly its own.

    Saved with another number of processes, rank 0's are returned: the epoch
    order and augmentation generators are the same on every rank (so the data
    and its augmentation continue exactly), torch's and numpy's are not.
    None for a state written before random states were saved.
    """
    saved = state.get("rng")
    if not saved:
        return None, False
    if len(saved) != world_size:
        return saved[0], False
    return saved[rank], True


def save_loop_state(run_dir: Path, loop, dist, *, epoch: int, best: float | None, bad_epochs: int) -> None:
    """Gather every rank's random states; rank 0 writes the loop's state after ``epoch``."""
    rng = dist.gather_objects(capture_rng(loop.augment, loop.sampler))
    if dist.is_main:
        save_resume_state(run_dir, {
            "epoch": epoch, "best": best, "bad_epochs": bad_epochs, "model": loop.model.state_dict(),
            "ema": loop.ema.state_dict() if loop.ema is not None else None,
            **loop.optim.state_dict(), "rng": rng, "world_size": dist.world_size,
        })


def restore_loop_state(run_dir: Path, loop, dist, device: torch.device) -> tuple[int, float | None, int, str | None]:
    """Load the saved state into ``loop``: ``(next epoch, best metric, bad epochs, warning or None)``.

    Raises:
        TrainingError: no state saved yet.
    """
    state = load_resume_state(run_dir, device)
    loop.model.load_state_dict(state["model"])
    if loop.ema is not None and state.get("ema") is not None:
        loop.ema.load_state_dict(state["ema"])
    loop.optim.load_state_dict(state)
    rng, exact = rank_rng(state, dist.rank, dist.world_size)
    if rng is not None:
        restore_rng(rng, loop.augment, loop.sampler)
    elif "generator" in state:  # written before all random states were saved
        loop.sampler.set_state(state["generator"].cpu())
        loop.augment.load_state_dict({"generator": state["augment"]["generator"].cpu()})
    warning = None if exact else (
        f"the resume state was written by {len(state.get('rng') or [])} process(es) or an older version, this run "
        f"has {dist.world_size}: it continues the same data order, but not bit for bit")
    return state["epoch"] + 1, state["best"], state["bad_epochs"], warning
