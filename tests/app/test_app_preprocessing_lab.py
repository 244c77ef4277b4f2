"""AppTest: the Preprocessing Lab — variants side by side, histograms, the model's view."""
from __future__ import annotations

import pytest

from app_support import (  # noqa: F401  (fixtures)
    app_home,
    demo_template,
    fresh_app_home,
    assert_no_exception,
    make_foreign_and_calibrated,
    png_bytes,
    run_page,
    write_tiny_run,
)

PAGE = "pages/2_Preprocessing_Lab.py"
RUN = "20260101-000000-small_cnn"


def _viewer_panels(at) -> list[list[str]]:
    """Per viewer figure, its pictures (PNG data URIs): the processed image, then its heatmap."""
    import json

    figures = [[t["source"] for t in json.loads(chart.proto.spec)["data"] if t.get("type") == "image"]
               for chart in at.get("plotly_chart")]
    return [panels for panels in figures if panels]


def _variant_images(at) -> list[str]:
    """The processed image of each variant (the first panel of its viewer)."""
    return [panels[0] for panels in _viewer_panels(at)]


@pytest.mark.slow
def test_every_variant_shows_image_histogram_probability_and_gradcam(app_home):
    from fracture.ui.lab import DEFAULT_VARIANTS

    write_tiny_run(app_home / "runs", RUN)
    at = run_page(PAGE, model=RUN)
    assert_no_exception(at)
    n = len(DEFAULT_VARIANTS)
    probabilities = [m for m in at.metric if m.label in DEFAULT_VARIANTS]
    assert len(probabilities) == n
    assert all(0.0 <= float(m.value) <= 1.0 for m in probabilities)
    assert len(at.get("plotly_chart")) == 2 * n, "per variant: its viewer and its histogram"
    assert [len(panels) for panels in _viewer_panels(at)] == [2] * n, "the image beside its heatmap"
    assert len(set(_variant_images(at))) == n, "each variant looks different"
    assert sum("heatmap: Grad-CAM" in c.value for c in at.caption) == n, "the method used is named"


def test_sliders_change_the_variant_and_no_model_still_shows_images(app_home):
    at = run_page(PAGE)
    assert_no_exception(at)
    assert any("No model is active" in i.value for i in at.info)
    at.multiselect(key="lab-variants").set_value(["Original", "CLAHE"]).run()
    before = _variant_images(at)
    assert len(before) == 2
    at.slider(key="lab-clahe-clip_limit").set_value(8.0).run()
    assert_no_exception(at)
    after = _variant_images(at)
    assert after[0] == before[0] and after[1] != before[1]


def test_an_uploaded_image_and_a_bad_one(app_home):
    at = run_page(PAGE, query={"image": "Upload"})
    at.file_uploader(key="lab-upload").set_value(("x.png", png_bytes(120), "image/png")).run()
    assert_no_exception(at)
    assert _variant_images(at)
    at.file_uploader(key="lab-upload").set_value(("x.png", b"GIF89a broken", "image/png")).run()
    assert_no_exception(at)
    assert at.error


def test_a_model_from_other_data_and_out_of_distribution_images_are_warned_about(app_home):
    """Issue 11: the Lab says when model and dataset do not belong together, and flags OOD images."""
    from fracture.ui.lab import DEFAULT_VARIANTS

    make_foreign_and_calibrated(write_tiny_run(app_home / "runs", RUN))
    at = run_page(PAGE, model=RUN, query={"samples": "Dataset"})
    assert_no_exception(at)
    warnings = [w.value for w in at.warning]
    assert any("trained on FracAtlas; the demo dataset is synthetic: expect meaningless numbers" in w
               for w in warnings), warnings
    ood = [w for w in warnings if "unlike the ones this model was trained on" in w]
    assert len(ood) == len(DEFAULT_VARIANTS)  # one per variant the model saw


def test_no_warning_when_the_model_was_trained_on_this_data(app_home):
    write_tiny_run(app_home / "runs", RUN)
    at = run_page(PAGE, model=RUN, query={"samples": "Dataset"})
    assert_no_exception(at)
    assert not any("trained on" in w.value or "unlike the ones this model was trained on" in w.value for w in at.warning)


def test_presentation_mode_shows_one_variant_large_with_readable_histogram(app_home):
    import json

    write_tiny_run(app_home / "runs", RUN)
    at = run_page(PAGE, model=RUN, query={"present": "true"})
    assert_no_exception(at)
    assert [len(panels) for panels in _viewer_panels(at)] == [2], "one variant: its image beside its heatmap"
    at.segmented_control(key="lab-present-variant").set_value("CLAHE").run()
    assert_no_exception(at)
    specs = [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]
    histogram = next(spec for spec in specs if "Histogram" in spec["layout"].get("title", {}).get("text", ""))
    assert "CLAHE" in histogram["layout"]["title"]["text"] and histogram["layout"]["font"]["size"] >= 20
    assert not any(e.proto.expanded for e in at.expander), "parameters folded: the images come first"


def test_presentation_mode_with_a_dataset_sample_and_an_upload(app_home):
    at = run_page(PAGE, query={"present": "true", "samples": "Dataset"})
    assert_no_exception(at)
    assert _variant_images(at), "a dataset sample in presentation mode (no nested expanders)"
    at.radio(key="image").set_value("Upload").run()
    assert_no_exception(at)
    assert at.expander[0].proto.expanded, "the uploader is in sight while nothing is shown"
