"""The synthetic demo dataset: layout, CSV format, determinism, lesions, no label leaks."""
from __future__ import annotations

import csv
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from fracture.cli import main as cli_main
from fracture.data.demo import (
    BODY_PARTS,
    GENERATOR_VERSION,
    LOCATION_COLUMNS,
    SHIFT_RANGE,
    make_demo_dataset,
    read_demo_marker,
    read_fracture_locations,
    render_demo_image,
)
from fracture.errors import DatasetError

SIZE_RANGE = (96, 192)  # small images keep the tests fast
IMAGE_ROW = re.compile(
    r"^MURA-v1\.1/(train|valid)/XR_([A-Z]+)/patient(\d{5})/study(\d+)_(positive|negative)/"
    r"image(\d+)\.png$")
STUDY_ROW = re.compile(
    r"^MURA-v1\.1/(train|valid)/XR_([A-Z]+)/patient(\d{5})/study(\d+)_(positive|negative)/$")


@pytest.fixture(scope="module")
def demo_set(tmp_path_factory) -> Path:
    return make_demo_dataset(tmp_path_factory.mktemp("demo") / "MURA-v1.1", seed=0, studies=60,
                             size_range=SIZE_RANGE)


def _read_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


@pytest.fixture(scope="module")
def images(demo_set) -> list[dict]:
    """One dict per image listed in the image CSVs, with label and pixel statistics."""
    rows = []
    for split in ("train", "valid"):
        for (listed,) in _read_rows(demo_set / f"{split}_image_paths.csv"):
            match = IMAGE_ROW.match(listed)
            assert match, listed
            rel = listed.split("/", 1)[1]
            path = demo_set / rel
            with Image.open(path) as im:
                mode = im.mode
                pixels = np.asarray(im)
            gray = pixels if pixels.ndim == 2 else pixels[..., 0]
            rows.append({
                "rel": rel, "split": split, "part": match.group(2).lower(),
                "patient": match.group(3), "study": rel.rsplit("/", 1)[0],
                "label": int(match.group(5) == "positive"), "mode": mode, "pixels": pixels,
                "mean": float(gray.mean()), "height": gray.shape[0], "width": gray.shape[1],
                "bytes_per_px": path.stat().st_size / gray.size,
            })
    return rows


def test_csvs_have_the_mura_format(demo_set, images):
    for split in ("train", "valid"):
        study_rows = _read_rows(demo_set / f"{split}_labeled_studies.csv")
        assert study_rows, f"{split} has no studies"
        labels = {}
        for path, label in study_rows:  # header-less, two columns
            match = STUDY_ROW.match(path)
            assert match and match.group(1) == split, path
            assert label == ("1" if match.group(5) == "positive" else "0")
            labels[path.split("/", 1)[1].rstrip("/")] = int(label)
        split_images = [r for r in images if r["split"] == split]
        assert {r["study"] for r in split_images} == set(labels)
        assert all(labels[r["study"]] == r["label"] for r in split_images)
    for row in images:
        assert (demo_set / row["rel"]).is_file()


def test_files_on_disk_are_exactly_the_listed_ones(demo_set, images):
    on_disk = {p.relative_to(demo_set).as_posix() for p in demo_set.rglob("*.png")}
    assert on_disk == {r["rel"] for r in images}
    assert {p.name for p in demo_set.iterdir() if p.is_file()} == {
        "train_image_paths.csv", "train_labeled_studies.csv", "valid_image_paths.csv",
        "valid_labeled_studies.csv", "DEMO.txt", "fracture_locations.csv"}


def test_study_structure_and_balance(images):
    views = defaultdict(int)
    studies_of = defaultdict(set)
    split_of = defaultdict(set)
    label_of = {}
    for row in images:
        views[row["study"]] += 1
        studies_of[row["patient"]].add(row["study"])
        split_of[row["patient"]].add(row["split"])
        label_of[row["study"]] = (row["split"], row["label"])
    assert len(views) == 60
    assert set(views.values()) <= {1, 2, 3, 4} and len(set(views.values())) > 1
    assert all(1 <= len(s) <= 2 for s in studies_of.values())
    assert all(len(s) == 1 for s in split_of.values()), "a patient is on both sides"
    valid = [lab for split, lab in label_of.values() if split == "valid"]
    assert 0.12 <= len(valid) / len(label_of) <= 0.3
    abnormal = sum(lab for _, lab in label_of.values()) / len(label_of)
    assert 0.3 <= abnormal <= 0.5
    assert 0 < sum(valid) < len(valid)  # both classes in valid


def test_all_body_parts_and_both_file_modes(images):
    assert {r["part"] for r in images} == set(BODY_PARTS)
    modes = [r["mode"] for r in images]
    assert set(modes) == {"L", "RGB"}
    assert 0.1 <= modes.count("RGB") / len(modes) <= 0.45
    for row in images:
        if row["mode"] == "RGB":
            px = row["pixels"]
            assert (px[..., 0] == px[..., 1]).all() and (px[..., 1] == px[..., 2]).all()
        assert SIZE_RANGE[0] <= min(row["height"], row["width"])
        assert max(row["height"], row["width"]) <= SIZE_RANGE[1]
    assert any(r["height"] != r["width"] for r in images)


def test_demo_marker(demo_set):
    marker = read_demo_marker(demo_set)
    assert marker is not None
    assert marker["seed"] == "0" and marker["generator_version"] == GENERATOR_VERSION
    assert "synthetic" in (demo_set / "DEMO.txt").read_text()
    assert read_demo_marker(demo_set / "train") is None


def test_fracture_sidecar_points_at_abnormal_images(demo_set, images):
    by_rel = {r["rel"]: r for r in images}
    with open(demo_set / "fracture_locations.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == LOCATION_COLUMNS
        rows = list(reader)
    assert rows
    for row in rows:
        image = by_rel[row["path"]]
        assert image["label"] == 1
        assert row["kind"] in {"fracture", "hardware"}
        assert 0 <= float(row["x"]) < image["width"] and 0 <= float(row["y"]) < image["height"]
        assert int(row["bone"]) >= 0 and 0 <= float(row["angle"]) < 180
        assert float(row["displacement"]) >= 0
    positive_studies = {r["study"] for r in images if r["label"] == 1}
    assert {row["path"].rsplit("/", 1)[0] for row in rows} == positive_studies
    kinds = [row["kind"] for row in rows]
    assert kinds.count("fracture") > kinds.count("hardware") > 0
    frame = read_fracture_locations(demo_set)
    assert len(frame) == len(rows) and all(Path(p).is_absolute() for p in frame["path"])


def test_label_does_not_leak_through_simple_statistics(images):
    y = np.array([r["label"] for r in images])
    means = np.array([r["mean"] for r in images])
    gap = abs(means[y == 1].mean() - means[y == 0].mean())
    assert gap < 0.25 * means.std()
    for key in ("mean", "bytes_per_px", "height", "width"):
        values = np.array([r[key] for r in images], dtype=float)
        auc = roc_auc_score(y, values)
        assert 0.3 < auc < 0.7, f"{key} predicts the label (AUC {auc:.2f})"
    rgb = np.array([r["mode"] == "RGB" for r in images])
    assert abs(rgb[y == 1].mean() - rgb[y == 0].mean()) < 0.2


def test_same_seed_writes_identical_bytes(tmp_path):
    first = make_demo_dataset(tmp_path / "a", seed=5, studies=4, size_range=SIZE_RANGE)
    second = make_demo_dataset(tmp_path / "b", seed=5, studies=4, size_range=SIZE_RANGE)
    other = make_demo_dataset(tmp_path / "c", seed=6, studies=4, size_range=SIZE_RANGE)

    def contents(root: Path) -> dict[str, bytes]:
        return {p.relative_to(root).as_posix(): p.read_bytes()
                for p in sorted(root.rglob("*")) if p.is_file()}

    assert contents(first) == contents(second)
    assert contents(first) != contents(other)


def test_rerun_replaces_an_earlier_demo_set_and_refuses_other_folders(tmp_path):
    root = make_demo_dataset(tmp_path / "demo", seed=1, studies=6, size_range=SIZE_RANGE)
    make_demo_dataset(root, seed=2, studies=3, size_range=SIZE_RANGE)
    listed = {row[0].split("/", 1)[1] for split in ("train", "valid")
              for row in _read_rows(root / f"{split}_image_paths.csv")}
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*.png")}
    assert listed == on_disk  # nothing stale from the first run
    other = tmp_path / "photos"
    other.mkdir()
    (other / "holiday.jpg").write_bytes(b"not ours")
    with pytest.raises(DatasetError, match="DEMO.txt"):
        make_demo_dataset(other, studies=3)
    assert (other / "holiday.jpg").read_bytes() == b"not ours"
    with pytest.raises(DatasetError, match="studies"):
        make_demo_dataset(tmp_path / "x", studies=1)


@pytest.mark.parametrize("part", BODY_PARTS)
def test_lesion_changes_pixels_only_around_its_location(part):
    for study in range(6):
        shown, location = render_demo_image(part, seed=3, study=study, abnormal=True,
                                            size_range=SIZE_RANGE)
        hidden, none = render_demo_image(part, seed=3, study=study, abnormal=True,
                                         show_lesion=False, size_range=SIZE_RANGE)
        assert none is None and location is not None
        assert shown.shape == hidden.shape and shown.dtype == np.uint8
        diff = np.abs(shown.astype(int) - hidden.astype(int)) > 12
        assert diff.any(), f"{part} study {study}: the {location['kind']} is invisible"
        ys, xs = np.nonzero(diff)
        assert xs.min() - 3 <= location["x"] <= xs.max() + 3
        assert ys.min() - 3 <= location["y"] <= ys.max() + 3
        assert diff.mean() < 0.2  # a lesion, not a different picture


def test_normal_images_are_their_abnormal_twin_without_the_lesion():
    # Framing, exposure, marker and noise do not depend on the label: only the lesion does.
    for part in BODY_PARTS:
        normal, location = render_demo_image(part, seed=4, study=2, view=1, abnormal=False,
                                             size_range=SIZE_RANGE)
        twin, _ = render_demo_image(part, seed=4, study=2, view=1, abnormal=True,
                                    show_lesion=False, size_range=SIZE_RANGE)
        assert location is None and normal.ndim == 2
        np.testing.assert_array_equal(normal, twin)


def test_unknown_parts_and_sizes_fail():
    with pytest.raises(DatasetError, match="knee"):
        render_demo_image("knee")
    with pytest.raises(DatasetError, match="size_range"):
        render_demo_image("hand", size_range=(300, 200))


def test_mura_reader_reads_the_demo_set(demo_set, images):
    from fracture.data.readers.mura import read_mura

    manifest = read_mura(demo_set, seed=0)
    assert manifest.problems == []
    frame = manifest.frame
    assert len(frame) == len(images)
    assert set(frame["source"]) == {"demo"}
    assert set(frame["body_part"]) == set(BODY_PARTS)
    labels = {str(demo_set / r["rel"]): r["label"] for r in images}
    assert all(labels[p] == lab for p, lab in zip(frame["path"], frame["label"]))


def test_cli_demo_data_prints_counts(tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli_main(["demo-data", "--out", str(out), "--seed", "2", "--studies", "8",
                     "--min-size", "96", "--max-size", "128"]) == 0
    text = capsys.readouterr().out
    assert "8 studies" in text and "train" in text and "abnormal" in text
    assert (out / "DEMO.txt").is_file()
    assert cli_main(["demo-data", "--out", str(tmp_path / "bad"), "--studies", "1"]) == 2


# ----------------------------------------------------------- difficulty is the generator's

DIFFICULTY_SEEDS = range(5)
DRAW_STUDIES = 40


@pytest.fixture(scope="module")
def draws(tmp_path_factory) -> dict[int, Path]:
    """Five small demo sets that differ only in their seed."""
    base = tmp_path_factory.mktemp("draws")
    return {seed: make_demo_dataset(base / f"seed{seed}", seed=seed, studies=DRAW_STUDIES,
                                    size_range=(64, 96)) for seed in DIFFICULTY_SEEDS}


def _lesion_rows(root: Path) -> dict[str, dict]:
    with open(root / "fracture_locations.csv", newline="") as handle:
        return {row["path"]: row for row in csv.DictReader(handle)}


def _make_up(root: Path) -> dict:
    """What sets a split's difficulty, counted from the written files only."""
    lesions = _lesion_rows(root)
    counts: dict = defaultdict(int)
    for split in ("train", "valid"):
        for (listed,) in _read_rows(root / f"{split}_image_paths.csv"):
            match = IMAGE_ROW.match(listed)
            part, positive = match.group(2), match.group(5) == "positive"
            rel = listed.split("/", 1)[1]
            kind = lesions[rel]["kind"] if rel in lesions else ("unshown" if positive else "normal")
            counts[(split, "images", part, positive)] += 1
            counts[(split, "images of kind", kind)] += 1
        for path, label in _read_rows(root / f"{split}_labeled_studies.csv"):
            counts[(split, "studies", STUDY_ROW.match(path).group(2), label)] += 1
    return dict(counts)


def test_every_seed_draws_splits_of_the_same_make_up(draws):
    make_ups = {seed: _make_up(root) for seed, root in draws.items()}
    first = make_ups[0]
    for seed, make_up in make_ups.items():
        assert make_up == first, f"seed {seed} draws a different make-up than seed 0"
    # ... and it is a real mix, not one part or one kind.
    assert sum(v for k, v in first.items() if k[:2] == ("valid", "studies")) == round(0.2 * DRAW_STUDIES)
    kinds = {k[2]: v for k, v in first.items() if k[:2] == ("train", "images of kind")}
    assert kinds["fracture"] > kinds["hardware"] > 0 and kinds["normal"] > kinds["fracture"]
    assert {k[2] for k in first if k[:2] == ("train", "studies")} == {p.upper() for p in BODY_PARTS}


def _fracture_displacements(root: Path) -> dict[str, list[float]]:
    """Per split, each fractured study's fragment shift in units of a 300 px long side, sorted."""
    per_study: dict[str, float] = {}
    for rel, row in _lesion_rows(root).items():
        if row["kind"] == "fracture":
            with Image.open(root / rel) as im:
                long_side = max(im.size)
            per_study.setdefault(rel.rsplit("/", 1)[0], float(row["displacement"]) * 300 / long_side)
    split = defaultdict(list)
    for study, shift in per_study.items():
        split[study.split("/", 1)[0]].append(shift)
    return {name: sorted(values) for name, values in split.items()}


def test_every_seed_draws_the_same_spread_of_fracture_strength(draws):
    spreads = {seed: _fracture_displacements(root) for seed, root in draws.items()}
    for seed, spread in spreads.items():
        assert spread.keys() == spreads[0].keys() == {"train", "valid"}
        for split, values in spread.items():
            # The sidecar rounds the shift to 0.01 px of a 64-96 px image: 0.05 units of slack.
            np.testing.assert_allclose(values, spreads[0][split], atol=0.05,
                                       err_msg=f"seed {seed}, {split}: another spread of shifts")
    low, high = SHIFT_RANGE
    train = spreads[0]["train"]
    assert train[0] < low + 0.2 * (high - low) and train[-1] > high - 0.2 * (high - low), \
        "faint and plain breaks both drawn"


def test_lesion_quantiles_set_the_lesion_and_are_checked():
    shifts = []
    for q in (0.0, 0.99):
        _, location = render_demo_image("forearm", seed=1, study=0, abnormal=True, size_range=(300, 300),
                                        lesion_quantiles={"kind": 0.1, "displacement": q})
        assert location["kind"] == "fracture"
        shifts.append(location["displacement"])
    low, high = SHIFT_RANGE
    assert shifts == pytest.approx([low, low + 0.99 * (high - low)], abs=0.01)
    _, hardware = render_demo_image("forearm", seed=1, study=0, abnormal=True, size_range=(300, 300),
                                    lesion_quantiles={"kind": 0.9})
    assert hardware["kind"] == "hardware"
    with pytest.raises(DatasetError, match="lesion quantile"):
        render_demo_image("forearm", lesion_quantiles={"size": 0.5})
    with pytest.raises(DatasetError, match="lesion quantile"):
        render_demo_image("forearm", lesion_quantiles={"gap": 1.0})


def test_metal_is_whiter_than_bone_and_the_neighbouring_finger_is_never_the_site():
    for part in BODY_PARTS:
        for study in range(3):
            kwargs = dict(seed=2, study=study, size_range=(200, 300), lesion_quantiles={"kind": 0.9})
            image, location = render_demo_image(part, abnormal=True, **kwargs)
            twin, _ = render_demo_image(part, abnormal=False, **kwargs)
            assert location["kind"] == "hardware"
            metal = np.abs(image.astype(int) - twin.astype(int)) > 30
            # Near white even on a thick humerus, where adding to the bone's attenuation saturated.
            assert np.percentile(image[metal], 90) >= 240, f"{part} study {study}: dull metal"
    sites = {render_demo_image("finger", seed=1, study=study, abnormal=True, size_range=(96, 128),
                               lesion_quantiles={"kind": 0.1, "bone": q})[1]["bone_name"]
             for study in range(3) for q in np.linspace(0, 0.99, 12)}
    assert sites and not any(name.startswith("neighbouring") for name in sites)
    assert {"metacarpal", "finger phalanx 1", "finger phalanx 3"} <= sites, sites
