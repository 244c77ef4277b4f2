"""The Train page's form, drawn from :mod:`fracture.train.form` (one widget per visible TrainConfig field).

"Start from recipe" picks the base (the defaults or any file in
``fracture/recipes/``); the widgets show it and whatever is changed overrides
it, so every recipe can be rerun from the page and the run records the
recipe it came from.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from fracture.recipes.config import TrainConfig
from fracture.train.form import (
    FIELDS, OWN_STEPS, FormField, base_config, config_from_form, default_choice, form_values, model_choices,
    options, recipe_choices,
)

RECIPE_KEY = "train-recipe"
RUN_NAME_KEY = "train-run-name"
_BASE_KEY = "train-form-base"  # (recipe, dataset) the widgets were last filled from


def _fill_widgets(choice: str, dataset_root: Path) -> None:
    """Put the base config's values into the widgets' state (when the recipe or the dataset changes)."""
    values = form_values(base_config(choice, dataset_root))
    for field in FIELDS:
        st.session_state[field.key] = values[field.name]
    st.session_state[_BASE_KEY] = (choice, str(dataset_root))


def _widget(container, field: FormField, model_help: str, presets: list[str]) -> None:
    value = st.session_state[field.key]
    kw: dict[str, Any] = {"key": field.key, "help": field.help or None}
    if field.widget == "model":
        names, _ = model_choices()
        container.selectbox(field.label, names, **{**kw, "help": model_help})
    elif field.widget == "radio":
        container.radio(field.label, options(field, value), horizontal=True, **kw)
    elif field.widget == "select":
        container.selectbox(field.label, options(field, value), **kw)
    elif field.widget == "checkbox":
        container.checkbox(field.label, **kw)
    elif field.widget == "select_slider":
        fmt = (lambda v: f"{v:.0e}") if field.name == "lr" else str
        container.select_slider(field.label, options(field, value), format_func=fmt, **kw)
    elif field.widget == "number":
        kind = type(value)
        container.number_input(field.label, kind(field.low), kind(field.high),
                               format="%.0e" if field.name == "weight_decay" else None, **kw)
    elif field.widget == "slider":
        container.slider(field.label, float(field.low), float(field.high), **kw)
    elif field.widget == "preset":
        container.selectbox(field.label, presets + ([OWN_STEPS] if value == OWN_STEPS else []), **kw)
    else:  # text
        container.text_input(field.label, **kw)


def _rows(fields: list[FormField], model_help: str, presets: list[str], width: int = 4) -> None:
    """The fields in rows of ``width``; checkboxes after them, two per row: a checkbox's label is its only
    text and must stay whole at 1280 px ("Multi-task body-part head" did not fit a quarter of the form)."""
    boxes = [f for f in fields if f.widget == "checkbox"]
    others = [f for f in fields if f.widget != "checkbox"]
    for start in range(0, len(others), width):
        columns = st.columns(width)
        for column, field in zip(columns, others[start : start + width]):
            _widget(column, field, model_help, presets)
    per_row = max(1, width // 2)
    for start in range(0, len(boxes), per_row):
        columns = st.columns(per_row)
        for column, field in zip(columns, boxes[start : start + per_row]):
            _widget(column, field, model_help, presets)


def train_form(dataset_root: Path) -> TrainConfig | None:
    """Draw the form; return the config (not validated yet) when it is submitted, else None."""
    from fracture.preprocess.pipeline import list_presets

    choices = recipe_choices()
    if st.session_state.get(RECIPE_KEY) not in choices:
        st.session_state[RECIPE_KEY] = default_choice()
    choice = st.selectbox(
        "Start from recipe", choices, key=RECIPE_KEY,
        help="The defaults, or a recipe from fracture/recipes/; the fields below start from it and what you "
        "change overrides it. The run records the recipe it came from.",
    )
    # refill when the recipe or dataset changed, or when Streamlit dropped the widgets' state
    # (it forgets a widget's value once a run on another page did not draw it)
    if st.session_state.get(_BASE_KEY) != (choice, str(dataset_root)) \
            or any(field.key not in st.session_state for field in FIELDS):
        _fill_widgets(choice, dataset_root)
    _, help_lines = model_choices()
    presets = list(list_presets())
    with st.form("train_form"):
        st.markdown(f"**Dataset:** `{dataset_root}` (change it in the sidebar)")
        st.text_input("Run name (optional)", key=RUN_NAME_KEY, max_chars=40,
                      help="Shown in the run's folder name, e.g. 'baseline' or 'clahe-test'.")
        _rows([f for f in FIELDS if not f.advanced], "\n\n".join(help_lines.values()), presets)
        with st.expander("Advanced"):
            _rows([f for f in FIELDS if f.advanced], "", presets)
        submitted = st.form_submit_button("▶ Start training", type="primary", key="train-start")
    if not submitted:
        return None
    values = {field.name: st.session_state[field.key] for field in FIELDS}
    return config_from_form(base_config(choice, dataset_root), values)
