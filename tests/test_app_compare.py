"""AppTest: the Compare page — one row per model plus the ensemble, and its charts."""
from __future__ import annotations

from app_support import (  # noqa: F401  (fixtures)
    app_home,
    demo_template,
    fresh_app_home,
    assert_no_exception,
    make_foreign_and_calibrated,
    run_page,
    write_tiny_run,
)

PAGE = "pages/5_Compare.py"
RUNS = ("20260101-000000-small_cnn", "20260101-000001-small_cnn")


def test_two_models_give_two_rows_plus_the_ensemble_and_every_chart(app_home):
    for seed, name in enumerate(RUNS):
        write_tiny_run(app_home / "runs", name, seed=seed)
    labels = [f"{name} (run)" for name in RUNS]
    at = run_page(PAGE, model=labels[0], query={"models": labels, "split": "test"})
    assert_no_exception(at)
    table = at.dataframe[0].value
    assert list(table.index) == [*labels, "ensemble of 2 (mean)"]
    assert table["n"].nunique() == 1 and table["n"].iloc[0] > 0
    assert ((table["roc_auc"] >= 0) & (table["roc_auc"] <= 1)).all()
    charts = at.get("plotly_chart")
    # bars, ROC, reliability, three confusion matrices, body-part AUC, training curves
    assert len(charts) == 8, len(charts)
    assert not any("trained on" in w.value for w in at.warning)


def test_study_level_and_a_single_model(app_home):
    write_tiny_run(app_home / "runs", RUNS[0])
    label = f"{RUNS[0]} (run)"
    at = run_page(PAGE, model=label, query={"level": "study"})
    assert_no_exception(at)
    table = at.dataframe[0].value
    assert list(table.index) == [label]
    from fracture.data import open_dataset

    test = open_dataset(app_home / "demo").subset("test")
    assert table["n"].iloc[0] == test["study_id"].nunique()


def test_a_model_from_other_data_is_warned_about_and_reliability_is_drawn(app_home):
    """Issue 11: a FracAtlas model on the demo set gets a plain warning; calibrated curves are drawn."""
    write_tiny_run(app_home / "runs", RUNS[0])
    make_foreign_and_calibrated(app_home / "runs" / RUNS[0])
    label = f"{RUNS[0]} (run)"
    at = run_page(PAGE, model=label, query={"split": "test"})
    assert_no_exception(at)
    warnings = " | ".join(w.value for w in at.warning)
    assert f"{label}: This model was trained on FracAtlas; the demo dataset is synthetic" in warnings, warnings
    titles = [c.proto.spec for c in at.get("plotly_chart")]
    reliability = [t for t in titles if "Reliability diagram" in t]
    assert len(reliability) == 1
    assert "uncalibrated (ECE" in reliability[0]  # the dotted before-calibration line, temperature 2
