"""Recipes: the training configurations shipped in ``fracture/recipes/``, and how a run names the one it came from.

A run records its recipe in ``TrainConfig.recipe``: the bare file name for a
shipped recipe (``fracatlas_lite0_cpu.json``), else the path it was given;
empty when it started from the defaults. A run's own ``config.json`` is never
recorded as its recipe (the Train page launches runs with one), so a model
card's reproduce command (:func:`reproduce_command`) names the real source.
"""
from __future__ import annotations

import dataclasses
import json
import shlex
from pathlib import Path
from typing import Any

from fracture.recipes.config import AugmentConfig, TrainConfig

RECIPES_DIR = Path(__file__).resolve().parent
#: Fields a reproduce command leaves out: where things are on this machine, and bookkeeping.
_NOT_REPRODUCED = {"data", "cache_dir", "device", "workers", "notes", "recipe"}


def list_recipes() -> list[str]:
    """Names of the shipped recipes (every ``*.json`` in ``fracture/recipes/``), sorted."""
    return sorted(p.name for p in RECIPES_DIR.glob("*.json"))


def recipe_path(ref: str) -> Path:
    """The file a recipe reference names (a bare name lives in ``fracture/recipes/``)."""
    return RECIPES_DIR / ref if "/" not in ref and "\\" not in ref else Path(ref)


def recipe_ref(path: str | Path) -> str:
    """How a run records the recipe file it was started from (see the module docstring)."""
    path = Path(path)
    try:
        if path.resolve().parent == RECIPES_DIR:
            return path.name
    except OSError:
        pass
    return str(path)


def load_recipe(ref: str) -> TrainConfig:
    """A shipped recipe (or a recipe file) as a config that records where it came from.

    Raises:
        ConfigError: a missing file, bad JSON or an unknown option.
    """
    config = TrainConfig.from_json(recipe_path(ref))
    config.recipe = recipe_ref(recipe_path(ref))
    return config


def config_overrides(config: TrainConfig, base: TrainConfig) -> dict[str, Any]:
    """Fields (``augment.x`` for augmentation) where ``config`` differs from ``base``."""
    out: dict[str, Any] = {}
    for field in dataclasses.fields(TrainConfig):
        if field.name == "augment":
            for aug in dataclasses.fields(AugmentConfig):
                value = getattr(config.augment, aug.name)
                if value != getattr(base.augment, aug.name):
                    out[f"augment.{aug.name}"] = value
        elif getattr(config, field.name) != getattr(base, field.name):
            out[field.name] = getattr(config, field.name)
    return out


def reproduce_command(train_config: dict[str, Any]) -> str:
    """``python -m fracture train ...`` that reruns a stored ``train_config``: its recipe plus the
    flags that differ from it (from the defaults when it has no recipe); ``--data DATA`` unless
    the recipe names its dataset."""
    config = TrainConfig.from_dict(dict(train_config))
    parts = ["python -m fracture train"]
    base = TrainConfig()
    if config.recipe:
        path = recipe_path(config.recipe)
        parts.append(f"--config {shlex.quote(str(path.relative_to(RECIPES_DIR.parents[1])) if path.parent == RECIPES_DIR else str(path))}")
        if path.is_file():
            base = TrainConfig.from_json(path)
    if not base.data:
        parts.append("--data DATA")
    for name, value in config_overrides(config, base).items():
        if name in _NOT_REPRODUCED:
            continue
        flag = "--" + (name.replace("augment.", "aug_") if name.startswith("augment.") else name).replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else "--no-" + flag[2:])
        elif value is None:
            continue
        elif isinstance(value, (list, dict)):
            parts.append(f"{flag} {shlex.quote(json.dumps(value))}")
        else:
            parts.append(f"{flag} {shlex.quote(str(value))}")
    parts.append("--out RUN_DIR")
    return " ".join(parts)
