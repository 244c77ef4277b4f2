"""Shortcut lab: perturbations, the figures computed from them, the CLI on the demo set, the card section."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from fracture.assess.shortcuts import (LABELS, PERTURBATIONS, STAMPED, box_share, max_on_box, measure_shortcuts,
                                       perturb, perturbation_label, perturbation_name, read_stored_report,
                                       summary_lines)
from fracture.errors import PerturbationError


def _xray(h: int = 180, w: int = 140, seed: int = 0) -> np.ndarray:
    """A dark field with a mid-grey 'bone' band: no pixel reaches the stamps' white."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w), 20, np.float64)
    img[:, w // 3: 2 * w // 3] = 140
    return np.clip(img + rng.normal(0, 4, img.shape), 0, 200).astype(np.uint8)


@pytest.mark.parametrize("name", list(PERTURBATIONS))
def test_each_perturbation_is_a_seeded_uint8_alteration(name):
    image = _xray()
    a, b = perturb(image, name, seed=3), perturb(image, name, seed=3)
    assert a.image.dtype == np.uint8 and a.image.ndim == 2
    assert np.array_equal(a.image, b.image) and a.box == b.box
    assert a.image.shape != image.shape or not np.array_equal(a.image, image)
    assert (a.box is not None) == (name in STAMPED)


def test_a_pasted_marker_changes_pixels_only_inside_its_box():
    image = _xray()
    out = perturb(image, "lead_marker", seed=1)
    x0, y0, x1, y1 = out.box
    changed = np.argwhere(out.image != image)
    assert len(changed) > 20
    assert changed[:, 0].min() >= y0 and changed[:, 0].max() < y1
    assert changed[:, 1].min() >= x0 and changed[:, 1].max() < x1
    assert perturb(image, "inversion").image.tolist() == (255 - image).tolist()
    assert perturb(image, "border").image.shape[0] > image.shape[0]
    assert perturb(image, "crop").image.shape[0] < image.shape[0]


def test_names_are_identifiers_with_a_label_and_an_unknown_one_is_a_typed_error_listing_the_valid_ones():
    assert all(name.isidentifier() for name in PERTURBATIONS)
    assert set(LABELS) == set(PERTURBATIONS) and set(STAMPED) <= set(PERTURBATIONS)
    assert perturbation_label("lead_marker") == "lead marker"
    assert perturbation_name("lead marker") == "lead_marker", "a former (stored) name still reads"
    with pytest.raises(PerturbationError) as caught:
        perturb(_xray(), "sticker")
    assert "'sticker'" in str(caught.value) and all(name in str(caught.value) for name in PERTURBATIONS)


def test_a_report_stored_under_the_former_names_reads_with_todays():
    stored = {"n": 3, "perturbations": {"lead marker": {"mean_abs_dp": 0.01}, "text label": {"mean_abs_dp": 0.02},
                                        "blur": {"mean_abs_dp": 0.03}},
              "per_image": [{"name": "a.png", "lead marker": 0.1, "blur": -0.1}]}
    report = read_stored_report(stored)
    assert list(report["perturbations"]) == ["lead_marker", "text_label", "blur"]
    assert report["perturbations"]["text_label"] == {"mean_abs_dp": 0.02}
    assert report["per_image"] == [{"name": "a.png", "lead_marker": 0.1, "blur": -0.1}]
    assert list(stored["perturbations"])[0] == "lead marker", "the stored block itself is left alone"


def test_the_shipped_v5_shortcut_block_reads_with_todays_names():
    from fracture.checkpoints.format import read_checkpoint_meta

    meta = read_checkpoint_meta(Path(__file__).resolve().parents[2] / "weights" / "fracatlas_lite0_v5.safetensors")
    assert list(read_stored_report(meta["shortcuts"])["perturbations"]) == list(PERTURBATIONS)
    if isinstance(meta.get("shortcuts_before"), dict):
        assert set(read_stored_report(meta["shortcuts_before"])["perturbations"]) <= set(PERTURBATIONS)


def test_the_cli_refuses_an_unknown_name_in_one_line_with_exit_2(tmp_path, capsys):
    from fracture.cli import main

    code = main(["shortcuts", "--checkpoint", str(tmp_path / "none.safetensors"), "--data", str(tmp_path),
                 "--perturbations", "lead_marker", "lead-marker"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "'lead-marker'" in err and "lead_marker, text_label" in err


def test_heatmap_maximum_on_a_box_and_the_box_share():
    heat = np.zeros((100, 200))
    heat[10, 20] = 1.0
    assert max_on_box(heat, (15, 5, 30, 15), margin=0.0) is True
    assert max_on_box(heat, (50, 50, 60, 60), margin=0.0) is False
    assert max_on_box(heat, (22, 12, 30, 15), margin=0.0) is False
    assert max_on_box(heat, (22, 12, 30, 15), margin=0.02) is True  # 4 px of slack
    assert max_on_box(None, (0, 0, 1, 1)) is None
    assert box_share((100, 200), (0, 0, 100, 50), margin=0.0) == pytest.approx(0.25)


@dataclass
class _Item:
    prob: float
    heatmap: np.ndarray


@dataclass
class _Study:
    images: list


class _BrightnessModel:
    """P = mean brightness / 255; heatmap = the image (its maximum is the brightest pixel)."""

    threshold = 0.2
    cam_choice = None

    def predict(self, images, with_cam=True):
        return _Study([_Item(float(img.mean()) / 255, img.astype(np.float64)) for img in images])


def test_figures_follow_from_the_predictions():
    images = [_xray(seed=i) for i in range(3)]
    report = measure_shortcuts(_BrightnessModel(), images, perturbations=("inversion", "lead_marker", "blur"))
    inv = report["perturbations"]["inversion"]
    expected = np.mean([abs((255 - img).mean() - img.mean()) / 255 for img in images])
    assert inv["mean_abs_dp"] == pytest.approx(expected)
    before = [img.mean() / 255 >= 0.2 for img in images]
    after = [(255 - img).mean() / 255 >= 0.2 for img in images]
    assert inv["flip_rate"] == pytest.approx(np.mean([a != b for a, b in zip(after, before)]))
    marker = report["perturbations"]["lead_marker"]
    assert marker["heatmap_on_stamp"] == 1.0 and marker["heatmap_on_stamp_before"] == 0.0  # white stamp = max
    assert 0 < marker["box_share"] < 0.1 and "heatmap_on_stamp" not in report["perturbations"]["blur"]
    assert len(report["per_image"]) == 3 and set(report["per_image"][0]) >= {"name", "probability", "inversion"}
    assert len(summary_lines(report)) == 4


@pytest.mark.slow  # trains a tiny model
def test_shortcuts_cli_on_the_demo_set_stores_figures_for_the_card(demo_root, tmp_path, capsys):
    from fracture.checkpoints.format import read_checkpoint_meta
    from fracture.cli import main
    from fracture.assess.card import shortcut_card_lines

    run = tmp_path / "run"
    assert main(["train", "--data", str(demo_root), "--out", str(run), "--model", "small_cnn", "--image-size", "48",
                 "--epochs", "1", "--batch-size", "16", "--cache-dir", str(tmp_path / "cache")]) == 0
    capsys.readouterr()
    out = tmp_path / "shortcuts.json"
    assert main(["shortcuts", "--checkpoint", str(run), "--data", str(demo_root), "--limit", "4",
                 "--perturbations", "lead_marker", "text_label", "inversion", "--json", str(out), "--write-meta"]) == 0
    printed = capsys.readouterr().out
    assert "lead_marker" in printed and "4 test-split images" in printed
    report = json.loads(out.read_text())
    assert report["n"] == 4 and report["split"] == "test" and list(report["perturbations"]) == [
        "lead_marker", "text_label", "inversion"]
    for figures in report["perturbations"].values():
        assert 0 <= figures["mean_abs_dp"] <= 1 and 0 <= figures["flip_rate"] <= 1
    assert 0 <= report["perturbations"]["lead_marker"]["heatmap_on_stamp"] <= 1
    stored = read_checkpoint_meta(run / "best.safetensors")["shortcuts"]
    assert "per_image" not in stored and stored["perturbations"] == report["perturbations"]
    card = "\n".join(shortcut_card_lines({"shortcuts": stored}))
    assert "## Shortcuts" in card and "| lead marker |" in card and "--limit 4" in card
    assert main(["shortcuts", "--checkpoint", str(run), "--data", str(demo_root), "--perturbations", "sticker"]) == 2
