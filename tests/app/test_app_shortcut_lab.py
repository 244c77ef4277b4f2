"""AppTest: the Shortcut Lab — an X-ray with a marker, label, border... and how probability and heatmap move."""
from __future__ import annotations

import pytest

from app_support import (  # noqa: F401  (fixtures)
    app_home,
    assert_no_exception,
    demo_template,
    fresh_app_home,
    run_page,
    write_tiny_run,
)

PAGE = "pages/7_Shortcut_Lab.py"
RUN = "20260101-000000-small_cnn"


def _pictures(at) -> list[str]:
    import json

    return [t["source"] for chart in at.get("plotly_chart") for t in json.loads(chart.proto.spec)["data"]
            if t.get("type") == "image"]


def _store_former_names_block(run_dir) -> None:
    """A ``meta["shortcuts"]`` block as v5 stores it: names with spaces (before they became identifiers)."""
    from fracture.checkpoints.format import read_checkpoint_meta, update_checkpoint_meta

    path = run_dir / "best.safetensors"
    meta = read_checkpoint_meta(path)
    meta["shortcuts"] = {"n": 5, "split": "val", "command": "python -m fracture shortcuts ...", "perturbations": {
        "lead marker": {"mean_abs_dp": 0.25, "flip_rate": 0.2, "heatmap_on_stamp": 0.4},
        "jpeg": {"mean_abs_dp": 0.125, "flip_rate": 0.0}}}
    update_checkpoint_meta(path, meta)


@pytest.mark.slow
def test_a_marker_moves_probability_and_the_page_says_where_the_heatmap_went(app_home):
    _store_former_names_block(write_tiny_run(app_home / "runs", RUN))
    at = run_page(PAGE, model=RUN)
    assert_no_exception(at)
    kinds = at.selectbox(key="shortcut-kind")
    assert kinds.value == "lead_marker" and "lead marker" in kinds.options, "an identifier, shown by its label"
    metrics = {m.label: m.value for m in at.metric}
    original = next(v for k, v in metrics.items() if k.startswith("Original P("))
    altered = metrics["With lead marker"]
    assert 0 <= float(original) <= 1 and 0 <= float(altered) <= 1
    assert metrics["Label"] in ("flipped", "unchanged")
    assert metrics["Heatmap maximum"] in ("on it", "elsewhere")
    first = _pictures(at)
    assert len(first) >= 2, "the original and the altered X-ray"
    at.selectbox(key="shortcut-marker").set_value("R").run()
    assert_no_exception(at)
    assert _pictures(at) != first, "another marker, another picture"
    at.selectbox(key="shortcut-kind").set_value("inversion").run()
    assert_no_exception(at)
    metrics = {m.label: m.value for m in at.metric}
    assert "With inversion" in metrics and "Heatmap maximum" not in metrics
    table = at.dataframe[-1].value  # the stored block, its former names read as today's
    assert list(table["alteration"]) == ["lead marker", "JPEG artefacts"]
    assert list(table["mean |dP|"]) == ["0.250", "0.125"]
    assert list(table["labels flipped"]) == ["20.0%", "0.0%"] and list(table["heatmap max on it"]) == ["40.0%", "—"]
    assert any("5 val-split images" in c.value for c in at.caption)


def test_without_a_model_only_the_altered_image_is_shown(app_home):
    at = run_page(PAGE)
    assert_no_exception(at)
    assert any("No model is active" in i.value for i in at.info)
    assert len(_pictures(at)) == 1
