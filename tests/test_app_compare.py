"""AppTest: the Compare page — one row per model plus the ensemble, and its charts."""
from __future__ import annotations

from app_support import (  # noqa: F401  (fixtures)
    app_home,
    demo_template,
    fresh_app_home,
    assert_no_exception,
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
    # bars, ROC, three confusion matrices, body-part AUC, training curves
    assert len(charts) == 7, len(charts)


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
