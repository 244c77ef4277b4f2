"""Training: one config, one trainer, events in the run directory, a process launcher."""
from fracture.recipes.config import AugmentConfig, TrainConfig
from fracture.train.events import EventLog, RunStatus, read_events, run_status

__all__ = ["AugmentConfig", "TrainConfig", "EventLog", "RunStatus", "read_events", "run_status", "train"]


def train(*args, **kwargs):
    """Lazy wrapper for :func:`fracture.train.trainer.train` (keeps torch out of light imports)."""
    from fracture.train.trainer import train as _train

    return _train(*args, **kwargs)
