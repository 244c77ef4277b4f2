"""Localisation metric: hand-made heatmaps and boxes with known answers, letterbox geometry, CI, the evaluate block."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from app_support import app_home, demo_template, fresh_app_home  # noqa: F401  (fixtures)
from fracture.evaluate.localisation import (
    MARGIN,
    PER_IMAGE_COLUMNS,
    bootstrap_rate_ci,
    format_localisation,
    grow_boxes,
    localisation_card_lines,
    localisation_table,
    positives_with_boxes,
    score_heatmap,
    summarize_localisation,
)

S = 100


def _peak(row: int, col: int, size: int = S) -> np.ndarray:
    heatmap = np.zeros((size, size), dtype=np.float32)
    heatmap[row, col] = 1.0
    return heatmap


# ---------------------------------------------------------------- one image, square original
def test_uniform_block_inside_the_box_is_a_hit_with_all_mass_inside():
    box = (0.2, 0.3, 0.4, 0.5)  # x 20..40, y 30..50 on a 100 px square
    heatmap = np.zeros((S, S), dtype=np.float32)
    heatmap[30:50, 20:40] = 0.5
    heatmap[40, 30] = 1.0
    scored = score_heatmap(heatmap, [box], (200, 200))
    assert scored.hit
    assert scored.mass_in_box == pytest.approx(1.0)
    assert scored.box_area == pytest.approx(0.2 * 0.2)


def test_mass_outside_the_box_is_counted_outside():
    heatmap = np.ones((S, S), dtype=np.float32)  # uniform map: mass in box == box area (chance)
    heatmap[5, 5] = 2.0  # the maximum, far from the box
    scored = score_heatmap(heatmap, [(0.5, 0.5, 0.7, 0.6)], (S, S))
    assert not scored.hit
    assert scored.box_area == pytest.approx(0.02)
    assert scored.mass_in_box == pytest.approx(0.02 / (1.0 + 1.0 / S**2), rel=1e-6)


@pytest.mark.parametrize("col, expected", [(39, True), (43, True), (44, True), (46, False), (60, False)])
def test_margin_is_five_percent_of_the_image_side(col, expected):
    # Box x 20..40 (pixels 20..39); grown by 5% of the width: pixels 15..44.
    assert MARGIN == 0.05
    scored = score_heatmap(_peak(35, col), [(0.2, 0.3, 0.4, 0.5)], (S, S))
    assert scored.hit is expected
    assert scored.mass_in_box == (1.0 if col < 40 else 0.0)


def test_any_of_several_boxes_counts():
    boxes = [(0.0, 0.0, 0.1, 0.1), (0.8, 0.8, 0.9, 0.9)]
    assert score_heatmap(_peak(85, 85), boxes, (S, S)).hit
    assert score_heatmap(_peak(5, 5), boxes, (S, S)).hit
    assert not score_heatmap(_peak(50, 50), boxes, (S, S)).hit
    assert score_heatmap(_peak(50, 50), boxes, (S, S)).box_area == pytest.approx(0.02)


def test_zero_map_is_a_miss_and_bad_input_raises():
    scored = score_heatmap(np.zeros((S, S)), [(0.1, 0.1, 0.9, 0.9)], (S, S))
    assert not scored.hit and scored.mass_in_box == 0.0 and scored.box_area == pytest.approx(0.64)
    with pytest.raises(ValueError, match="box"):
        score_heatmap(np.ones((S, S)), [], (S, S))
    with pytest.raises(ValueError, match="square"):
        score_heatmap(np.ones((S, S + 1)), [(0, 0, 1, 1)], (S, S))


# ---------------------------------------------------------------- letterbox geometry
def test_letterbox_padding_is_outside_every_box():
    # A 50 x 100 (h x w) image letterboxed into 100 x 100: content rows 25..74, padding above and below.
    whole = [(0.0, 0.0, 1.0, 1.0)]
    uniform = np.ones((S, S), dtype=np.float32)
    scored = score_heatmap(uniform, whole, (50, 100))
    assert scored.box_area == pytest.approx(0.5)
    assert scored.mass_in_box == pytest.approx(0.5)  # half the mass lies in the padding
    # A maximum in the padding is a miss, even right above a box touching the image's top edge.
    top_box = [(0.4, 0.0, 0.6, 0.2)]  # rows 25..34 of the input
    assert not score_heatmap(_peak(24, 50), top_box, (50, 100)).hit
    assert score_heatmap(_peak(25, 50), top_box, (50, 100)).hit
    assert score_heatmap(_peak(36, 50), top_box, (50, 100)).hit  # within 5% of the 50 px height (2.5 px)
    assert not score_heatmap(_peak(38, 50), top_box, (50, 100)).hit


def test_letterbox_maps_boxes_like_the_preprocessing():
    from fracture.preprocess.ops import resize_square

    # Draw the box into the original, letterbox it with the real preprocessing, and score the result.
    h, w = 120, 60
    original = np.zeros((h, w), dtype=np.uint8)
    box = (0.25, 0.5, 0.75, 0.75)  # x 15..45, y 60..90
    original[60:90, 15:45] = 255
    letterboxed = resize_square(original, S, mode="letterbox").astype(np.float32) / 255
    scored = score_heatmap(letterboxed, [box], (h, w))
    assert scored.hit
    assert scored.mass_in_box > 0.93  # only interpolation at the border leaks
    assert scored.box_area == pytest.approx((letterboxed > 0.5).mean(), abs=0.01)
    shifted = score_heatmap(letterboxed, [(0.25, 0.0, 0.75, 0.25)], (h, w))  # the box two heights higher
    assert not shifted.hit and shifted.mass_in_box < 0.05
    stretched = resize_square(original, S, mode="stretch").astype(np.float32) / 255
    scored = score_heatmap(stretched, [box], (h, w), resize_mode="stretch")
    assert scored.hit and scored.mass_in_box > 0.93 and scored.box_area == pytest.approx(0.5 * 0.25, abs=0.01)


def test_baselines_chance_and_centre():
    central = score_heatmap(_peak(0, 0), [(0.4, 0.4, 0.6, 0.6)], (S, S))
    assert central.centre_hit and not central.hit
    assert central.chance_hit == pytest.approx(0.3 * 0.3)  # grown by 0.05 on every side
    corner = score_heatmap(_peak(0, 0), [(0.0, 0.0, 0.1, 0.1)], (S, S))
    assert not corner.centre_hit and corner.hit
    assert corner.chance_hit == pytest.approx(0.15 * 0.15)


def test_grow_boxes_clips_to_the_image():
    assert grow_boxes([(0.02, 0.5, 0.99, 0.6)]) == ((0.0, 0.45, 1.0, 0.65),)


# ---------------------------------------------------------------- aggregation
def test_bootstrap_ci():
    assert bootstrap_rate_ci([]) is None
    assert bootstrap_rate_ci([1.0] * 20) == [1.0, 1.0]
    half = [1.0, 0.0] * 50
    low, high = bootstrap_rate_ci(half)
    assert low < 0.5 < high
    assert 0.15 < high - low < 0.25  # ~ 2 * 1.96 * sqrt(0.25 / 100)
    assert bootstrap_rate_ci(half, seed=3) == bootstrap_rate_ci(half, seed=3)


def _per_image() -> pd.DataFrame:
    rows = [("a", "hand", True, 0.2, 0.01), ("b", "hand", False, 0.0, 0.03),
            ("c", "leg", True, 0.4, 0.02), ("d", "leg", True, 0.6, 0.02)]
    frame = pd.DataFrame(rows, columns=list(PER_IMAGE_COLUMNS[:5]))
    frame["chance_hit"] = 0.05
    frame["centre_hit"] = [False, False, True, False]
    return frame


def test_summary_overall_and_per_body_part():
    block = summarize_localisation(_per_image(), "how it was measured")
    assert block["n"] == 4
    assert block["pointing_hit"] == pytest.approx(0.75)
    assert block["mass_in_box"] == pytest.approx(0.3)
    assert block["box_area"] == pytest.approx(0.02)
    assert block["mass_vs_chance"] == pytest.approx(15.0)
    assert block["centre_hit"] == pytest.approx(0.25) and block["chance_hit"] == pytest.approx(0.05)
    assert block["method"] == "how it was measured"
    low, high = block["pointing_hit_ci"]
    assert 0.0 <= low <= 0.75 <= high <= 1.0
    assert set(block["by_body_part"]) == {"hand", "leg"}
    assert block["by_body_part"]["hand"]["pointing_hit"] == pytest.approx(0.5)
    assert block["by_body_part"]["leg"]["n"] == 2 and block["by_body_part"]["leg"]["pointing_hit_ci"] == [1.0, 1.0]
    assert "pointing hit 0.750" in format_localisation(block)
    json.dumps(block)  # JSON-able as it goes into evaluate --json and the checkpoint


def test_positives_with_boxes():
    frame = pd.DataFrame({"label": [1, 1, 0, 1], "boxes": [((0, 0, 1, 1),), (), ((0, 0, 1, 1),), [[0, 0, 0.5, 0.5]]]})
    assert positives_with_boxes(frame)["label"].tolist() == [1, 1]
    assert positives_with_boxes(frame.drop(columns="boxes")).empty


def test_card_section_from_metadata():
    block = summarize_localisation(_per_image(), "measured so")
    meta = {"metrics": {"test": {"image": {"localisation": block}}},
            "explain": {"method": "layercam", "layer": "fused", "val_pointing_hit": 0.62, "chosen_on": "val"}}
    text = "\n".join(localisation_card_lines(meta))
    assert "## Localisation" in text and "pointing hit 0.750" in text
    assert "`layercam` on layer `fused`" in text and "(0.620)" in text
    assert "| leg | 2 | 1.000 (1.000–1.000)" in text
    assert localisation_card_lines({"metrics": {}}) == []


def test_localisation_table_rows_per_model_and_body_part():
    block = summarize_localisation(_per_image(), "m")
    reports = {"a": {"image": {"localisation": block}}, "ensemble": {"image": {}},
               "none": {"image": {"localisation": None}}}
    table = localisation_table(reports)
    assert list(table.index) == ["a"] and table.loc["a", "pointing hit"] == pytest.approx(0.75)
    assert table.loc["a", "centre baseline"] == pytest.approx(0.25)
    parts = localisation_table(reports, by_body_part=True)
    assert list(parts.index) == [("a", "hand"), ("a", "leg")]
    assert localisation_table({"x": {"image": {}}}).empty


# ---------------------------------------------------------------- Compare shows it per model
@pytest.mark.slow
def test_compare_page_shows_localisation_per_model(app_home):
    from app_support import assert_no_exception, run_page, write_tiny_run

    runs = ("20260101-000000-small_cnn", "20260101-000001-small_cnn")
    for seed, name in enumerate(runs):
        write_tiny_run(app_home / "runs", name, seed=seed)
    labels = [f"{name} (run)" for name in runs]
    at = run_page("pages/5_Compare.py", model=labels[0], query={"models": labels, "split": "test"})
    assert_no_exception(at)
    assert "Localisation — test split" in [s.value for s in at.subheader]
    tables = [d.value for d in at.dataframe if "pointing hit" in d.value.columns]
    overall = tables[0]
    assert list(overall.index) == labels  # the ensemble has no heatmap of its own
    assert ((overall["pointing hit"] >= 0) & (overall["pointing hit"] <= 1)).all()
    assert (overall["box area (chance)"] > 0).all() and overall["n"].nunique() == 1


def test_evaluate_json_has_the_localisation_block(demo_root, tmp_path, isolated_home):
    from fracture.bench.predict_latency import make_bench_checkpoint
    from fracture.cli import main

    checkpoint = make_bench_checkpoint(tmp_path / "small.safetensors", "small_cnn", 64)
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(demo_root), "--split", "test",
                 "--n-boot", "50", "--device", "cpu", "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    block = summary["image"]["localisation"]
    assert set(block) >= {"n", "pointing_hit", "pointing_hit_ci", "mass_in_box", "box_area", "method"}
    assert "by_body_part" not in block
    assert block["n"] > 0 and len(block["pointing_hit_ci"]) == 2
    parts = {part: row["localisation"] for part, row in summary["per_body_part"]["image"].items()
             if "localisation" in row}
    assert parts and sum(row["n"] for row in parts.values()) == block["n"]
    assert all(row["method"] == block["method"] for row in parts.values())
