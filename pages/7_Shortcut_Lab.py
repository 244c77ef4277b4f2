"""Shortcut Lab: put a lead marker, a label, a ruler, a border... on an X-ray and watch the model react."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from fracture.assess.shortcuts import LABELS, PERTURBATIONS, STAMPED, max_on_box, perturb, read_stored_report
from fracture.errors import FractureError
from fracture.preprocess.markers import LABEL_TEXTS, MARKER_TEXTS
from fracture.ui import loaders
from fracture.ui.context import active_context, checkpoint_label
from fracture.ui.kept_uploads import uploader_files
from fracture.ui.lab import fit_image
from fracture.ui.uploads import UPLOAD_TYPES, read_uploads
from fracture.ui.viewer import heatmap_legend, show_xray, tight_top, view_controls
from fracture.ui.xray_gallery import gallery_image, gallery_picker

context = active_context()
tight_top()
st.title("🏷️ Shortcut Lab", help=(
    "Networks learn whatever predicts the label: a hospital's lead marker, a burnt-in label, a ruler or the film "
    "border can be easier to read than the bone. Add one to an X-ray and see whether the probability and the "
    "heatmap follow it. A model that reads the fracture should barely move."))
st.caption("Add a lead marker, a label, a ruler... to an X-ray: does the model follow it, or the bone?")

# What to alter sits in one row with the image source, so that both X-rays start on a 720 px screen.
controls = st.columns(4)
source = controls[0].radio("Image", ("Gallery", "Upload"), horizontal=True, key="shortcut-source")
kind = controls[1].selectbox("Add or change", list(PERTURBATIONS), key="shortcut-kind", format_func=LABELS.get,
                             help="Each alteration is the one `python -m fracture shortcuts` measures on a whole split.")
options = {}
if kind == "lead_marker":
    options["text"] = controls[2].selectbox("Marker", sorted(set(MARKER_TEXTS)), key="shortcut-marker")
elif kind == "text_label":
    options["text"] = controls[2].selectbox("Label", LABEL_TEXTS, key="shortcut-label")
seed = controls[3].number_input("Placement (seed)", 0, 999, 0, key="shortcut-seed",
                                help="Another seed puts it in another corner or turns the other way.")

image, name = None, ""
if source == "Upload":
    uploads = uploader_files("One X-ray (PNG, JPEG, DICOM)", type=list(UPLOAD_TYPES), key="shortcut-upload",
                             max_upload_size=context.settings.max_upload_mb)
    loaded, problems = read_uploads(uploads[:1], max_mb=context.settings.max_upload_mb)
    for problem in problems:
        st.error(problem.message)
    if loaded:
        image, name = loaded[0].image, loaded[0].name
else:
    item = gallery_picker(key="shortcut-pick")
    if item is not None:
        image, name = gallery_image(item), item.source_id
if image is None:
    st.info("Pick a gallery X-ray or upload one to start.")
    st.stop()

label = LABELS[kind]
work = fit_image(image)
altered = perturb(work, kind, seed=int(seed), **options)
entry = context.checkpoint
if entry is None:
    st.info("No model is active: only the altered image is shown. Train one on the Train page, or pick one in the "
            "sidebar, to see the probability and the heatmap move.")
    settings = view_controls("shortcut-view", heatmap=False)
    show_xray(altered.image, None, settings, key="shortcut-altered", caption=f"{name} with {label}")
    st.stop()

try:
    prediction = loaders.predict_study(entry.path, [work, altered.image], [name, f"{name} + {label}"])
except FractureError as exc:
    st.error(str(exc))
    st.stop()
before, after = prediction.images
positive_name = prediction.class_names[1]
cols = st.columns(4)
cols[0].metric(f"Original P({positive_name})", f"{before.prob:.3f}")
cols[1].metric(f"With {label}", f"{after.prob:.3f}", delta=f"{after.prob - before.prob:+.3f}", delta_color="off")
flipped = (before.prob >= prediction.threshold) != (after.prob >= prediction.threshold)
cols[2].metric("Label", "flipped" if flipped else "unchanged",
               help=f"At the model's threshold {prediction.threshold:.3f} (the default operating point).")
on_stamp = max_on_box(after.heatmap, altered.box)
if kind in STAMPED:
    cols[3].metric("Heatmap maximum", "on it" if on_stamp else "elsewhere",
                   help="Whether the hottest point of the heatmap lies on what was pasted (its box widened by 3% of "
                        "the longer side).")
if not before.is_radiograph or not after.is_radiograph:
    st.warning("The radiograph gate would refuse "
               + ("the original" if not before.is_radiograph else "the altered image")
               + " on the Predict page: " + (before.gate if not before.is_radiograph else after.gate)["reason"])

picture, view = st.columns([4, 1])
with view:
    settings = view_controls("shortcut-view", heatmap=True, mode="overlay")
with picture:
    left, right = st.columns(2)
    with left:
        show_xray(before.image, before.heatmap, settings, key="shortcut-before",
                  caption=f"Original: P {before.prob:.3f}")
    with right:
        show_xray(after.image, after.heatmap, settings, key="shortcut-after",
                  caption=f"With {label}: P {after.prob:.3f}")
heatmap_legend()



def figure(value, percent: bool = True) -> str:
    """One format per column of the stored figures; "—" where one does not apply (nothing was pasted)."""
    return "—" if value is None else f"{100 * value:.1f}%" if percent else f"{value:.3f}"


stored = (entry.meta or {}).get("shortcuts")
stored = read_stored_report(stored) if isinstance(stored, dict) else None  # former names ("lead marker") mapped
st.subheader(f"Measured on a whole split: `{checkpoint_label(entry)}`")
if stored:
    st.caption(f"{stored.get('n')} {stored.get('split')}-split images, each altered one way at a time "
               f"(`{stored.get('command')}`).")
    st.dataframe(pd.DataFrame([{"alteration": LABELS.get(k, k), "mean |dP|": figure(v.get("mean_abs_dp"), False),
                                "labels flipped": figure(v.get("flip_rate")),
                                "heatmap max on it": figure(v.get("heatmap_on_stamp"))}
                               for k, v in stored["perturbations"].items()]), hide_index=True)
else:
    st.caption("Not measured for this model yet: `python -m fracture shortcuts --checkpoint CKPT --data DATA "
               "--write-meta` stores the figures in the checkpoint (and its model card).")
