"""AppTest: the Predict page — uploads, bad files, samples, CLAHE, downloads."""
from __future__ import annotations

import io

import cv2
import numpy as np
import pytest

from app_support import (  # noqa: F401  (fixtures)
    BODY_PARTS,
    app_home,
    demo_template,
    fresh_app_home,
    assert_no_exception,
    make_foreign_and_calibrated,
    metric_values,
    png_bytes,
    run_page,
    write_tiny_run,
)

PAGE = "pages/4_Predict.py"
RUN = "20260101-000000-small_cnn"


@pytest.fixture
def model_run(app_home):
    return write_tiny_run(app_home / "runs", RUN)


def _dicom_without_pixels() -> bytes:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _image_urls(at) -> list[str]:
    """The pictures the X-ray viewer sent (PNG data URIs inside its Plotly figures)."""
    import json

    return [trace["source"] for chart in at.get("plotly_chart")
            for trace in json.loads(chart.proto.spec)["data"] if trace.get("type") == "image"]


def _captions(at) -> list[str]:
    return [c.value for c in at.caption]


def _upload(at, files):
    at.file_uploader(key="predict-upload").set_value(files)
    return at.run()


def test_uploaded_pngs_give_probabilities_an_overlay_and_downloads(model_run):
    from fracture.serve.predictor import Predictor

    images = [png_bytes(96, seed=1), png_bytes(80, seed=2)]
    at = run_page(PAGE, model=RUN)
    assert_no_exception(at)
    _upload(at, [("a.png", images[0], "image/png"), ("b.png", images[1], "image/png")])
    assert_no_exception(at)
    assert not at.error
    from fracture.data import load_image

    expected = Predictor.from_checkpoint(model_run / "best.safetensors").predict(
        [load_image(b) for b in images], with_cam=False)
    metrics = metric_values(at)
    assert metrics["Study P(abnormal)"] == f"{expected.study_prob:.3f}"
    assert metrics["Threshold"] == f"{expected.threshold:.3f}"
    assert metrics["Study label"] == expected.study_label
    captions = _captions(at)
    for name, item in zip(("a.png", "b.png"), expected.images):
        assert any(c.startswith(name) and f"{item.prob:.3f}" in c for c in captions), captions
    assert len(_image_urls(at)) == 2, "one viewer figure per image of the study"
    assert any("heatmap: Grad-CAM" in c for c in captions), "the caption names the heatmap method used"
    labels = [b.proto.label for b in at.get("download_button")]
    assert any("JSON" in label for label in labels) and any("PNG" in label for label in labels)


def test_bad_uploads_each_show_an_error_and_the_good_file_is_still_predicted(model_run):
    ok, huge = cv2.imencode(".png", np.zeros((8200, 8200), np.uint8))  # > MAX_PIXELS, few bytes
    assert ok
    good = png_bytes(64, seed=3)
    files = [
        ("notes.png", b"this is a text file, renamed\n" * 4, "image/png"),
        ("cut.png", good[: len(good) // 2], "image/png"),
        ("huge.png", huge.tobytes(), "image/png"),
        ("report.dcm", _dicom_without_pixels(), "application/dicom"),
        ("good.png", good, "image/png"),
    ]
    at = _upload(run_page(PAGE, model=RUN), files)
    assert_no_exception(at)
    errors = " | ".join(e.value for e in at.error)
    for name, reason in (("notes.png", "not an image"), ("cut.png", "truncated"),
                         ("huge.png", "too many pixels"), ("report.dcm", "no pixels")):
        assert f"{name}: {reason}" in errors, errors
    assert "Study P(abnormal)" in metric_values(at)
    # the page stays usable: a new, good upload replaces the bad ones
    _upload(at, [("again.png", png_bytes(72, seed=4), "image/png")])
    assert_no_exception(at)
    assert not at.error
    assert "Study P(abnormal)" in metric_values(at)


def test_only_bad_uploads_leave_an_error_and_a_hint(model_run):
    at = _upload(run_page(PAGE, model=RUN), [("x.png", b"not an image", "image/png")])
    assert_no_exception(at)
    assert at.error
    assert "Study P(abnormal)" not in metric_values(at)
    assert at.info


def test_sample_study_and_clahe_toggle_change_the_processed_image(model_run):
    at = run_page(PAGE, model=RUN, query={"input": "Sample"})
    assert_no_exception(at)
    assert "Study P(abnormal)" in metric_values(at)
    before = _image_urls(at)
    assert before
    at.toggle(key="predict-clahe-on").set_value(True).run()
    assert_no_exception(at)
    after = _image_urls(at)
    assert len(after) == len(before)
    assert set(after).isdisjoint(before), "CLAHE must change what the model gets (and what is shown)"


def test_a_multitask_model_predicts_the_body_part_and_accepts_a_given_one(app_home):
    write_tiny_run(app_home / "runs", RUN, multitask=True)
    at = run_page(PAGE, model=RUN, query={"input": "Sample"})
    assert_no_exception(at)
    predicted = metric_values(at)["Body part"]
    assert predicted.split(" (")[0] in BODY_PARTS and predicted.endswith("%)")
    at.selectbox(key="predict-body-part").set_value("wrist").run()
    assert_no_exception(at)
    assert metric_values(at)["Body part"] == "wrist"


def _warnings(at) -> str:
    return " | ".join(w.value for w in at.warning)


def test_a_model_from_other_data_warns_on_samples_and_flags_out_of_distribution_images(model_run):
    """Issue 11: FracAtlas-trained model + demo data: a plain mismatch warning; OOD images are flagged."""
    from fracture.data import load_image
    from fracture.serve.predictor import Predictor

    make_foreign_and_calibrated(model_run)
    at = run_page(PAGE, model=RUN, query={"input": "Sample", "samples": "Dataset"})
    assert_no_exception(at)
    warnings = _warnings(at)
    assert "trained on FracAtlas; the demo dataset is synthetic: expect meaningless numbers" in warnings, warnings
    assert "unlike the ones this model was trained on" in warnings
    assert "OOD score" in warnings
    # Uploads are not dataset samples: no mismatch warning, but the OOD warning stays.
    image = png_bytes(96, seed=1)
    _upload(at.radio(key="input").set_value("Upload").run(), [("a.png", image, "image/png")])
    assert_no_exception(at)
    assert "trained on FracAtlas" not in _warnings(at)
    assert "unlike the ones this model was trained on" in _warnings(at)
    expected = Predictor.from_checkpoint(model_run / "best.safetensors").predict([load_image(image)], with_cam=False)
    assert expected.temperature == 2.0 and expected.images[0].ood["flagged"]
    assert metric_values(at)["Study P(abnormal)"] == f"{expected.study_prob:.3f}"  # calibrated, as Predictor gives


def test_operating_points_are_selectable(model_run):
    from fracture.checkpoints.decision import calibrated_threshold

    make_foreign_and_calibrated(model_run, flag_everything=False)
    at = _upload(run_page(PAGE, model=RUN), [("a.png", png_bytes(96, seed=1), "image/png")])
    assert_no_exception(at)
    meta = {"threshold": 0.5, "calibration": {"temperature": 2.0}}
    assert metric_values(at)["Threshold"] == f"{calibrated_threshold(meta, 0.5):.3f}"
    assert "unlike the ones this model was trained on" not in _warnings(at)
    box = at.radio(key="predict-operating-point")  # beside the X-ray: a list whose names wrap, never cut
    assert box.options == ["default (youden, stored in the checkpoint)", "90% sensitivity (screening)"]
    box.set_value("sensitivity_90").run()
    assert_no_exception(at)
    assert metric_values(at)["Threshold"] == f"{calibrated_threshold(meta, 0.2):.3f}"


def test_a_model_trained_on_this_data_gets_no_mismatch_warning(model_run):
    at = run_page(PAGE, model=RUN, query={"input": "Sample", "samples": "Dataset"})
    assert_no_exception(at)
    assert "trained on" not in _warnings(at)
    assert "unlike the ones this model was trained on" not in _warnings(at)


def test_many_files_lists_every_file_without_scrolling_two_rows_at_a_time(model_run):
    from fracture.ui.batch_view import table_height

    at = run_page(PAGE, model=RUN)
    at.radio(key="predict-mode").set_value("Many files").run()
    files = [(f"x{i}.png", png_bytes(40, seed=i), "image/png") for i in range(6)]
    at.file_uploader(key="predict-many-upload").set_value(files).run()
    assert_no_exception(at)
    table = at.dataframe[0]
    assert list(table.value["file"]) == [name for name, _, _ in files]
    assert table_height(6) >= 38 + 6 * 35, "the header and all six rows fit (was: two rows and a scrollbar)"
    assert table_height(500) == 720, "a long list scrolls inside a bounded table"


def test_presentation_mode_shows_one_image_at_a_time_large_with_the_pickers_folded(model_run):
    at = run_page(PAGE, model=RUN, query={"present": "true"})
    assert at.toggle(key="present").value, "presentation mode is read from the URL"
    files = [(f"x{i}.png", png_bytes(64, seed=i), "image/png") for i in range(3)]
    _upload(at, files)
    assert_no_exception(at)
    assert len(_image_urls(at)) == 1, "one image at a time"
    at.segmented_control(key="predict-present-image").set_value(2).run()
    assert_no_exception(at)
    assert any(c.startswith("x2.png") for c in _captions(at))
    assert any("font-size: 22px" in h.proto.body for h in at.get("html")), "large type"
    at.run()
    assert not at.expander[0].proto.expanded, "the pickers fold away once an image is shown"
