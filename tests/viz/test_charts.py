"""Chart builders: each returns a serialisable Figure with the expected traces and axes."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from fracture.evaluate import binary_metrics, evaluate_frame, metrics_table, report_curves, roc_points
from fracture.viz import (
    ChartDataError,
    body_part_auc_chart,
    chart_title,
    confusion_matrix_chart,
    image_histogram_chart,
    intensity_histogram_chart,
    label_balance_chart,
    metrics_bar_chart,
    mode_chart,
    overlay_training_curves_chart,
    pr_chart,
    roc_chart,
    size_distribution_chart,
    step_loss_chart,
    training_curves_chart,
)


def _check(fig: go.Figure, n_traces: int) -> dict:
    """The figure serialises, has ``n_traces`` traces, and a title; returns its JSON."""
    assert isinstance(fig, go.Figure)
    assert len(fig.data) == n_traces
    assert fig.layout.title.text
    return json.loads(fig.to_json())


def _manifest(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = 60
    return pd.DataFrame({
        "path": [f"/d/{i}.png" for i in range(n)],
        "label": rng.integers(0, 2, n),
        "body_part": rng.choice(["hand", "hip", "leg"], n),
        "split": rng.choice(["train", "val", "test"], n),
    })


def _epochs(n: int = 4, offset: float = 0.0) -> pd.DataFrame:
    epochs = np.arange(n)
    return pd.DataFrame({
        "epoch": epochs,
        "train_loss": 0.7 - 0.1 * epochs + offset,
        "val_loss": 0.75 - 0.08 * epochs + offset,
        "train_accuracy": 0.6 + 0.05 * epochs,
        "val_accuracy": 0.58 + 0.04 * epochs,
        "val_roc_auc": 0.65 + 0.05 * epochs - offset,
        "lr": 1e-3 * 0.5 ** epochs,
    })


# ------------------------------------------------------------------ data charts


def test_label_balance_from_manifest_counts_each_split():
    manifest = _manifest()
    fig = label_balance_chart(manifest, class_names=("not fractured", "fractured"))
    _check(fig, n_traces=2 * 3)
    totals = sum(sum(trace.y) for trace in fig.data)
    assert totals == len(manifest)
    train_pos = next(t for t in fig.data if t.xaxis == "x" and t.name == "fractured")
    expected = manifest[(manifest.split == "train") & (manifest.label == 1)].groupby("body_part").size()
    assert dict(zip(train_pos.x, train_pos.y)) == {
        part: expected.get(part, 0) for part in ("hand", "hip", "leg")
    }
    assert fig.layout.xaxis.title.text == "body part"
    assert fig.layout.yaxis.title.text == "images"
    assert fig.layout.barmode == "stack"


def test_label_balance_accepts_count_tables():
    counts = pd.DataFrame({"split": ["train", "train", "test"], "body_part": ["hand"] * 3,
                           "label": [0, 1, 1], "count": [5, 3, 2]})
    fig = label_balance_chart(counts)
    _check(fig, n_traces=4)
    stats_style = counts.rename(columns={"count": "images"})  # as dataset_stats names it
    assert [list(t.y) for t in label_balance_chart(stats_style).data] == [list(t.y) for t in fig.data]
    wide = pd.DataFrame({"split": ["val"], "body_part": ["hand"], "negatives": [4], "positives": [1]})
    _check(label_balance_chart(wide), n_traces=2)
    with pytest.raises(ChartDataError, match="split"):
        label_balance_chart(pd.DataFrame({"label": [0], "body_part": ["x"]}))


def test_size_distribution_chart():
    rng = np.random.default_rng(0)
    sizes = pd.DataFrame({"width": rng.integers(200, 3000, 300), "height": rng.integers(200, 3000, 300)})
    fig = size_distribution_chart(sizes, max_points=100)
    _check(fig, n_traces=3)
    assert len(fig.data[2].x) == 100  # the scatter is sampled, histograms are not
    assert len(fig.data[0].x) == 300
    assert fig.layout.xaxis2.title.text == "width (px)"
    assert fig.layout.yaxis2.title.text == "height (px)"


def test_mode_chart_with_and_without_formats():
    headers = pd.DataFrame({"mode": ["L", "L", "RGB", "I;16"], "format": ["JPEG", "PNG", "JPEG", "PNG"]})
    fig = mode_chart(headers)
    _check(fig, n_traces=2)
    assert sum(np.nansum(trace.y) for trace in fig.data) == 4
    counts = pd.DataFrame({"mode": ["L", "RGB"], "count": [10, 3]})
    fig = mode_chart(counts)
    _check(fig, n_traces=1)
    assert list(fig.data[0].x) == ["L", "RGB"] and list(fig.data[0].y) == [10, 3]
    assert fig.layout.xaxis.title.text == "pixel mode"


def test_intensity_histogram_normalises_each_series():
    hist = {"fractured": np.arange(256), "not fractured": np.ones(256) * 7}
    fig = intensity_histogram_chart(hist)
    _check(fig, n_traces=2)
    for trace in fig.data:
        assert np.sum(trace.y) == pytest.approx(1.0)
    assert fig.layout.yaxis.title.text == "fraction of pixels"
    _check(intensity_histogram_chart(np.ones(256)), n_traces=1)
    with pytest.raises(ChartDataError):
        intensity_histogram_chart(np.ones((4, 4)))


def test_image_histogram_counts_pixels_per_channel():
    img = np.zeros((8, 10), dtype=np.uint8)
    img[:2] = 255
    fig = image_histogram_chart(img, "original")
    _check(fig, n_traces=1)
    assert fig.data[0].y[0] == 60 and fig.data[0].y[255] == 20
    assert "original" in fig.layout.title.text
    two_channels = np.stack([img, 255 - img], axis=-1)
    _check(image_histogram_chart(two_channels, "CLAHE + Canny channel"), n_traces=2)
    with pytest.raises(ChartDataError, match="uint8"):
        image_histogram_chart(img.astype(np.float32), "float")


def test_a_cut_background_peak_is_named_under_the_axis_not_over_the_chart():
    rng = np.random.default_rng(0)
    img = rng.integers(40, 220, size=(100, 100)).astype(np.uint8)
    img[:45] = 5  # a dark background: 45% of the pixels in one bin
    fig = image_histogram_chart(img, "original", font_size=20, log_counts=False)
    assert "cut: 45% of pixels near level 5" in fig.layout.title.subtitle.text
    assert fig.layout.xaxis.title.text == "intensity"
    assert not fig.layout.annotations, "no note drawn inside the plot, where it met the chart's top"
    assert fig.layout.margin.t >= 3 * 20 + 30, "room for the title's second line"
    assert fig.layout.font.size == 20 and fig.layout.yaxis.range[1] < 4500


def test_image_histogram_goes_log_for_an_edge_map_only():
    ramp = np.tile(np.arange(256, dtype=np.uint8), (64, 1))
    assert image_histogram_chart(ramp, "ramp").layout.yaxis.type == "linear"
    edges = np.zeros((200, 200), dtype=np.uint8)
    edges[::50, :] = 255  # a few edge pixels on a black field, as Canny gives
    edges[1, :3] = 40
    fig = image_histogram_chart(edges, "Canny edges")
    assert fig.layout.yaxis.type == "log"
    assert fig.layout.yaxis.title.text == "pixels (log)"
    assert image_histogram_chart(edges, "forced", log_counts=False).layout.yaxis.type == "linear"


def test_panel_charts_keep_their_legend_clear_of_the_panel_titles():
    epochs = pd.DataFrame({"epoch": [0, 1], "train_loss": [0.7, 0.5], "val_loss": [0.8, 0.6],
                           "train_roc_auc": [0.6, 0.7], "val_roc_auc": [0.55, 0.65]})
    fig = training_curves_chart(epochs)
    assert fig.layout.annotations  # panel titles above the plots
    assert fig.layout.legend.y < 0 and fig.layout.legend.yanchor == "top"


# ------------------------------------------------------------------ training charts


def test_training_curves_one_panel_per_metric_train_and_val():
    fig = training_curves_chart(_epochs())
    # loss: train+val, accuracy: train+val, roc_auc: val only
    _check(fig, n_traces=5)
    assert [a.text for a in fig.layout.annotations] == ["loss", "accuracy", "ROC AUC"]
    assert fig.layout.xaxis.title.text == "epoch" and fig.layout.xaxis3.title.text == "epoch"
    assert fig.layout.yaxis3.title.text == "ROC AUC"
    assert sum(trace.showlegend is not False for trace in fig.data) == 2  # one "train", one "val"
    assert "val" in fig.layout.title.text and "level" in fig.layout.title.text


def test_training_curves_before_the_first_epoch():
    fig = training_curves_chart(pd.DataFrame())
    _check(fig, n_traces=0)
    assert "no finished epochs" in fig.layout.annotations[0].text


def test_step_loss_chart_uses_fractional_epochs():
    steps = pd.DataFrame({"epoch": [0, 0, 0, 1, 1, 1], "step": [0, 1, 2, 0, 1, 2],
                          "loss": [0.9, 0.8, 0.85, 0.6, 0.55, 0.5]})
    fig = step_loss_chart(steps, smoothing=0.5)
    _check(fig, n_traces=2)
    assert list(fig.data[0].x) == pytest.approx([0, 1 / 3, 2 / 3, 1, 4 / 3, 5 / 3])
    assert fig.data[1].y[-1] < fig.data[1].y[0]
    assert fig.layout.xaxis.title.text == "epoch" and fig.layout.yaxis.title.text == "loss"
    logged = steps.assign(steps_per_epoch=6)  # as the trainer's step events carry it
    assert list(step_loss_chart(logged).data[0].x) == pytest.approx([0, 1 / 6, 2 / 6, 1, 7 / 6, 8 / 6])
    _check(step_loss_chart(pd.DataFrame()), n_traces=0)
    with pytest.raises(ChartDataError):
        step_loss_chart(steps, smoothing=1.0)


def test_overlay_training_curves_one_line_per_run():
    runs = {"effnet-b0": _epochs(), "resnet50": _epochs(3, offset=0.05),
            "old-run": pd.DataFrame({"epoch": [0], "val_loss": [0.7]})}
    fig = overlay_training_curves_chart(runs, "roc_auc")
    _check(fig, n_traces=2)
    assert [trace.name for trace in fig.data] == ["effnet-b0", "resnet50"]
    assert fig.layout.yaxis.title.text == "val ROC AUC"
    assert "old-run" in fig.layout.annotations[0].text
    assert "val split" in fig.layout.title.text


# ------------------------------------------------------------------ evaluation charts


def _scores(seed: int):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 200)
    return y, np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1)


def test_roc_chart_curves_diagonal_and_operating_points():
    curves = {}
    for name, seed in (("a", 0), ("b", 1)):
        y, p = _scores(seed)
        fpr, tpr, _ = roc_points(y, p)
        curves[name] = (fpr, tpr, binary_metrics(y, p)["roc_auc"])
    fig = roc_chart(curves, split="test", level="image")
    _check(fig, n_traces=3)
    assert fig.layout.title.text == chart_title("ROC curve", split="test", level="image")
    assert "test split" in fig.layout.title.text and "image level" in fig.layout.title.text
    assert fig.layout.xaxis.title.text.startswith("false positive rate")
    assert fig.layout.yaxis.title.text.startswith("true positive rate")
    assert "AUC" in fig.data[0].name
    fig = roc_chart(curves, split="test", level="image", operating_points={"a": (0.2, 0.8)})
    _check(fig, n_traces=4)


def test_pr_chart_from_report_with_no_skill_line():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"label": rng.integers(0, 2, 80), "body_part": "hand",
                       "study_id": [f"s{i}" for i in range(80)]})
    df["prob"] = np.clip(0.3 + 0.4 * df["label"] + rng.normal(0, 0.2, 80), 0, 1)
    report = evaluate_frame(df, 0.5, n_boot=0)
    fig = pr_chart(report_curves({"m": report}, "image", kind="pr"), split="val", level="image",
                   prevalence=float(df["label"].mean()))
    _check(fig, n_traces=2)
    assert fig.layout.xaxis.title.text == "recall (sensitivity)"
    assert fig.layout.yaxis.title.text == "precision"
    with pytest.raises(ChartDataError):
        pr_chart({"bad": ([0, 1], [1], 0.5)})


def test_confusion_matrix_counts_and_row_percentages():
    cm = {"tn": 40, "fp": 10, "fn": 5, "tp": 15}
    title = chart_title("Confusion matrix at threshold 0.42", split="test", level="study")
    fig = confusion_matrix_chart(cm, title, class_names=("normal", "abnormal"))
    _check(fig, n_traces=1)
    heat = fig.data[0]
    assert np.allclose(heat.z, [[0.8, 0.2], [0.25, 0.75]])
    assert heat.text[0][0] == "40<br>80.0%" and heat.text[1][1] == "15<br>75.0%"
    assert list(heat.x) == ["predicted<br>normal", "predicted<br>abnormal"]
    assert fig.layout.xaxis.title.text == "prediction"
    # every number drawn whole as an annotation (heatmap text is cut to its cell: "81.1%" read "31.1%")
    assert sorted(a.text for a in fig.layout.annotations) == sorted(
        ["<b>40</b><br>80.0%", "<b>10</b><br>20.0%", "<b>5</b><br>25.0%", "<b>15</b><br>75.0%"])
    with pytest.raises(ChartDataError, match="tp"):
        confusion_matrix_chart({"tn": 1, "fp": 1, "fn": 1}, "t")


def test_metrics_bar_chart_groups_models_with_auc_error_bars():
    rng = np.random.default_rng(1)
    reports = {}
    for name, noise in (("effnet", 0.15), ("cnn", 0.3)):
        df = pd.DataFrame({"label": rng.integers(0, 2, 120), "body_part": "hand",
                           "study_id": [f"s{i}" for i in range(120)]})
        df["prob"] = np.clip(0.3 + 0.4 * df["label"] + rng.normal(0, noise, 120), 0, 1)
        reports[name] = evaluate_frame(df, 0.5, n_boot=100)
    table = metrics_table(reports, level="image")
    metrics = ("accuracy", "recall", "specificity", "roc_auc")
    fig = metrics_bar_chart(table, metrics=metrics, split="test", level="image")
    _check(fig, n_traces=2)
    assert [trace.name for trace in fig.data] == ["effnet", "cnn"]
    assert list(fig.data[0].y) == pytest.approx(table.loc["effnet", list(metrics)].tolist())
    low = table.loc["effnet", "roc_auc_ci_low"]
    assert fig.data[0].error_y.arrayminus[3] == pytest.approx(table.loc["effnet", "roc_auc"] - low)
    assert fig.layout.barmode == "group" and fig.layout.yaxis.title.text == "value"
    with pytest.raises(ChartDataError, match="brier"):
        metrics_bar_chart(table, metrics=("brier",))


def test_body_part_auc_chart_leaves_gaps_for_undefined_parts():
    aucs = {"a": {"hand": 0.8, "wrist": 0.9}, "b": {"hand": 0.7, "elbow": None}}
    fig = body_part_auc_chart(aucs, split="test", level="study")
    _check(fig, n_traces=2)
    assert list(fig.data[0].x) == ["elbow", "hand", "wrist"]
    assert np.isnan(fig.data[1].y[0]) and np.isnan(fig.data[1].y[2])
    assert fig.layout.yaxis.title.text == "ROC AUC"
    assert "study level" in fig.layout.title.text


def test_label_balance_chart_with_a_body_part_missing_from_a_split():
    """A split without some body part (string dtypes) gets zero bars, not a crash."""
    import pandas as pd

    from fracture.viz.charts import label_balance_chart

    df = pd.DataFrame({"split": ["train", "train", "test"], "body_part": ["hand", "leg", "hand"], "label": [0, 1, 1]})
    df = df.astype({"split": "string", "body_part": "string"})
    fig = label_balance_chart(df)
    test_bars = [t for t in fig.data if t.xaxis == "x2"]
    assert list(test_bars[0].x) == ["hand", "leg"]
    assert sum(test_bars[0].y) + sum(test_bars[1].y) == 1


def test_the_epoch_axis_runs_1_to_n_with_a_few_whole_ticks():
    from fracture.viz.training_charts import epoch_axis, training_curves_chart

    assert epoch_axis(3)["tickvals"] == [1, 2, 3]
    twenty = epoch_axis(20)
    assert twenty["tickvals"] == [1, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20] and twenty["range"] == [0.6, 20.4]
    assert epoch_axis(100)["tickvals"] == [1, *range(10, 101, 10)]
    epochs = pd.DataFrame({"epoch": [0, 1], "epochs": [20, 20], "train_loss": [0.7, 0.6], "val_loss": [0.7, 0.65]})
    fig = training_curves_chart(epochs, metrics=("loss",))
    assert list(fig.layout.xaxis.range) == [0.6, 20.4], "a 20-epoch run's axis shows 1..20 from its first epoch"
