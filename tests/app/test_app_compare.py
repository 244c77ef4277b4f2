"""AppTest: the Compare page — one row per model plus the ensemble, and its charts."""
from __future__ import annotations

import pytest

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


@pytest.mark.slow
def test_two_models_give_two_rows_plus_the_ensemble_and_every_chart(app_home):
    for seed, name in enumerate(RUNS):
        write_tiny_run(app_home / "runs", name, seed=seed)
    labels = [f"{name} (run)" for name in RUNS]
    at = run_page(PAGE, model=RUNS[0], query={"models": labels, "split": "test"})
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
    at = run_page(PAGE, model=RUNS[0], query={"level": "study"})
    assert_no_exception(at)
    table = at.dataframe[0].value
    assert list(table.index) == [label]
    from fracture.data import open_dataset

    test = open_dataset(app_home / "demo").subset("test")
    assert table["n"].iloc[0] == test["study_id"].nunique()


def test_a_model_from_other_data_is_warned_about_and_reliability_is_drawn(app_home, monkeypatch):
    """Issue 11: a FracAtlas model on the demo set gets a plain warning; calibrated curves are drawn.
    No FracAtlas on this machine (isolated), so Compare stays on the sidebar's demo set."""
    _isolate_data(monkeypatch, app_home)
    write_tiny_run(app_home / "runs", RUNS[0])
    make_foreign_and_calibrated(app_home / "runs" / RUNS[0])
    label = f"{RUNS[0]} (run)"
    at = run_page(PAGE, model=RUNS[0], query={"split": "test"})
    assert_no_exception(at)
    warnings = " | ".join(w.value for w in at.warning)
    assert f"{label}: This model was trained on FracAtlas; the demo dataset is synthetic" in warnings, warnings
    titles = [c.proto.spec for c in at.get("plotly_chart")]
    reliability = [t for t in titles if "Reliability diagram" in t]
    assert len(reliability) == 1
    assert "uncalibrated (ECE" in reliability[0]  # the dotted before-calibration line, temperature 2


def _isolate_data(monkeypatch, app_home, fracatlas=None):
    """Only this test's folders are offered: the demo set, and a FracAtlas (or none)."""
    monkeypatch.setenv("FRACTURE_DATA_ROOTS", str(app_home / "demo"))
    monkeypatch.setenv("FRACTURE_FRACATLAS", str(fracatlas or app_home / "no-fracatlas"))


def _as_fracatlas_model(run_dir, fracatlas):
    """Rewrite a tiny run's checkpoint as trained on FracAtlas (its class names and layout)."""
    from fracture.checkpoints.format import load_checkpoint, save_checkpoint
    from fracture.data import open_dataset

    path = run_dir / "best.safetensors"
    model, meta = load_checkpoint(path)
    meta["train_config"] = {**meta["train_config"], "data": str(fracatlas)}
    meta.update(dataset_layout="fracatlas", class_names=list(open_dataset(fracatlas).class_names))
    save_checkpoint(path, model, meta)


def test_the_default_dataset_matches_the_models_and_the_ensemble_keeps_one_question(app_home, tmp_path,
                                                                                    monkeypatch):
    from _fake_datasets import make_fracatlas

    fracatlas = make_fracatlas(tmp_path / "FracAtlas", n_images=60)
    _isolate_data(monkeypatch, app_home, fracatlas)
    for seed, name in enumerate(RUNS):
        write_tiny_run(app_home / "runs", name, seed=seed)
    _as_fracatlas_model(app_home / "runs" / RUNS[0], fracatlas)
    fracatlas_label, demo_label = f"{RUNS[0]} (run)", f"{RUNS[1]} (run)"
    at = run_page(PAGE, model=RUNS[0], query={"split": "test"})  # the sidebar says: demo set
    assert_no_exception(at)
    data = at.selectbox(key=f"compare-data-{fracatlas_label}")
    assert data.value == str(fracatlas.resolve()), "a FracAtlas model is evaluated on FracAtlas"
    assert not any("trained on FracAtlas" in w.value for w in at.warning)
    assert any("trained on FracAtlas, so they are evaluated on it" in c.value for c in at.caption)
    # Both models: they disagree on the data, so the sidebar's dataset; no ensemble of two questions.
    at.multiselect(key="models").set_value([fracatlas_label, demo_label]).run()
    assert_no_exception(at)
    table = at.dataframe[0].value
    assert list(table.index) == [fracatlas_label, demo_label], "no ensemble across class names"
    assert any(f"{fracatlas_label} is left out of the ensemble" in i.value for i in at.info)


def test_without_fracatlas_here_the_sidebar_dataset_stays(app_home, tmp_path, monkeypatch):
    from _fake_datasets import make_fracatlas

    fracatlas = make_fracatlas(tmp_path / "FracAtlas", n_images=60)
    _isolate_data(monkeypatch, app_home)  # FRACTURE_FRACATLAS points at nothing
    write_tiny_run(app_home / "runs", RUNS[0])
    _as_fracatlas_model(app_home / "runs" / RUNS[0], fracatlas)
    label = f"{RUNS[0]} (run)"
    at = run_page(PAGE, model=RUNS[0], query={"split": "test"})
    assert_no_exception(at)
    assert at.selectbox(key=f"compare-data-{label}").value == str((app_home / "demo").resolve())
    assert any("trained on FracAtlas; the demo dataset is synthetic" in w.value for w in at.warning)
