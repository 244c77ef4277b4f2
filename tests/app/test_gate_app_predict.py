"""AppTest: the Predict page says why an upload is not a radiograph and gives it no label."""
from __future__ import annotations

from pathlib import Path

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

PAGE = "pages/4_Predict.py"
RUN = "20260101-000000-small_cnn"


@pytest.mark.slow
def test_an_mr_upload_is_refused_with_its_modality_and_a_radiograph_beside_it_is_predicted(app_home):
    import pydicom.data

    write_tiny_run(app_home / "runs", RUN)
    at = run_page(PAGE, model=RUN, query={"input": "Upload"})
    mr = Path(pydicom.data.get_testdata_file("MR_small.dcm")).read_bytes()
    at.file_uploader(key="predict-upload").set_value([("MR_small.dcm", mr, "application/dicom")]).run()
    assert_no_exception(at)
    errors = " ".join(e.value for e in at.error)
    assert "Not a radiograph" in errors and "MR" in errors and "magnetic resonance" in errors
    assert not any(m.label == "Study label" for m in at.metric), "no label for what is not a radiograph"
    assert "predict-operating-point" not in [r.key for r in at.radio], "no view controls beside no X-ray"
    at.file_uploader(key="predict-upload").set_value([("MR_small.dcm", mr, "application/dicom"),
                                                      ("xray.png", png_bytes(96, seed=2), "image/png")]).run()
    assert_no_exception(at)
    labels = [m.value for m in at.metric if m.label == "Study label"]
    assert len(labels) == 1 and labels[0] in ("normal", "abnormal")
    assert "Not a radiograph" in " ".join(e.value for e in at.error)
    assert any("Study from 1 of 2 files" in c.value for c in at.caption)
