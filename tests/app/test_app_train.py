"""AppTest: the Train page — the form, a real tiny background run, the job limit, past runs."""
from __future__ import annotations

import time

import pytest

from app_support import (  # noqa: F401  (fixtures)
    app_home,
    demo_template,
    fresh_app_home,
    assert_no_exception,
    metric_values,
    run_page,
    switch_to,
    write_tiny_run,
)

PAGE = "pages/3_Train.py"
RUN_DEADLINE_S = 120


@pytest.fixture
def stop_runs_after(app_home):
    """Stop any training process a test started, also when it fails half-way."""
    yield app_home / "runs"
    from fracture.train.launcher import list_runs, stop_run

    for run in list_runs(app_home / "runs"):
        stop_run(run.run_dir)


def _tiny_form(at) -> None:
    at.selectbox(key="train-model").set_value("small_cnn")
    at.radio(key="train-mode").set_value("finetune")
    at.checkbox(key="train-pretrained").set_value(False)
    at.select_slider(key="train-image-size").set_value(64)
    at.radio(key="train-in-chans").set_value(1)
    at.number_input(key="train-epochs").set_value(1)
    at.select_slider(key="train-batch-size").set_value(8)
    at.selectbox(key="train-scheduler").set_value("cosine_restarts")


@pytest.mark.slow
def test_a_tiny_run_starts_shows_progress_and_its_final_metric(app_home, stop_runs_after):
    at = run_page(PAGE)
    assert_no_exception(at)
    _tiny_form(at)
    at.button(key="train-start").click().run()
    assert_no_exception(at)
    started = any("Started run" in s.value for s in at.success) or at.session_state["train_selected_run"]
    assert started and not at.error, [e.value for e in at.error]
    # the job limit (1) refuses a second run while the first is alive
    at.button(key="train-start").click().run()
    assert any("already running" in e.value for e in at.error)
    assert at.get("progress"), "the live view shows a progress bar"
    deadline = time.time() + RUN_DEADLINE_S
    while time.time() < deadline:
        time.sleep(2)
        at.run()
        assert_no_exception(at)
        if any(md.value.endswith("— finished") for md in at.markdown):
            break
        if any(state in md.value for md in at.markdown for state in ("— failed", "— stale")):
            pytest.fail("the run failed: " + " | ".join(e.value for e in at.error))
    else:
        pytest.fail(f"the run did not finish within {RUN_DEADLINE_S} s")
    metrics = metric_values(at)
    assert 0.0 <= float(metrics["Test ROC AUC (image)"]) <= 1.0
    assert metrics["Best val_roc_auc"] != "–"
    runs = at.dataframe[-1].value if "state" in at.dataframe[-1].value else at.dataframe[0].value
    assert [state.endswith("finished") for state in runs["state"]] == [True]  # "✅ finished"
    # the finished run's checkpoint becomes the active model of the other pages
    switch_to(at, "pages/4_Predict.py").run()
    assert_no_exception(at)
    assert not any("No model is available" in i.value for i in at.info)
    assert at.session_state["sidebar_model"].endswith("(run)")


def test_past_runs_are_listed_and_a_run_can_be_promoted(app_home):
    run_dir = write_tiny_run(app_home / "runs", "20260101-000000-small_cnn")
    at = run_page(PAGE)
    assert_no_exception(at)
    table = next(df.value for df in at.dataframe if "state" in df.value.columns)
    assert list(table["run"]) == [run_dir.name]
    assert [state.endswith("finished") for state in table["state"]] == [True]  # "✅ finished"
    assert any(md.value.endswith("— finished") for md in at.markdown)
    at.text_input(key="promote-name").set_value("tiny-demo")
    at.button(key="promote-submit").click().run()
    assert_no_exception(at)
    assert (app_home / "weights" / "tiny-demo.safetensors").is_file()
    at.text_input(key="promote-name").set_value("../escape")
    at.button(key="promote-submit").click().run()
    assert any("letters, digits" in e.value for e in at.error)


def test_every_train_config_field_is_a_widget_or_deliberately_hidden():
    import dataclasses

    from fracture.recipes.config import AugmentConfig, TrainConfig
    from fracture.train.form import FIELDS, HIDDEN

    every = {f.name for f in dataclasses.fields(TrainConfig) if f.name != "augment"}
    every |= {f"augment.{f.name}" for f in dataclasses.fields(AugmentConfig)}
    shown = [f.name for f in FIELDS]
    assert len(shown) == len(set(shown))
    assert not set(shown) & set(HIDDEN), "a field is both shown and hidden"
    assert set(shown) | set(HIDDEN) == every


def test_the_form_starts_from_a_recipe_and_overrides_it(app_home):
    """Every recipe can be picked; its values fill the widgets; a change overrides it; the recipe is recorded."""
    from fracture.train.form import DEFAULTS_CHOICE, FIELDS, base_config, config_from_form, form_values
    from fracture.recipes.catalogue import list_recipes

    at = run_page(PAGE)
    assert_no_exception(at)
    for field in FIELDS:  # one widget per visible field, under its key
        assert field.key in at.session_state, field.key
    recipes = at.selectbox(key="train-recipe")
    assert recipes.options == [DEFAULTS_CHOICE, *list_recipes()]
    recipes.set_value("fracatlas_lite0_cpu.json").run()
    assert_no_exception(at)
    assert at.select_slider(key="train-image-size").value == 288
    assert at.session_state["train-epochs"] == 10
    base = base_config("fracatlas_lite0_cpu.json", "DATA")
    values = form_values(base)
    assert config_from_form(base, values).to_dict() == base.to_dict()  # unchanged form = the recipe
    changed = config_from_form(base, {**values, "epochs": 2, "augment.zoom": 0.0})
    assert changed.epochs == 2 and changed.augment.zoom == 0.0
    assert changed.recipe == "fracatlas_lite0_cpu.json" and changed.lr == base.lr



def _live_run_after_its_epochs(runs_dir, name: str, phase: str):
    """A tiny run whose epochs are done and whose (live: this process's pid) trainer is in ``phase``."""
    import os

    from fracture.train.events import PID_FILE, EventLog

    run_dir = write_tiny_run(runs_dir, name, epochs=2)
    events = (run_dir / "events.jsonl").read_text().splitlines()
    (run_dir / "events.jsonl").write_text("\n".join(events[:-1]) + "\n")  # no "finished" yet
    EventLog(run_dir).emit("phase", name=phase)
    (run_dir / PID_FILE).write_text(str(os.getpid()))
    return run_dir


def test_the_phases_after_the_epochs_are_named_with_progress_and_time_left(app_home):
    run_dir = _live_run_after_its_epochs(app_home / "runs", "20260101-000000-small_cnn",
                                         "evaluating the best checkpoint on the test split")
    at = run_page(PAGE)
    assert_no_exception(at)
    texts = [p.proto.text for p in at.get("progress")]
    assert any("after 2 epochs: evaluating the best checkpoint on the test split" in t for t in texts), texts
    metrics = metric_values(at)
    assert metrics["Test ROC AUC (image)"] == "evaluating…", "not '–' while the test split is evaluated"
    assert "step 0/" not in " ".join(texts), "not 'epoch 2/2 - step 0/3' while it evaluates"
    table = at.dataframe[-1].value if at.dataframe else None
    states = [str(s) for s in table["state"]] if table is not None and "state" in table else []
    assert any(s.endswith("running") for s in states), ("past runs agree with the header", states)
    assert run_dir.name in " ".join(h.value for h in at.markdown)


def test_run_status_measures_a_phase_and_says_the_time_left():
    import tempfile
    from pathlib import Path

    from fracture.train.events import run_status
    from fracture.ui.job_viewer import phase_line

    events = [{"event": "run_started", "epochs": 5, "steps_per_epoch": 3, "unix": 0.0},
              {"event": "phase", "name": "caching images", "done": 0, "total": 400, "unix": 100.0},
              {"event": "phase", "name": "caching images", "done": 100, "total": 400, "unix": 120.0}]
    status = run_status(Path(tempfile.gettempdir()) / "no-such-run", events)
    assert status.phase == "caching images" and status.phase_done == 100
    assert status.phase_eta_s == pytest.approx(60.0), "300 images left at 5 images/s"
    assert phase_line(status) == "before the first epoch: caching images 100/400 · about 1 min 00 s left"
    events.append({"event": "step", "epoch": 0, "step": 1, "unix": 130.0})
    assert run_status(Path(tempfile.gettempdir()) / "no-such-run", events).phase is None, "epochs: no phase"
