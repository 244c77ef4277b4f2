"""The Train page's form: every field of :class:`TrainConfig`, with quick defaults.

The defaults are chosen to finish in about a minute on two CPU cores on the
demo dataset (a small CNN at 128 px for a few epochs); everything a recipe or
the CLI can set is reachable under "Advanced".
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from fracture.settings import Settings
from fracture.train.config import (
    BALANCING,
    MODES,
    MONITORS,
    OPTIMIZERS,
    RESIZE_MODES,
    SCHEDULERS,
    THRESHOLD_RULES,
    AugmentConfig,
    TrainConfig,
)
from fracture.train.events import RunStatus
from fracture.train.launcher import launch_training, new_run_dir

#: The quick defaults of the form (the TrainConfig defaults are for real training):
#: ImageNet EfficientNet-Lite0 features (shipped offline) with a trained head,
#: at 160 px; on the demo set most of the minute goes into extracting features.
QUICK_DEFAULTS: dict[str, Any] = {
    "model": "efficientnet_lite0",
    "mode": "frozen",
    "pretrained": True,
    "image_size": 160,
    "epochs": 10,
    "batch_size": 32,
    "lr": 3e-3,
    "scheduler": "onecycle",
    "preprocess": "none",
}
#: Without offline pretrained weights, a small CNN trained from scratch is the quick choice.
FALLBACK_DEFAULTS: dict[str, Any] = {
    "model": "small_cnn", "mode": "finetune", "pretrained": False, "image_size": 128, "epochs": 5,
    "batch_size": 16, "lr": 1e-3,
}
IMAGE_SIZES = (64, 96, 128, 160, 192, 224, 256, 288, 320, 384, 448, 512)
BATCH_SIZES = (4, 8, 16, 32, 64, 128)
LEARNING_RATES = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2)


def model_choices() -> tuple[list[str], dict[str, str]]:
    """Model names for the picker and a one-line description of each."""
    from fracture.models import list_models

    infos = list_models()
    names = [info.name for info in infos]
    help_lines = {
        info.name: (f"**{info.name}** ({info.default_image_size} px): {info.description}"
                    + ("" if info.offline_weights else " — no offline ImageNet weights"))
        for info in infos
    }
    return names, help_lines


def quick_defaults() -> dict[str, Any]:
    """The form's defaults: :data:`QUICK_DEFAULTS`, or the small-CNN fallback when the
    default model's pretrained weights are not available offline."""
    from fracture.models import list_models

    offline = {info.name: info.offline_weights for info in list_models()}
    if offline.get(QUICK_DEFAULTS["model"]):
        return dict(QUICK_DEFAULTS)
    return {**QUICK_DEFAULTS, **FALLBACK_DEFAULTS}


def check_pretrained(config: TrainConfig) -> None:
    """Refuse ImageNet weights for a model that has none offline, before a process starts.

    Raises:
        WeightsUnavailableError: names the model and the models that have weights.
    """
    from fracture.errors import WeightsUnavailableError
    from fracture.models import list_models

    if not config.pretrained:
        return
    infos = {info.name: info for info in list_models()}
    info = infos.get(config.model)
    if info is not None and not info.offline_weights:
        have = ", ".join(name for name, i in infos.items() if i.offline_weights) or "none"
        raise WeightsUnavailableError(
            f"{config.model}: no pretrained weights are available offline on this server "
            f"(models with offline weights: {have}); untick 'ImageNet weights' or pick one of those"
        )


def _index(options: tuple | list, value: Any) -> int:
    return list(options).index(value) if value in options else 0


def train_form(dataset_root: Path) -> TrainConfig | None:
    """Draw the form; return a validated-later config when it is submitted, else None."""
    from fracture.preprocess.pipeline import list_presets

    names, help_lines = model_choices()
    presets = list_presets()
    base = TrainConfig()
    quick = quick_defaults()
    with st.form("train_form"):
        st.markdown(f"**Dataset:** `{dataset_root}` (change it in the sidebar)")
        c1, c2, c3, c4 = st.columns(4)
        model = c1.selectbox("Model", names, key="train-model", index=_index(names, quick["model"]),
                             help="\n\n".join(help_lines.values()))
        mode = c2.radio("Mode", MODES, key="train-mode", index=_index(MODES, quick["mode"]), horizontal=True,
                        help="finetune trains every layer; frozen trains only the head on fixed features.")
        pretrained = c3.checkbox("ImageNet weights", key="train-pretrained", value=quick["pretrained"],
                                 help="Start from pretrained weights (offline copies only).")
        multitask = c4.checkbox("Multi-task body-part head", value=False,
                                help="Also predict the body part; its 32-d embedding feeds the fracture head.")
        c1, c2, c3, c4 = st.columns(4)
        image_size = c1.select_slider("Image size (px)", IMAGE_SIZES, key="train-image-size", value=quick["image_size"])
        resize_mode = c2.selectbox("Resize", RESIZE_MODES, index=_index(RESIZE_MODES, base.resize_mode),
                                   help="letterbox keeps the aspect ratio (no centre crop).")
        preset = c3.selectbox("Preprocessing", list(presets), index=_index(list(presets), quick["preprocess"]))
        in_chans = c4.radio("Input channels", (3, 1), index=0, horizontal=True, key="train-in-chans")
        c1, c2, c3, c4 = st.columns(4)
        epochs = c1.number_input("Epochs", 1, 200, quick["epochs"], key="train-epochs")
        batch_size = c2.select_slider("Batch size", BATCH_SIZES, key="train-batch-size", value=quick["batch_size"])
        lr = c3.select_slider("Learning rate", LEARNING_RATES, value=quick["lr"],
                              format_func=lambda v: f"{v:.0e}")
        optimizer = c4.selectbox("Optimizer", OPTIMIZERS, index=_index(OPTIMIZERS, base.optimizer))
        c1, c2, c3, c4 = st.columns(4)
        scheduler = c1.selectbox("Scheduler", SCHEDULERS, key="train-scheduler", index=_index(SCHEDULERS, quick["scheduler"]))
        balancing = c2.selectbox("Class balancing", BALANCING, index=_index(BALANCING, base.balancing))
        monitor = c3.selectbox("Best checkpoint by", MONITORS, index=_index(MONITORS, base.monitor))
        threshold_rule = c4.selectbox("Threshold rule", THRESHOLD_RULES,
                                      index=_index(THRESHOLD_RULES, base.threshold_rule),
                                      help="Chosen on the validation split only.")
        with st.expander("Advanced"):
            a1, a2, a3, a4 = st.columns(4)
            weight_decay = a1.number_input("Weight decay", 0.0, 1.0, base.weight_decay, format="%.0e")
            patience = a2.number_input("Early stopping patience (0 = off)", 0, 100, base.early_stopping_patience)
            target_sensitivity = a3.number_input("Target sensitivity (rule 'sensitivity')", 0.5, 0.999, 0.9)
            max_train = a4.number_input("Max training images (0 = all)", 0, 1_000_000, 0)
            a1, a2, a3, a4 = st.columns(4)
            restart_period = a1.number_input("Restart period (epochs)", 1, 100, base.restart_period)
            warmup = a2.number_input("Warm-up fraction", 0.0, 0.9, base.warmup_fraction)
            freeze_stages = a3.number_input("Frozen stages (finetune)", 0, 10, base.freeze_stages)
            seed = a4.number_input("Seed", 0, 2**31 - 1, base.seed)
            a1, a2, a3, a4 = st.columns(4)
            tta = a1.checkbox("Flip TTA at evaluation", value=base.tta_hflip)
            eval_test = a2.checkbox("Evaluate on test at the end", value=base.eval_test)
            hflip = a3.checkbox("Augment: horizontal flip", value=base.augment.hflip)
            vflip = a4.checkbox("Augment: vertical flip", value=base.augment.vflip)
            a1, a2, a3, a4, a5 = st.columns(5)
            rotation = a1.slider("Rotation (°)", 0.0, 45.0, base.augment.rotation_deg)
            shift = a2.slider("Shift", 0.0, 0.5, base.augment.shift)
            zoom = a3.slider("Zoom", 0.0, 0.5, base.augment.zoom)
            brightness = a4.slider("Brightness", 0.0, 0.5, base.augment.brightness)
            contrast = a5.slider("Contrast", 0.0, 0.5, base.augment.contrast)
            notes = st.text_input("Notes", value="")
        submitted = st.form_submit_button("▶ Start training", type="primary", key="train-start")
    if not submitted:
        return None
    return TrainConfig(
        data=str(dataset_root), model=model, mode=mode, pretrained=pretrained,
        in_chans=int(in_chans), image_size=int(image_size), resize_mode=resize_mode,
        preprocess=presets[preset], multitask=multitask, epochs=int(epochs),
        batch_size=int(batch_size), optimizer=optimizer, lr=float(lr),
        weight_decay=float(weight_decay), scheduler=scheduler, restart_period=int(restart_period),
        warmup_fraction=float(warmup), balancing=balancing,
        augment=AugmentConfig(hflip=hflip, vflip=vflip, rotation_deg=float(rotation), shift=float(shift),
                              zoom=float(zoom), brightness=float(brightness), contrast=float(contrast)),
        early_stopping_patience=int(patience), monitor=monitor, threshold_rule=threshold_rule,
        target_sensitivity=float(target_sensitivity) if threshold_rule == "sensitivity" else None,
        freeze_stages=int(freeze_stages), tta_hflip=tta, seed=int(seed),
        max_train_images=int(max_train) or None, eval_test=eval_test, notes=notes,
    )


def launch_from_form(config: TrainConfig, settings: Settings) -> Path:
    """Validate the config and start it in a new run folder, within the job limit.

    Raises:
        ConfigError: an invalid field.
        TrainingError: the server's limit of training processes is reached.
    """
    config.validate()
    check_pretrained(config)
    settings.runs_dir.mkdir(parents=True, exist_ok=True)
    run_dir = new_run_dir(settings.runs_dir, config.model)
    launch_training(config, run_dir, max_jobs=settings.max_training_jobs, runs_root=settings.runs_dir)
    return run_dir


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
        columns=["run", "state", "model", "epochs", "best metric", "monitor", "checkpoint", "error"],
    )


def promote_run(
    run_dir: Path, name: str, weights_dir: Path, *, make_default: bool = False, overwrite: bool = False
) -> Path:
    """Copy a run's best checkpoint into ``weights/`` (see ``fracture.promote.promote_checkpoint``).

    From the web UI a shipped checkpoint's name is always refused, and an
    existing promoted one is replaced only with ``overwrite`` (a confirmation box).

    Raises:
        CheckpointError: the run has no valid checkpoint, the name is not a
            plain file name, or it exists (shipped, or promoted without ``overwrite``).
    """
    from fracture.promote import promote_checkpoint

    return promote_checkpoint(
        run_dir, name, weights_dir, make_default=make_default, overwrite=overwrite, protect_shipped=True
    )

