"""The Predict page's "many files" mode: every upload its own image, the CSV and HTML report as downloads.

The work and both files come from :mod:`fracture.serve.batch` (the same code as
``python -m fracture batch``); this module only draws. The result is kept in
the session for the same uploads, model and options, so a click elsewhere on
the page does not run the model again.
"""
from __future__ import annotations

from typing import Any

import streamlit as st

from fracture.errors import FractureError
from fracture.ui import loaders
from fracture.ui.progress import ProgressPanel, was_cancelled
from fracture.ui.uploads import UPLOAD_TYPES

KEY = "predict-many"
MODES = ("One study", "Many files")
ROW_PX, HEADER_PX, TABLE_MAX_PX = 35, 38, 720


def table_height(rows: int) -> int:
    """Pixel height that shows ``rows`` whole (header included), at most :data:`TABLE_MAX_PX`."""
    return min(TABLE_MAX_PX, HEADER_PX + ROW_PX * max(1, rows) + 2)


def mode_picker() -> str:
    """One study (the page's classic view) or many files."""
    return st.radio("Mode", MODES, horizontal=True, key="predict-mode",
                    help="Many files: each file is predicted on its own; download a CSV and an HTML report.")


def many_files_view(entry: Any, max_mb: int) -> None:
    """Uploads -> predictions table, counts, and the two downloads."""
    from fracture.serve.batch import predict_files
    from fracture.settings import get_settings

    files = st.file_uploader(
        f"X-ray images, as many as you like (PNG, JPEG, DICOM; up to {max_mb} MB each)",
        type=list(UPLOAD_TYPES), accept_multiple_files=True, key=f"{KEY}-upload", max_upload_size=max_mb,
    )
    cam = st.checkbox("Grad-CAM heatmaps in the report (slower)", key=f"{KEY}-cam")
    if not files:
        st.info("Drop X-ray files above: each one gets a probability and a label; unreadable files are listed "
                "with the reason. Download the table (CSV) and a self-contained report (HTML).")
        return
    if was_cancelled(KEY):
        st.info("Cancelled; nothing was kept.")
        st.button("Predict again", key=f"{KEY}-again")
        return
    key = (str(entry.path), loaders.path_signature(entry.path), cam,
           tuple((f.name, f.size, getattr(f, "file_id", "")) for f in files))
    cached = st.session_state.get(f"{KEY}-result")
    if cached is not None and cached[0] == key:
        result = cached[1]
    else:
        panel = ProgressPanel(KEY)
        try:
            result = predict_files([(f.name, f.getvalue()) for f in files], entry.path, cam=cam, progress=panel,
                                   source=f"{len(files)} uploaded file(s)",
                                   max_files=get_settings().max_upload_files)  # the documented upload limit
        except FractureError as exc:
            st.error(str(exc))
            return
        finally:
            panel.clear()
        st.session_state[f"{KEY}-result"] = (key, result)
    counts = result.counts()
    cols = st.columns(4)
    cols[0].metric("Files", counts["files"])
    cols[1].metric(result.class_names[1], counts["positive"], help=f"Probability at least {result.threshold:.3f}.")
    cols[2].metric(result.class_names[0], counts["negative"])
    cols[3].metric("Unreadable", counts["unreadable"], help="Listed with the reason in the table and the CSV.")
    if counts["not_radiograph"]:
        st.error(f"{counts['not_radiograph']} file(s) are not radiographs (a photo, document, CT/MR...): no label; "
                 "the table says why.")
    if counts["ood"]:
        st.warning(f"{counts['ood']} image(s) look unlike the model's training images (out of distribution).")
    st.dataframe(  # tall enough for every row up to TABLE_MAX_PX: the list is read, not scrolled two rows at a time
        [{"file": r.path, "probability": r.probability, "label": r.label,
          **({"out of distribution": r.ood} if result.has_ood else {}),
          "not a radiograph": r.not_radiograph, "error": r.error} for r in result.rows],
        column_config={"probability": st.column_config.NumberColumn(format="%.3f"),
                       "file": st.column_config.TextColumn(width="large")},
        hide_index=True, height=table_height(len(result.rows)),
    )
    d1, d2 = st.columns(2)
    d1.download_button("⬇ predictions.csv", result.csv_bytes(), file_name="predictions.csv", mime="text/csv",
                       key=f"{KEY}-csv")
    d2.download_button("⬇ report.html", result.html_bytes(), file_name="report.html", mime="text/html",
                       key=f"{KEY}-html")
