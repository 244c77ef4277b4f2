"""AppTest: defects a browser walk found (issue 12), each pinned by a test."""
from __future__ import annotations

import pytest

from app_support import (  # noqa: F401  (fixtures)
    app_home,
    assert_no_exception,
    demo_template,
    fresh_app_home,
    png_bytes,
    run_page,
    write_tiny_run,
)

RUN = "20260101-000000-small_cnn"


@pytest.mark.slow
def test_the_same_upload_twice_counts_once_and_the_heading_says_how_many_files(app_home):
    write_tiny_run(app_home / "runs", RUN)
    at = run_page("pages/4_Predict.py", model=RUN)
    same = png_bytes(80, seed=7)
    at.file_uploader(key="predict-upload").set_value(
        [("a.png", same, "image/png"), ("copy.png", same, "image/png"), ("bad.png", b"no image", "image/png")]
    ).run()
    assert_no_exception(at)
    assert any("count once" in i.value and "copy.png" in i.value for i in at.info)
    assert any("Study from 1 of 3 files" in c.value for c in at.caption)


def test_canny_thresholds_are_one_range_so_low_never_passes_high(app_home):
    at = run_page("pages/2_Preprocessing_Lab.py")
    assert_no_exception(at)
    thresholds = at.slider(key="lab-canny-thresholds")
    assert tuple(thresholds.value) == (50, 150)
    thresholds.set_value((120, 400)).run()
    assert_no_exception(at)
    assert not at.error


def test_training_curves_count_epochs_from_one_on_whole_number_ticks():
    import pandas as pd

    from fracture.viz.charts import overlay_training_curves_chart, training_curves_chart

    epochs = pd.DataFrame({"epoch": [0, 1, 2], "train_loss": [0.9, 0.7, 0.6], "val_loss": [0.8, 0.7, 0.65],
                           "val_roc_auc": [0.6, 0.7, 0.8]})
    fig = training_curves_chart(epochs)
    assert list(fig.data[0].x) == [1, 2, 3]
    assert list(fig.layout.xaxis.tickvals) == [1, 2, 3] and list(fig.layout.xaxis.range) == [0.6, 3.4]
    overlay = overlay_training_curves_chart({"run": epochs}, "val_roc_auc")
    assert list(overlay.data[0].x) == [1, 2, 3] and list(overlay.layout.xaxis.tickvals) == [1, 2, 3]


def test_grouped_bar_labels_stand_upright_and_body_parts_carry_their_n():
    import pandas as pd

    from fracture.viz.charts import body_part_auc_chart, metrics_bar_chart

    table = pd.DataFrame({"roc_auc": [0.769, 0.769], "accuracy": [0.8, 0.81]}, index=["a", "b"])
    fig = metrics_bar_chart(table, metrics=("roc_auc", "accuracy"))
    assert all(trace.textangle == -90 and trace.textposition == "inside" for trace in fig.data)
    assert list(fig.layout.yaxis.range) == [0, 1], "a metric axis ends at 1 (not 1.25)"
    parts = body_part_auc_chart({"a": {"hand": 0.7}, "b": {"hand": 0.8}}, counts={"hand": "n=12 · 3 pos"})
    assert "n=12" in parts.layout.xaxis.ticktext[0] and list(parts.layout.yaxis.range) == [0, 1]


def test_uploads_survive_a_page_switch_until_forgotten(app_home):
    from app_support import metric_values, switch_to

    write_tiny_run(app_home / "runs", RUN)
    at = run_page("pages/4_Predict.py", model=RUN)
    at.file_uploader(key="predict-upload").set_value([("a.png", png_bytes(80, seed=5), "image/png")]).run()
    assert "Study P(abnormal)" in metric_values(at)
    switch_to(at, "pages/1_Dataset_Explorer.py").run()
    switch_to(at, "pages/4_Predict.py").run()
    assert_no_exception(at)
    assert any("Kept from before" in c.value and "a.png" in c.value for c in at.caption)
    assert "Study P(abnormal)" in metric_values(at)
    at.button(key="kept-uploads-predict-upload-forget").click().run()
    assert_no_exception(at)
    assert "Study P(abnormal)" not in metric_values(at)


def test_a_finished_training_child_is_reaped_not_left_defunct(tmp_path):
    import subprocess
    import sys
    import time

    from fracture.train.events import PID_FILE
    from fracture.ui.job_viewer import process_alive

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    (tmp_path / PID_FILE).write_text(str(child.pid))
    deadline = time.monotonic() + 30
    state = ""
    while state != "Z":  # the child exits at once; until reaped it is a zombie that signal 0 still finds
        assert time.monotonic() < deadline, f"child {child.pid} not a zombie after 30 s (state {state!r})"
        state = open(f"/proc/{child.pid}/stat").read().split(")")[-1].split()[0]
        time.sleep(0.01)
    assert not process_alive(tmp_path)
    assert not __import__("os").path.exists(f"/proc/{child.pid}")


def test_a_demo_set_from_an_older_generator_is_redrawn(tmp_path):
    from fracture.data.demo import DEMO_MARKER, GENERATOR_VERSION
    from fracture.ui.demo import READY_FLAG, demo_ready

    (tmp_path / READY_FLAG).write_text("studies=160 seed=0\n")
    (tmp_path / DEMO_MARKER).write_text("synthetic: yes\ngenerator_version: 0-old\n")
    assert not demo_ready(tmp_path)
    (tmp_path / DEMO_MARKER).write_text(f"synthetic: yes\ngenerator_version: {GENERATOR_VERSION}\n")
    assert demo_ready(tmp_path)


def test_a_stopped_run_offers_resume_and_a_finished_one_does_not(app_home):
    import json

    from fracture.train.events import EVENTS_FILE

    run = write_tiny_run(app_home / "runs", RUN)
    at = run_page("pages/3_Train.py")
    assert_no_exception(at)
    assert not [b for b in at.button if b.key == f"resume-{RUN}"]
    events = [json.loads(line) for line in (run / EVENTS_FILE).read_text().splitlines() if line.strip()]
    kept = [e for e in events if e["event"] != "finished"] + [{**events[-1], "event": "cancelled"}]
    (run / EVENTS_FILE).write_text("".join(json.dumps(e) + "\n" for e in kept))
    at = run_page("pages/3_Train.py")
    assert_no_exception(at)
    assert [b for b in at.button if b.key == f"resume-{RUN}"], "a stopped run can be resumed from the page"
