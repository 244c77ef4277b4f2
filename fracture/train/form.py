"""The Train page's form, described as data: one entry per :class:`TrainConfig` field.

The page (``fracture/ui/train_form.py``) draws a widget for every entry of
:data:`FIELDS` and nothing else; every other field is in :data:`HIDDEN` with
the reason it is not on the page. A test checks that the two cover
``TrainConfig`` exactly, so a new training option cannot be silently missing
from the page. The form starts from a base config (the defaults, or a recipe
from ``fracture/recipes/``) and what the user changes overrides it
(:func:`config_from_form`), so every recipe, the shipped model's included,
can be rerun from the page.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fracture.preprocess.ops import RESIZE_MODES
from fracture.recipes.config import (
    BALANCING, MODES, MONITORS, OPTIMIZERS, SCHEDULERS, THRESHOLD_RULES, TrainConfig,
)

DEFAULTS_CHOICE = "(defaults)"
OWN_STEPS = "(the recipe's own steps)"
#: The page's first choice: a one-minute demo recipe (frozen ImageNet EfficientNet-Lite0 features and a
#: trained head), when it is present and its weights are installed; else the TrainConfig defaults.
QUICK_RECIPE = "quick_demo.json"


@dataclass(frozen=True)
class FormField:
    """One widget: the config field it sets (``augment.x`` for augmentation) and how to draw it.

    ``widget`` is one of ``select``, ``radio``, ``checkbox``, ``number``,
    ``select_slider``, ``slider``, ``text``, ``model`` (the registry's
    names) or ``preset`` (a preprocessing preset).
    """

    name: str
    label: str
    widget: str
    options: tuple = ()
    low: float | None = None
    high: float | None = None
    help: str = ""
    advanced: bool = False

    @property
    def key(self) -> str:
        """The Streamlit widget key (``train-image-size`` for ``image_size``)."""
        return "train-" + self.name.replace("augment.", "aug-").replace("_", "-")


FIELDS: tuple[FormField, ...] = (
    FormField("model", "Model", "model"),
    FormField("mode", "Mode", "radio", MODES,
              help="finetune trains every layer; frozen trains only the head on fixed features."),
    FormField("pretrained", "ImageNet weights", "checkbox",
              help="Start from pretrained weights (offline copies only; on by default where they exist)."),
    FormField("multitask", "Multi-task body-part head", "checkbox",
              help="Also predict the body part; its 32-d embedding feeds the fracture head."),
    FormField("image_size", "Image size (px)", "select_slider",
              (64, 96, 128, 160, 192, 224, 256, 288, 320, 384, 448, 512)),
    FormField("resize_mode", "Resize", "select", RESIZE_MODES, help="letterbox keeps the aspect ratio (no centre crop)."),
    FormField("preprocess", "Preprocessing", "preset"),
    FormField("in_chans", "Input channels", "radio", (3, 1)),
    FormField("epochs", "Epochs", "number", low=1, high=500),
    FormField("batch_size", "Batch size", "select_slider", (4, 8, 16, 32, 64, 128, 256)),
    FormField("lr", "Learning rate", "select_slider", (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2)),
    FormField("optimizer", "Optimizer", "select", OPTIMIZERS),
    FormField("scheduler", "Scheduler", "select", SCHEDULERS),
    FormField("balancing", "Class balancing", "select", BALANCING),
    FormField("monitor", "Best checkpoint by", "select", MONITORS),
    FormField("threshold_rule", "Threshold rule", "select", THRESHOLD_RULES, help="Chosen on the validation split only."),
    FormField("weight_decay", "Weight decay", "number", low=0.0, high=1.0, advanced=True),
    FormField("early_stopping_patience", "Early stopping patience (0 = off)", "number", low=0, high=100, advanced=True),
    FormField("target_sensitivity", "Target sensitivity (rule 'sensitivity')", "number", low=0.5, high=0.999,
              advanced=True),
    FormField("max_train_images", "Max training images (0 = all)", "number", low=0, high=10_000_000, advanced=True),
    FormField("restart_period", "Restart period (epochs)", "number", low=1, high=100, advanced=True),
    FormField("warmup_fraction", "Warm-up fraction", "number", low=0.0, high=0.9, advanced=True),
    FormField("freeze_stages", "Frozen stages (finetune)", "number", low=0, high=10, advanced=True),
    FormField("seed", "Seed", "number", low=0, high=2**31 - 1, advanced=True),
    FormField("tta_hflip", "Flip TTA at evaluation", "checkbox", advanced=True),
    FormField("eval_test", "Evaluate on test at the end", "checkbox", advanced=True),
    FormField("box_loss_weight", "Box-guidance loss weight (0 = off)", "number", low=0.0, high=10.0, advanced=True,
              help="Pull the class-activation map into annotated fracture boxes (finetune, datasets with boxes)."),
    FormField("ema_decay", "EMA of the weights (0 = off)", "number", low=0.0, high=0.9999, advanced=True),
    FormField("augment.hflip", "Augment: horizontal flip", "checkbox", advanced=True),
    FormField("augment.vflip", "Augment: vertical flip", "checkbox", advanced=True),
    FormField("augment.rotation_deg", "Rotation (°)", "slider", low=0.0, high=45.0, advanced=True),
    FormField("augment.shift", "Shift", "slider", low=0.0, high=0.5, advanced=True),
    FormField("augment.zoom", "Zoom", "slider", low=0.0, high=0.5, advanced=True),
    FormField("augment.brightness", "Brightness", "slider", low=0.0, high=0.5, advanced=True),
    FormField("augment.contrast", "Contrast", "slider", low=0.0, high=0.5, advanced=True),
    FormField("augment.burn_ins", "Burn-in markers/labels (share of images)", "slider", low=0.0, high=1.0,
              advanced=True, help="Paste random L/R lead markers and text labels so the model learns to ignore them."),
    FormField("notes", "Notes", "text", advanced=True),
)

#: Fields deliberately not on the page, and why (they keep the base config's value).
HIDDEN: dict[str, str] = {
    "data": "the sidebar's dataset",
    "recipe": "set by the 'start from recipe' choice",
    "weights_path": "a file on the server: give it in a recipe or on the command line",
    "init_checkpoint": "a file on the server: give it in a recipe or on the command line",
    "cache_dir": "a server setting (FRACTURE_CACHE_DIR)",
    "device": "the server's (auto: CUDA when present)",
    "workers": "the server's CPU count",
    "amp": "a speed setting of the server's GPU",
    "channels_last": "a speed setting of the server's GPU",
    "compile": "a speed setting of the server's GPU",
    "checkpoint_half": "a storage setting, kept from the recipe",
    "split_seed": "fixed by the dataset's splits, kept from the recipe",
}


def recipe_choices() -> list[str]:
    """:data:`DEFAULTS_CHOICE` and every recipe in ``fracture/recipes/``."""
    from fracture.recipes.catalogue import list_recipes

    return [DEFAULTS_CHOICE, *list_recipes()]


def default_choice() -> str:
    """:data:`QUICK_RECIPE` when it exists and its model has offline weights, else the defaults."""
    from fracture.recipes.catalogue import list_recipes, load_recipe

    if QUICK_RECIPE in list_recipes() and _offline(load_recipe(QUICK_RECIPE).model):
        return QUICK_RECIPE
    return DEFAULTS_CHOICE


def base_config(choice: str, data: str | Path) -> TrainConfig:
    """The config the form starts from: :data:`DEFAULTS_CHOICE` or a recipe name, on ``data``."""
    from fracture.recipes.catalogue import load_recipe

    config = TrainConfig() if choice == DEFAULTS_CHOICE else load_recipe(choice)
    config.data = str(data)
    return config


def _get(config: TrainConfig, name: str) -> Any:
    if name.startswith("augment."):
        return getattr(config.augment, name.split(".", 1)[1])
    return getattr(config, name)


def preset_name(steps: list[dict]) -> str:
    """The preset whose steps these are, else :data:`OWN_STEPS`."""
    from fracture.preprocess.pipeline import list_presets

    return next((name for name, spec in list_presets().items() if list(spec) == list(steps)), OWN_STEPS)


def form_values(config: TrainConfig) -> dict[str, Any]:
    """The widget values that show ``config`` (keyed by field name)."""
    values = {field.name: _get(config, field.name) for field in FIELDS}
    values["preprocess"] = preset_name(config.preprocess)
    values["pretrained"] = bool(config.pretrained) if config.pretrained is not None else _offline(config.model)
    values["target_sensitivity"] = config.target_sensitivity or 0.9
    values["max_train_images"] = config.max_train_images or 0
    return values


def options(field: FormField, value: Any) -> tuple:
    """The field's options, with ``value`` added where a recipe uses one the list lacks."""
    if not field.options or value in field.options:
        return field.options
    try:
        return tuple(sorted((*field.options, value)))
    except TypeError:
        return (*field.options, value)


MODE_LR = {"frozen": 1e-3, "finetune": 3e-4}
"""The learning rate a mode starts from when the form changes the mode but not the rate."""


def config_from_form(base: TrainConfig, values: dict[str, Any]) -> TrainConfig:
    """``base`` with the form's values; the recipe it came from stays recorded.

    Raises:
        ConfigError: an unknown field name.
    """
    from fracture.preprocess.pipeline import list_presets

    merged = base.to_dict()
    values = dict(values)
    if values.get("mode", base.mode) != base.mode and values.get("lr", base.lr) == base.lr:
        # the mode changed and the rate was left alone: take the new mode's rate (a fine-tune at a
        # frozen head's rate diverges)
        values["lr"] = MODE_LR[values["mode"]]
    for name, value in values.items():
        if name == "preprocess":
            value = base.preprocess if value == OWN_STEPS else list(list_presets()[value])
        elif name == "target_sensitivity":
            value = float(value) if values.get("threshold_rule") == "sensitivity" else base.target_sensitivity
        elif name == "max_train_images":
            value = int(value) or None
        if name.startswith("augment."):
            merged["augment"][name.split(".", 1)[1]] = value
        else:
            merged[name] = value
    return TrainConfig.from_dict(merged)


def model_choices() -> tuple[list[str], dict[str, str]]:
    """Model names for the picker and a one-line description of each."""
    from fracture.models import list_models

    infos = list_models()
    help_lines = {
        info.name: (f"**{info.name}** ({info.default_image_size} px): {info.description}"
                    + ("" if info.offline_weights else " — no offline ImageNet weights"))
        for info in infos
    }
    return [info.name for info in infos], help_lines


def _offline(model: str) -> bool:
    from fracture.models import list_models

    return any(info.name == model and info.offline_weights for info in list_models())
