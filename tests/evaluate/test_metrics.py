"""Metrics, thresholds, bootstrap intervals, reports and ensembles (numpy/pandas only)."""
from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from fracture.errors import FractureError
from fracture.evaluate import (
    EvaluationError,
    binary_metrics,
    body_part_metric,
    bootstrap_auc_ci,
    bootstrap_ci,
    choose_threshold,
    ensemble_probabilities,
    ensemble_threshold,
    evaluate_frame,
    format_report_markdown,
    metrics_table,
    pr_points,
    report_curves,
    roc_points,
    study_frame,
)
from fracture.evaluate import metrics as metrics_module

# Ten items worked by hand at threshold 0.5:
#   positives 0.9 0.8 0.6 | 0.3      -> tp = 3, fn = 1
#   negatives 0.7 0.55 | 0.4 0.2 0.1 0.05 -> fp = 2, tn = 4
HAND_Y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
HAND_P = np.array([0.9, 0.8, 0.6, 0.3, 0.7, 0.4, 0.2, 0.1, 0.55, 0.05])


def _scores(n: int, seed: int, prevalence: float = 0.3, separation: float = 0.3):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prevalence).astype(int)
    p = np.clip(rng.normal(0.35 + separation * y, 0.2), 0.0, 1.0)
    return y, p


def _image_frame(n_studies: int = 120, seed: int = 0) -> pd.DataFrame:
    """Generated predictions: studies of 1-3 images, three body parts, two studies per patient."""
    rng = np.random.default_rng(seed)
    rows = []
    for study in range(n_studies):
        label = int(rng.random() < 0.4)
        part = ("elbow", "hand", "wrist")[study % 3]
        for image in range(int(rng.integers(1, 4))):
            rows.append({
                "path": f"/data/s{study}/img{image}.png",
                "label": label,
                "prob": float(np.clip(rng.normal(0.35 + 0.3 * label, 0.2), 0, 1)),
                "body_part": part,
                "study_id": f"s{study}",
                "patient_id": f"p{study // 2}",
            })
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ binary_metrics


def test_binary_metrics_match_hand_counts():
    m = binary_metrics(HAND_Y, HAND_P, threshold=0.5)
    assert m["confusion"] == {"tn": 4, "fp": 2, "fn": 1, "tp": 3}
    assert (m["n"], m["n_pos"], m["n_neg"]) == (10, 4, 6)
    assert m["accuracy"] == pytest.approx(7 / 10)
    assert m["precision"] == pytest.approx(3 / 5)
    assert m["recall"] == pytest.approx(3 / 4)
    assert m["sensitivity"] == m["recall"]
    assert m["specificity"] == pytest.approx(4 / 6)
    assert m["f1"] == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))
    # 20 of the 24 positive-negative pairs are ordered correctly.
    assert m["roc_auc"] == pytest.approx(20 / 24)
    # Precision at each positive's rank: 1/1, 2/2, 3/4, 4/7.
    assert m["pr_auc"] == pytest.approx((1 + 1 + 3 / 4 + 4 / 7) / 4)
    # Observed agreement 0.7; chance agreement 0.5*0.4 + 0.5*0.6 = 0.5.
    assert m["cohen_kappa"] == pytest.approx((0.7 - 0.5) / (1 - 0.5))
    assert m["threshold"] == 0.5
    json.dumps(m)


def test_threshold_is_inclusive():
    m = binary_metrics([1, 0], [0.5, 0.49], threshold=0.5)
    assert m["confusion"] == {"tn": 1, "fp": 0, "fn": 0, "tp": 1}


@pytest.mark.parametrize("label", [0, 1])
def test_one_class_gives_none_for_undefined_metrics(label):
    y = np.full(5, label)
    m = binary_metrics(y, [0.1, 0.2, 0.3, 0.4, 0.45], threshold=0.5)
    assert m["roc_auc"] is None and m["pr_auc"] is None
    assert m["n_pos"] == (5 if label else 0)
    # Nothing predicted positive: precision 0 by the zero_division=0 rule.
    assert m["precision"] == 0.0
    assert m["accuracy"] == (1.0 if label == 0 else 0.0)
    json.dumps(m)


def test_kappa_undefined_when_everything_agrees_on_one_class():
    m = binary_metrics([0, 0, 0], [0.1, 0.2, 0.3])
    assert m["cohen_kappa"] is None
    assert m["specificity"] == 1.0 and m["recall"] == 0.0


@pytest.mark.parametrize(
    "y, p",
    [([0, 2, 1], [0.1, 0.2, 0.3]), ([0, 1], [0.1]), ([], []), ([0, 1], [0.1, np.nan])],
)
def test_invalid_inputs_raise_typed_error(y, p):
    with pytest.raises(EvaluationError) as info:
        binary_metrics(y, p)
    assert isinstance(info.value, ValueError) and isinstance(info.value, FractureError)


# ------------------------------------------------------------------ curves


def test_roc_points_downsampled_with_ends_kept():
    y, p = _scores(3000, seed=1)
    fpr, tpr, thresholds = roc_points(y, p, max_points=50)
    assert len(fpr) <= 50 and len(tpr) == len(fpr) == len(thresholds)
    assert (fpr[0], tpr[0]) == (0.0, 0.0) and (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc_score(y, p), abs=0.01)


def test_pr_points_recall_ascending():
    curve = pr_points(HAND_Y, HAND_P)
    assert curve.recall[0] == 0.0 and curve.recall[-1] == 1.0
    assert np.all(np.diff(curve.recall) >= 0)
    assert len(curve.precision) == len(curve.recall) == len(curve.thresholds)


def test_curves_refuse_one_class():
    with pytest.raises(EvaluationError, match="both classes"):
        roc_points([1, 1, 1], [0.2, 0.5, 0.9])
    with pytest.raises(EvaluationError, match="both classes"):
        pr_points([0, 0], [0.2, 0.5])


# ------------------------------------------------------------------ thresholds


def test_youden_on_separable_data_falls_between_the_classes():
    negatives = [0.05, 0.1, 0.2, 0.3, 0.4]
    positives = [0.6, 0.7, 0.8, 0.95]
    y = [0] * len(negatives) + [1] * len(positives)
    t = choose_threshold(y, negatives + positives, rule="youden")
    assert max(negatives) < t <= min(positives)
    assert binary_metrics(y, negatives + positives, t)["accuracy"] == 1.0


@pytest.mark.parametrize("target", [0.8, 0.9, 0.95])
def test_sensitivity_rule_reaches_target_at_the_highest_threshold(target):
    y, p = _scores(500, seed=2)
    t = choose_threshold(y, p, rule="sensitivity", target=target)
    assert binary_metrics(y, p, t)["recall"] >= target
    # The next distinct score above the threshold already misses the target.
    next_score = np.min(p[p >= t])
    assert binary_metrics(y, p, np.nextafter(next_score, 2.0))["recall"] < target


def test_f1_rule_maximises_f1_over_all_thresholds():
    y, p = _scores(300, seed=3)
    t = choose_threshold(y, p, rule="f1")
    predictions = p[None, :] >= np.unique(p)[:, None]  # one row per candidate threshold
    tp = (predictions & (y == 1)).sum(axis=1)
    f1_all = 2 * tp / (predictions.sum(axis=1) + (y == 1).sum())
    assert binary_metrics(y, p, t)["f1"] == pytest.approx(f1_all.max())


def test_threshold_rule_errors():
    with pytest.raises(EvaluationError, match="unknown threshold rule"):
        choose_threshold(HAND_Y, HAND_P, rule="otsu")
    with pytest.raises(EvaluationError, match="target"):
        choose_threshold(HAND_Y, HAND_P, rule="sensitivity")
    with pytest.raises(EvaluationError, match="both classes"):
        choose_threshold([0, 0, 0], [0.1, 0.2, 0.3])


# ------------------------------------------------------------------ bootstrap


def test_bootstrap_ci_contains_point_auc_and_narrows_with_more_data():
    y_small, p_small = _scores(200, seed=4)
    y_large, p_large = _scores(4000, seed=4)
    low_s, high_s = bootstrap_ci(y_small, p_small, n_boot=500, seed=0)
    low_l, high_l = bootstrap_ci(y_large, p_large, n_boot=500, seed=0)
    assert low_s <= roc_auc_score(y_small, p_small) <= high_s
    assert low_l <= roc_auc_score(y_large, p_large) <= high_l
    assert (high_l - low_l) < (high_s - low_s) / 2


def test_bootstrap_is_deterministic_per_seed():
    y, p = _scores(300, seed=5)
    assert bootstrap_ci(y, p, n_boot=200, seed=7) == bootstrap_ci(y, p, n_boot=200, seed=7)
    assert bootstrap_ci(y, p, n_boot=200, seed=7) != bootstrap_ci(y, p, n_boot=200, seed=8)
    assert bootstrap_auc_ci(y, p, n_boot=200, seed=7) == bootstrap_ci(y, p, n_boot=200, seed=7)


def test_vectorised_resample_metrics_equal_scikit_learn():
    y, p = _scores(400, seed=6)
    p = np.round(p, 2)  # ties on purpose
    strata = [np.flatnonzero(y == 1), np.flatnonzero(y == 0)]
    weights = metrics_module._resample_weights(np.random.default_rng(0), 3, strata, len(y))
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    neg_order = neg[np.argsort(p[neg], kind="stable")]
    neg_sorted = np.sort(p[neg])
    auc = metrics_module._weighted_auc(weights[:, pos], weights[:, neg_order],
                                       np.searchsorted(neg_sorted, p[pos], "left"),
                                       np.searchsorted(neg_sorted, p[pos], "right"))
    order = np.argsort(-p, kind="stable")
    starts = np.flatnonzero(np.r_[True, p[order][1:] != p[order][:-1]])
    is_pos = y[order] == 1
    w_sorted = weights[:, order]
    ap = metrics_module._weighted_average_precision(np.where(is_pos, w_sorted, 0),
                                                    np.where(is_pos, 0, w_sorted), starts)
    for b in range(3):
        drawn = np.repeat(np.arange(len(y)), weights[b])
        assert weights[b, pos].sum() == len(pos)  # stratified: class counts kept
        assert auc[b] == pytest.approx(roc_auc_score(y[drawn], p[drawn]))
        assert ap[b] == pytest.approx(average_precision_score(y[drawn], p[drawn]))


@pytest.mark.parametrize("metric", ["accuracy", "f1", "specificity", "cohen_kappa", "pr_auc"])
def test_bootstrap_other_metrics_contain_point_estimate(metric):
    y, p = _scores(600, seed=7)
    point = binary_metrics(y, p, 0.5)[metric]
    low, high = bootstrap_ci(y, p, metric=metric, n_boot=400, threshold=0.5)
    assert low <= point <= high


def test_cluster_bootstrap_is_wider_for_correlated_images():
    # Each study contributes five copies of one score: the images carry the
    # information of one study, and only the cluster bootstrap knows it.
    y_study, p_study = _scores(150, seed=8)
    y, p = np.repeat(y_study, 5), np.repeat(p_study, 5)
    groups = np.repeat(np.arange(150), 5)
    low_i, high_i = bootstrap_ci(y, p, n_boot=500)
    low_g, high_g = bootstrap_ci(y, p, n_boot=500, groups=groups)
    assert (high_g - low_g) > 1.5 * (high_i - low_i)
    assert low_g <= roc_auc_score(y, p) <= high_g


def test_bootstrap_one_class_and_errors():
    assert bootstrap_ci([1, 1, 1], [0.2, 0.5, 0.9]) == (None, None)
    with pytest.raises(EvaluationError, match="unknown bootstrap metric"):
        bootstrap_ci(HAND_Y, HAND_P, metric="brier")
    with pytest.raises(EvaluationError, match="groups"):
        bootstrap_ci(HAND_Y, HAND_P, groups=[1, 2])


def test_bootstrap_1000_resamples_of_5000_items_is_fast():
    y, p = _scores(5000, seed=9)
    start = time.process_time()  # CPU time: fair on a busy shared machine
    bootstrap_ci(y, p, n_boot=1000, seed=0)
    assert time.process_time() - start < 2.0


# ------------------------------------------------------------------ reports


def test_study_frame_takes_the_mean_of_image_probabilities():
    df = pd.DataFrame({
        "label": [1, 1, 0, 0, 0],
        "prob": [0.9, 0.5, 0.2, 0.4, 0.3],
        "body_part": ["wrist", "wrist", "hand", "hand", "hand"],
        "study_id": ["a", "a", "b", "b", "b"],
    })
    studies = study_frame(df).set_index("study_id")
    assert studies.loc["a", "prob"] == pytest.approx(0.7)
    assert studies.loc["b", "prob"] == pytest.approx(0.3)
    assert studies["n_images"].to_dict() == {"a": 2, "b": 3}
    assert studies["label"].to_dict() == {"a": 1, "b": 0}


def test_study_with_disagreeing_labels_is_named():
    df = pd.DataFrame({"label": [1, 0], "prob": [0.9, 0.2], "body_part": ["hand", "hand"],
                       "study_id": ["study-42", "study-42"]})
    with pytest.raises(ValueError, match="study-42"):
        study_frame(df)


def test_missing_columns_are_named():
    with pytest.raises(EvaluationError, match="study_id"):
        evaluate_frame(pd.DataFrame({"label": [0, 1], "prob": [0.1, 0.9], "body_part": "x"}), 0.5)


def test_evaluate_frame_levels_and_body_parts():
    df = _image_frame()
    report = evaluate_frame(df, 0.5, n_boot=200, seed=0, split="test")
    json.dumps(report)
    image, study = report["image"], report["study"]
    assert image["overall"]["n"] == len(df)
    assert study["overall"]["n"] == df["study_id"].nunique()
    assert set(image["by_body_part"]) == {"elbow", "hand", "wrist"}
    for part, metrics in image["by_body_part"].items():
        expected = binary_metrics(df.loc[df.body_part == part, "label"],
                                  df.loc[df.body_part == part, "prob"], 0.5)
        assert metrics["confusion"] == expected["confusion"]
        assert metrics["roc_auc"] == pytest.approx(expected["roc_auc"])
    studies = study_frame(df)
    expected_study = binary_metrics(studies["label"], studies["prob"], 0.5)
    assert study["overall"]["roc_auc"] == pytest.approx(expected_study["roc_auc"])
    low, high = image["overall"]["roc_auc_ci"]
    assert low <= image["overall"]["roc_auc"] <= high
    assert report["threshold"] == 0.5 and report["split"] == "test"
    assert report["ci_groups"] == {"image": "patient_id", "study": "patient_id"}
    assert len(image["overall"]["roc"]["fpr"]) == len(image["overall"]["roc"]["tpr"])


def test_evaluate_frame_body_part_with_one_class_does_not_crash():
    df = _image_frame()
    df.loc[df.body_part == "hand", "label"] = 0
    report = evaluate_frame(df, 0.5, n_boot=50)
    hand = report["study"]["by_body_part"]["hand"]
    assert hand["roc_auc"] is None and hand["roc_auc_ci"] == [None, None]
    assert "n/a" in format_report_markdown(report, "one-class part")


def test_metrics_table_and_markdown():
    df = _image_frame()
    report_a = evaluate_frame(df, 0.5, n_boot=100, split="val")
    shifted = df.assign(prob=np.clip(df["prob"] * 0.5 + 0.25, 0, 1))
    report_b = evaluate_frame(shifted, 0.5, n_boot=100, split="val")
    table = metrics_table({"model-a": report_a, "model-b": report_b}, level="study")
    assert list(table.index) == ["model-a", "model-b"]
    for column in ("accuracy", "precision", "recall", "specificity", "f1", "roc_auc",
                   "roc_auc_ci_low", "roc_auc_ci_high", "pr_auc", "cohen_kappa", "n"):
        assert column in table.columns
    assert table.loc["model-a", "n"] == df["study_id"].nunique()
    assert table.loc["model-b", "accuracy"] == pytest.approx(report_b["study"]["overall"]["accuracy"])
    with pytest.raises(EvaluationError, match="level"):
        metrics_table({"a": report_a}, level="patient")

    text = format_report_markdown(report_a, "Demo model on the val split")
    assert text.startswith("### Demo model on the val split")
    assert "| image | all |" in text and "| study | wrist |" in text
    low, high = report_a["image"]["overall"]["roc_auc_ci"]
    assert f"({low:.3f}–{high:.3f})" in text
    assert f"sensitivity {report_a['study']['overall']['recall']:.3f}" in text
    # header + separator + (overall + 3 parts) x 2 levels
    assert sum(line.startswith("|") for line in text.splitlines()) == 2 + 8


def test_report_helpers_feed_charts():
    report = evaluate_frame(_image_frame(), 0.5, n_boot=0)
    aucs = body_part_metric(report, "image")
    assert set(aucs) == {"elbow", "hand", "wrist"}
    curves = report_curves({"m": report}, level="study", kind="pr")
    recall, precision, ap = curves["m"]
    assert len(recall) == len(precision) and ap == report["study"]["overall"]["pr_auc"]


# ------------------------------------------------------------------ ensembles


def _member(paths, probs, labels):
    return pd.DataFrame({"path": paths, "prob": probs, "label": labels})


def test_ensemble_aligns_by_path_not_row_order():
    a = _member(["x", "y", "z"], [0.2, 0.6, 0.9], [0, 1, 1])
    b = _member(["z", "x", "y"], [0.5, 0.4, 0.8], [1, 0, 1])
    combined = ensemble_probabilities([a, b])
    assert combined["path"].tolist() == ["x", "y", "z"]
    assert combined["prob"].tolist() == pytest.approx([0.3, 0.7, 0.7])
    assert combined["prob_1"].tolist() == pytest.approx([0.4, 0.8, 0.5])
    median = ensemble_probabilities([a, b, a], how="median")
    assert median["prob"].tolist() == pytest.approx([0.2, 0.6, 0.9])


def test_ensemble_names_missing_paths():
    a = _member(["x", "y", "z"], [0.2, 0.6, 0.9], [0, 1, 1])
    b = _member(["x", "y"], [0.5, 0.4], [0, 1])
    with pytest.raises(ValueError, match="'?z'?"):
        ensemble_probabilities([a, b])
    with pytest.raises(EvaluationError, match="label"):
        ensemble_probabilities([a, _member(["x", "y", "z"], [0.1, 0.1, 0.1], [1, 1, 1])])


def test_ensemble_threshold_mean_or_chosen_on_validation():
    assert ensemble_threshold([0.3, 0.5]) == pytest.approx(0.4)
    chosen = ensemble_threshold([0.3, 0.5], val_labels=[0, 0, 1, 1], val_probs=[0.1, 0.2, 0.7, 0.8])
    assert 0.2 < chosen <= 0.7
    with pytest.raises(EvaluationError):
        ensemble_threshold([])
