"""What the Train page shows about past runs, and what it does with them, without Streamlit:
the runs table, launching a run from the form, promoting a run's checkpoint."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from fracture.settings import Settings
from fracture.recipes.config import TrainConfig
from fracture.train.events import RunStatus

RUN_COLUMNS = ["run", "state", "model", "epochs", "best metric", "monitor", "checkpoint", "error"]


def _number(value: float | None) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else round(value, 4)


def past_runs_table(runs: list[RunStatus]) -> pd.DataFrame:
    """One row per run: name, state, model, epochs done, best metric and its name."""
    return pd.DataFrame(
        [
            {
                "run": r.run_dir.name,
                "state": r.state,
                "model": r.model,
                "epochs": f"{r.epoch}/{r.epochs}" if r.epochs else "",
                "best metric": _number(r.best_metric),
                "monitor": r.monitor,
                "checkpoint": "yes" if r.best_checkpoint else "",
                "error": r.error or "",
            }
            for r in runs
        ],
        columns=RUN_COLUMNS,
    )


def launch_from_form(config: TrainConfig, settings: Settings, name: str | None = None) -> Path:
    """Validate the config and start it in a new run folder, within the job limit.

    Raises:
        ConfigError: an invalid field.
        WeightsUnavailableError: pretrained weights this server does not have.
        TrainingError: the server's limit of training processes is reached.
    """
    from fracture.train.launcher import launch_training, new_run_dir

    config.check_weights_available()  # validated where the process is launched (launch_training)
    settings.runs_dir.mkdir(parents=True, exist_ok=True)
    run_dir = new_run_dir(settings.runs_dir, config.model, name)
    launch_training(config, run_dir, max_jobs=settings.max_training_jobs, runs_root=settings.runs_dir)
    return run_dir


def promote_run(
    run_dir: Path, name: str, weights_dir: Path, *, make_default: bool = False, overwrite: bool = False
) -> Path:
    """Copy a run's best checkpoint into ``weights/`` (see ``fracture.checkpoints.promote.promote_checkpoint``).

    From the web UI a shipped checkpoint's name is always refused, and an
    existing promoted one is replaced only with ``overwrite`` (a confirmation box).

    Raises:
        CheckpointError: the run has no valid checkpoint, the name is not a
            plain file name, or it exists (shipped, or promoted without ``overwrite``).
    """
    from fracture.assess.card import promotion_card
    from fracture.checkpoints.promote import promote_checkpoint

    return promote_checkpoint(
        run_dir, name, weights_dir, make_default=make_default, overwrite=overwrite, protect_shipped=True,
        card_text=promotion_card,
    )
