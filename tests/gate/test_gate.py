"""The two-level "is this something the model knows?" gate: DICOM modality, colour, the pixel gate
fitted by calibration, level (b) differences, and predict --json end to end on a tiny demo model."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fracture.gate.modality import classify_modality
from fracture.gate.radiograph import (COLOUR_LIMIT, STATISTICS, GateError, RadiographGate, SourceFacts, check,
                                      differences, fit_gate, image_statistics)


@pytest.mark.parametrize("modality, radiograph, named", [
    ("CR", True, None), ("DX", True, None), ("MG", True, None), ("RG", True, None),
    ("MR", False, "magnetic resonance"), ("CT", False, "computed tomography"), ("NM", False, "nuclear medicine"),
    ("US", False, "ultrasound"), ("PT", False, "positron emission"), ("OT", False, "other"),
    ("SC", False, "secondary capture"), ("XC", False, "photography"),
])
def test_modality_tag_decides_with_the_modality_named(modality, radiograph, named):
    verdict = classify_modality({"Modality": modality})
    assert verdict.radiograph is radiograph
    if named:
        assert modality in verdict.reason and named in verdict.reason


def test_sop_class_is_read_when_the_modality_tag_is_missing():
    assert classify_modality({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.1"}).radiograph is True  # CR storage
    assert classify_modality({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.1.1"}).radiograph is True  # DX
    ct = classify_modality({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.2.1"})  # enhanced CT
    assert ct.radiograph is False and "CT Image Storage" in ct.reason
    nm = classify_modality({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.20"})
    assert nm.radiograph is False and "Nuclear Medicine" in nm.reason
    assert classify_modality({}).radiograph is None  # a PNG says nothing
    assert classify_modality({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.7"}).radiograph is None  # SC: pixels decide


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def test_the_loader_hands_over_dicom_tags_bit_depth_and_colour():
    import pydicom.data
    import skimage.data

    from fracture.data.imageio import decode_image

    mr = decode_image(pydicom.data.get_testdata_file("MR_small.dcm"))
    assert dict(mr.dicom)["Modality"] == "MR" and mr.bit_depth == 16 and mr.colourfulness == 0
    verdict = check(SourceFacts.of(mr))
    assert verdict["radiograph"] is False and verdict["checked_by"] == "dicom" and "MR" in verdict["reason"]
    photo = decode_image(_png(skimage.data.astronaut()))
    assert photo.colourfulness > COLOUR_LIMIT and photo.bit_depth == 8 and photo.dicom == ()
    verdict = check(SourceFacts.of(photo))
    assert verdict["radiograph"] is False and verdict["checked_by"] == "colour" and "colour" in verdict["reason"]
    gray = decode_image(_png(skimage.data.camera()))
    assert gray.colourfulness == 0 and check(SourceFacts.of(gray))["radiograph"] is True


def test_statistics_see_documents_as_white_and_flat():
    from fracture.gate.probes import documents

    page = documents(n=1)["document_0"]
    dark = np.zeros((64, 64), np.uint8)
    stats = image_statistics(np.stack([np.resize(page, (64, 64)), dark]))
    assert stats.shape == (2, len(STATISTICS))
    named = dict(zip(STATISTICS, stats[0]))
    assert named["white_share"] > 0.5 and named["mode_share"] > 0.5
    assert dict(zip(STATISTICS, stats[1]))["black_share"] == 1.0


def _clusters(n, shift, seed, dim=16):
    rng = np.random.default_rng(seed)
    return np.abs(rng.normal(1, 0.2, (n, dim)) + shift * np.eye(dim)[0]), rng.random((n, len(STATISTICS))) + shift


def test_fit_gate_separates_and_keeps_validation_radiographs_in():
    xr, sr = _clusters(60, 0.0, 1)
    xo, so = _clusters(60, 3.0, 2)
    vr, vs = _clusters(100, 0.0, 3)
    gate = fit_gate(xr, sr, xo, so, val_features=vr, val_stats=vs)
    assert gate.threshold >= 0.5 and gate.val_gated_rate <= 0.01
    assert gate.gated(*_clusters(50, 3.0, 4)).mean() == 1.0
    assert gate.gated(*_clusters(50, 0.0, 5)).mean() <= 0.05
    with pytest.raises(GateError, match="at least 5"):
        fit_gate(xr[:3], sr[:3], xo, so)


def test_gate_round_trips_through_a_checkpoint_and_a_damaged_one_is_refused(tmp_path):
    import torch

    from fracture.checkpoints.format import load_checkpoint, save_checkpoint
    from fracture.errors import CheckpointError
    from fracture.models import create_model

    model = create_model("small_cnn", in_chans=1)
    dim = 16
    xr, sr = _clusters(30, 0.0, 1, dim)
    xo, so = _clusters(30, 3.0, 2, dim)
    gate = fit_gate(xr, sr, xo, so)
    meta = {"image_size": 32, "preprocess": [{"op": "resize", "size": 32, "mode": "letterbox"}],
            "normalization": {"mean": [0.5], "std": [0.5]}, "class_names": ["normal", "abnormal"],
            "body_parts": [], "multitask": False, "threshold": 0.5, "radiograph_gate": gate.meta_block()}
    path = tmp_path / "g.safetensors"
    save_checkpoint(path, model, meta, extra_tensors=gate.tensors())
    loaded, meta2 = load_checkpoint(path)
    again = RadiographGate.from_checkpoint(meta2, loaded.checkpoint_extras)
    assert np.allclose(again.probability(xo, so), gate.probability(xo, so), atol=1e-5)
    assert RadiographGate.from_checkpoint({}, {}) is None
    broken = {**loaded.checkpoint_extras, "ood.gate.scale": torch.zeros(dim + len(STATISTICS))}
    with pytest.raises(CheckpointError, match="radiograph_gate"):
        RadiographGate.from_checkpoint(meta2, broken, where=str(path))
    with pytest.raises(CheckpointError, match="lacks"):
        RadiographGate.from_checkpoint(meta2, {}, where=str(path))


def test_fit_and_held_out_probes_are_disjoint():
    from fracture.gate import probes

    assert not set(probes.FIT_PHOTOS) & set(probes.HELD_OUT_PHOTOS)
    fit = probes.fit_probe_sets()
    held = probes.probe_sets()
    assert set(held) == set(probes.NOT_RADIOGRAPH_GROUPS)
    assert len(fit) > 100 and all(img.dtype == np.uint8 and img.ndim == 2 for img in fit.values())
    fit_pixels = {img.tobytes() for img in fit.values()}
    assert not any(img.tobytes() in fit_pixels for group in held.values() for img in group.values())
    slices = held["CT/MR-like slices"]
    assert {"ct_slice_0", "mr_slice_1", "shepp_logan_phantom"} <= set(slices)


def test_level_b_says_how_a_radiograph_differs():
    from fracture.gate.ood import WARNING, unfamiliar_warning
    from fracture.gate.radiograph import NOT_RADIOGRAPH

    facts = SourceFacts(bit_depth=16, dicom=(("Modality", "DX"), ("PatientAge", "010Y"), ("BodyPartExamined", "CHEST")))
    how = differences(facts, {"flagged": True, "score": 2.3, "threshold": 1.7}, ["hand", "leg", "hip", "mixed"])
    assert len(how) == 4
    assert any("16-bit" in h for h in how) and any("child" in h for h in how) and any("CHEST" in h for h in how)
    assert any("2.30 > 1.70" in h for h in how)
    assert differences(SourceFacts(), {"flagged": False, "score": 1.0, "threshold": 1.7}) == []
    assert differences(SourceFacts(dicom=(("PatientAge", "045Y"),)), None) == []
    assert differences(None, {"flagged": True, "score": None, "threshold": 1.7, "error": "score is nan"}) == ["score is nan"]
    assert "CHEST" in unfamiliar_warning(how) and unfamiliar_warning([]) == WARNING
    assert "Not a radiograph" in NOT_RADIOGRAPH and "Not a radiograph" not in WARNING


# ---------------------------------------------------------------- end to end on a tiny demo model


@pytest.fixture(scope="module")
def gated_checkpoint(demo_root, tmp_path_factory) -> Path:
    """A small_cnn trained on the demo set, calibrated (OOD + radiograph gate) on its non-test images."""
    from fracture.checkpoints.format import load_checkpoint
    from fracture.cli import main
    from fracture.data import load_image, open_dataset
    from fracture.assess.calibration import SplitSource, fit_calibration
    from fracture.preprocess.pipeline import Pipeline

    run = tmp_path_factory.mktemp("gate") / "run"
    assert main(["train", "--data", str(demo_root), "--out", str(run), "--model", "small_cnn", "--image-size", "64",
                 "--epochs", "2", "--batch-size", "16", "--lr", "0.003", "--scheduler", "onecycle",
                 "--cache-dir", str(tmp_path_factory.mktemp("gate-cache"))]) == 0
    path = run / "best.safetensors"
    model, meta = load_checkpoint(path)
    frame = open_dataset(demo_root).frame.reset_index(drop=True)
    pipeline = Pipeline.from_spec(meta["preprocess"])
    fit = np.flatnonzero(frame["split"].to_numpy() != "test")
    images = np.stack([pipeline(load_image(p)) for p in frame["path"].iloc[fit]])
    labels = frame["label"].to_numpy()[fit]
    fit_calibration(path, model, meta, val=SplitSource(lambda p: images[p], len(fit), labels),
                    train=SplitSource(lambda p: images[p], len(fit)))
    return path


def _predict_json(checkpoint: Path, files: list[Path], capsys) -> dict:
    from fracture.cli import main

    assert main(["predict", "--checkpoint", str(checkpoint), "--json", *map(str, files)]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.slow  # trains and calibrates a tiny model (gated_checkpoint)
def test_calibration_stores_the_gate(gated_checkpoint):
    from fracture.checkpoints.format import read_checkpoint_meta

    block = read_checkpoint_meta(gated_checkpoint)["radiograph_gate"]
    assert block["threshold"] >= 0.5 and block["val_gated_rate"] <= 0.01
    assert block["n_other"] > 100 and block["statistics"] == list(STATISTICS)


@pytest.mark.slow  # trains and calibrates a tiny model (gated_checkpoint)
def test_predict_json_refuses_what_is_not_a_radiograph(gated_checkpoint, tmp_path, capsys):
    import pydicom.data
    import skimage.data

    from fracture.gate.probes import HELD_OUT_SEED, documents

    photo = tmp_path / "astronaut.png"
    photo.write_bytes(_png(skimage.data.astronaut()))
    shot = tmp_path / "screenshot.png"
    shot.write_bytes(_png(documents(n=2, seed=HELD_OUT_SEED)["screenshot_1"]))
    files = [photo, shot, Path(pydicom.data.get_testdata_file("MR_small.dcm"))]
    nm = pydicom.data.get_testdata_file("JPEG2000.dcm")
    if nm:
        files.append(Path(nm))
    payload = _predict_json(gated_checkpoint, files, capsys)
    by_name = {image["name"]: image for image in payload["images"]}
    expected = {"astronaut.png": "colour", "screenshot.png": "pixels", "MR_small.dcm": "dicom", "JPEG2000.dcm": "dicom"}
    for name, image in by_name.items():
        gate = image["gate"]
        assert gate["radiograph"] is False and gate["reason"], (name, gate)
        assert gate["checked_by"] == expected[name], (name, gate)
        assert image["label"] is None and image["probability"] is None and image["positive"] is None
    assert "MR" in by_name["MR_small.dcm"]["gate"]["reason"]
    if nm:
        assert "NM" in by_name["JPEG2000.dcm"]["gate"]["reason"]
    assert payload["study_label"] is None and payload["study_probability"] is None
    assert payload["gate"]["radiograph"] is False and len(payload["gate"]["refused"]) == len(files)


@pytest.mark.slow  # trains and calibrates a tiny model (gated_checkpoint)
def test_a_radiograph_and_its_mirror_pass_with_a_label(gated_checkpoint, demo_root, tmp_path, capsys):
    from fracture.data import load_image, open_dataset

    test = open_dataset(demo_root).subset("test")
    original = Path(test["path"].iloc[0])
    mirrored = tmp_path / "mirrored.png"
    mirrored.write_bytes(_png(np.ascontiguousarray(load_image(original)[:, ::-1])))
    payload = _predict_json(gated_checkpoint, [original, mirrored], capsys)
    for image in payload["images"]:
        assert image["gate"]["radiograph"] is True and image["gate"]["reason"] is None, image["gate"]
        assert image["gate"]["checked_by"] == "pixels"
        assert image["label"] in payload["class_names"] and 0 <= image["probability"] <= 1
    assert payload["study_label"] in payload["class_names"] and payload["gate"]["refused"] == []


@pytest.mark.slow  # trains and calibrates a tiny model (gated_checkpoint)
def test_a_refused_image_is_left_out_of_the_study(gated_checkpoint, demo_root, capsys):
    import skimage.data

    from fracture.data import load_image, open_dataset
    from fracture.data.imageio import decode_image
    from fracture.serve.predictor import Predictor

    radiograph = decode_image(open_dataset(demo_root).subset("test")["path"].iloc[0])
    photo = decode_image(_png(skimage.data.astronaut()))
    predictor = Predictor.from_checkpoint(gated_checkpoint)
    both = predictor.predict([radiograph.image, photo.image], sources=[radiograph, photo], with_cam=False)
    alone = predictor.predict([radiograph.image], sources=[radiograph], with_cam=False)
    assert [p.is_radiograph for p in both.images] == [True, False]
    assert both.study_prob == pytest.approx(alone.study_prob) and both.study_label == alone.study_label
    assert both.operating_points, "every checkpoint offers at least its stored threshold"
    for point in both.operating_points:  # a refused image gets no label at any operating point
        relabelled = both.at_operating_point(point["name"])
        assert relabelled.images[1].label is None and relabelled.images[1].positive is None
        assert relabelled.to_dict()["images"][1]["label"] is None
        assert relabelled.threshold == pytest.approx(point["threshold"])


@pytest.mark.slow  # trains and calibrates a tiny model (gated_checkpoint)
def test_held_out_rates_and_the_card_section(gated_checkpoint):
    """The tiny demo model's gate on the held-out probes, and the card's "What is this image?" section."""
    from fracture.checkpoints.format import load_checkpoint
    from fracture.assess.card import gate_card_lines
    from fracture.gate.probes import probe_sets
    from fracture.assess.gate_fit import measure
    from fracture.serve.scorer import Scorer

    model, meta = load_checkpoint(gated_checkpoint)
    gate = RadiographGate.from_checkpoint(meta, model.checkpoint_extras)
    groups = probe_sets()
    rates = measure(gate, Scorer.from_model(gated_checkpoint, model, meta), groups)
    for name in ("documents and screen shots", "synthetic noise", "CT/MR-like slices"):
        # At most one miss per group: the tiny model's training is not bit-reproducible across runs (thread
        # scheduling), and with 9-14 images a group's rate moves by one image between runs.
        assert rates[name]["n"] == len(groups[name]) and rates[name]["gated"] >= rates[name]["n"] - 1, (name, rates[name])
    photos = rates["natural photos"]
    assert photos["gated_as_files"] >= photos["gated"] and photos["gated_as_files"] >= photos["n"] - 1
    card = "\n".join(gate_card_lines({**meta, "radiograph_gate": {**meta["radiograph_gate"],
                                                                  "measured": {"probes": rates}}}))
    assert "## What is this image?" in card and "| synthetic noise |" in card and "as colour files" in card


@pytest.mark.slow  # trains and calibrates a tiny model (gated_checkpoint)
def test_batch_rows_say_why_a_file_is_not_a_radiograph(gated_checkpoint, demo_root):
    import pydicom.data
    import skimage.data

    from fracture.data import open_dataset
    from fracture.serve.batch import CSV_COLUMNS, predict_files

    xray = open_dataset(demo_root).subset("test")["path"].iloc[0]
    items = [("photo.png", _png(skimage.data.astronaut())), ("mr.dcm", Path(pydicom.data.get_testdata_file("MR_small.dcm"))),
             ("xray.png", Path(xray))]
    result = predict_files(items, gated_checkpoint, backend="torch")
    photo, mr, radiograph = result.rows
    assert "colour" in photo.not_radiograph and "MR" in mr.not_radiograph
    for row in (photo, mr):
        assert row.probability is None and row.label == "" and row.error == ""
    assert radiograph.not_radiograph == "" and radiograph.label in result.class_names
    counts = result.counts()
    assert counts["not_radiograph"] == 2 and counts["predicted"] == 1 and counts["unreadable"] == 0
    lines = result.csv_bytes().decode().splitlines()
    assert lines[0] == ",".join(CSV_COLUMNS) and "not_radiograph" in CSV_COLUMNS
    assert "magnetic resonance" in lines[2]
    assert "not a radiograph: a colour picture" in result.html_bytes().decode()
