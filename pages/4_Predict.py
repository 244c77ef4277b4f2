"""Predict: drop X-rays (one study) or pick a sample, get probabilities and a Grad-CAM overlay."""
from __future__ import annotations

import json
from pathlib import Path

import streamlit as st

from fracture.checkpoints.compatibility import describe_mismatch
from fracture.errors import FractureError
from fracture.explain.cam import METHODS as CAM_METHOD_NAMES
from fracture.explain.forward import stored_choice
from fracture.checkpoints.decision import operating_point_choices
from fracture.gate.ood import unfamiliar_warning
from fracture.gate.radiograph import NOT_RADIOGRAPH
from fracture.ui import loaders
from fracture.ui.batch_view import many_files_view, mode_picker
from fracture.ui.context import active_context, checkpoint_label, dataset_root, require_checkpoint
from fracture.ui.samples import load_study_images, study_picker
from fracture.ui.uploads import UPLOAD_TYPES, read_uploads
from fracture.ui.kept_uploads import uploader_files
from fracture.ui.viewer import (PRESENT_HEIGHT, VIEW_HEIGHT, grid_columns, heatmap_legend, presentation_mode,
                                show_xray, view_controls, xray_viewer)
from fracture.ui.widgets import enhancement_controls, model_card, png_bytes
from fracture.viz.xray import render_view
from fracture.ui.xray_gallery import gallery_image, gallery_picker, sample_source

SHOWN_KEY = "predict-shown"  # session: the last run showed an image (presentation mode folds the pickers)
SOURCES = {"Upload": "your own PNG, JPEG or DICOM files",
           "Sample": "a real X-ray from the gallery, or a study of the active dataset"}

context = active_context()
present = presentation_mode()
# What the page does sits in the title's tooltip: one line less above the X-ray on a 720 px screen.
st.title("🔍 Predict", help="Several files are one study: the study probability is the mean of its images' "
         "probabilities (the MURA rule). A teaching and research tool, not a medical device.")
entry = require_checkpoint(context, "prediction")
meta = entry.meta or {}
# Presentation mode: once an image is shown, its pickers fold away so that the X-ray fills the screen.
choosing = st.session_state.get("input", st.query_params.get("input", "Upload")) == "Upload" \
    and not st.session_state.get(SHOWN_KEY)  # nothing to show yet: the uploader must be in sight
panel = st.expander("Image and options", expanded=choosing) if present else st.container()
with panel:
    top = st.columns(3)  # mode, input and sample source in one row: the X-ray comes up higher
    with top[0]:
        many = mode_picker() == "Many files"
if many:
    many_files_view(entry, context.settings.max_upload_mb)
    st.stop()

with panel:
    source = top[1].radio("Input", tuple(SOURCES), horizontal=True, key="input", bind="query-params",
                          help=" · ".join(f"{name}: {what}" for name, what in SOURCES.items()))
    samples = None
    if source == "Sample":
        with top[2]:
            samples = sample_source()
    inputs, options = st.columns([3, 1])
    with options:
        st.markdown("**Before the model**")
        extra_steps = enhancement_controls(key="predict")
        body_parts = list(meta.get("body_parts") or []) if meta.get("multitask") else []
        body_part = None
        if body_parts:
            choice = st.selectbox("Body part", ["predict it"] + body_parts, key="predict-body-part",
                                  help="A multi-task model predicts the body part; you can also tell it.")
            body_part = None if choice == "predict it" else choice

    with inputs:
        images, names, problems, notes = [], [], [], []
        known_label = ""  # the dataset's own label, shown beside the model's (gallery images)
        sources = None  # what uploaded files say about themselves (DICOM modality, colour), for the radiograph gate
        n_files = 0  # uploads offered (bad and duplicate files included), for "from N of M files"
        truth: dict = {}  # image name -> annotated fracture boxes (gallery, or a dataset with boxes)
        if source == "Upload":
            max_mb = context.settings.max_upload_mb
            files = uploader_files(  # kept across a page switch
                f"X-ray images of one study (PNG, JPEG, DICOM; up to {max_mb} MB each)",
                type=list(UPLOAD_TYPES), accept_multiple_files=True, key="predict-upload",
                max_upload_size=max_mb,
            )
            loaded, upload_problems = read_uploads(files or [], max_mb=max_mb)
            n_files = len(files or [])
            unique = {item.digest: item for item in reversed(loaded)}  # the same bytes twice count once
            if len(unique) < len(loaded):
                twice = [i.name for i in loaded if unique[i.digest] is not i]
                st.info(f"{len(loaded) - len(unique)} file(s) had the same content as another and count once: "
                        + ", ".join(twice))
                loaded = [item for item in loaded if unique.get(item.digest) is item]
            images = [item.image for item in loaded]
            names = [item.name for item in loaded]
            sources = [item.source for item in loaded]
            problems = [p.message for p in upload_problems]
            notes = [note for item in loaded for note in item.notes]  # first frame only, reduced to fit
        elif samples == "Gallery":
            item = gallery_picker()
            if item is not None:
                images, names = [gallery_image(item)], [item.source_id]
                truth = {item.source_id: item.boxes}
                known_label = f"FracAtlas label: **{item.label_name}**" + (
                    f", {len(item.boxes)} annotated box{'es' if len(item.boxes) > 1 else ''}" if item.boxes else "")
        elif dataset_root(context) is None:
            st.info(context.dataset_error or "Pick a dataset in the sidebar to use its samples.")
        else:
            try:
                manifest = loaders.load_manifest(dataset_root(context))
                mismatch = describe_mismatch(meta, manifest)
                if mismatch:
                    st.warning(mismatch)
                study = study_picker(manifest, key="predict")
            except FractureError as exc:
                st.error(str(exc))
                study = None
            if study is not None:
                images, names, problems = load_study_images(study)
                truth = dict(zip(study["path"].map(lambda p: p.rsplit("/", 1)[-1]), study["boxes"]))

for message in problems:
    st.error(message)
for note in notes:
    st.warning(note)
st.session_state[SHOWN_KEY] = bool(images)
if not images:
    st.info("Drop one or more images above, or pick a sample study from the dataset.")
    st.stop()

# The results: a head (verdict, refusals) above the X-ray, and beside the X-ray one column with every
# control of what is shown (heatmap method, operating point, window/level...), so that at 1280x720 the
# picture and its controls start on the first screen. In presentation mode the choices stay folded.
head = st.container()
if present:
    picture, side = st.container(), panel
else:
    picture, side = st.columns([2, 1])
choices = side.empty()  # cleared when no image gets a verdict: no controls beside nothing
chooser = choices.container()
default_cam = stored_choice(meta)
cam_method = chooser.selectbox(
    "Heatmap method", [None, *CAM_METHOD_NAMES], key="predict-cam-method",
    format_func=lambda m: f"default: {default_cam.label()}" if m is None else CAM_METHOD_NAMES[m],
    help="The default was chosen on the validation split by how often its maximum falls on an annotated "
         "fracture (python -m fracture explain-select). The others use the same layer.",
)
heatmap_label = default_cam.label() if cam_method is None else CAM_METHOD_NAMES[cam_method]
points = {c["name"]: c for c in operating_point_choices(meta)}
point = points[chooser.radio(  # a list: a long name wraps in a narrow column, never cut
    "Operating point", list(points), key="predict-operating-point", format_func=lambda n: points[n]["label"],
    help="Thresholds chosen on the validation split: the default, Youden's balance, or a stated "
         "sensitivity for screening (more false alarms, fewer missed fractures).",
)]

try:
    prediction = loaders.predict_study(entry.path, images, names, body_part=body_part,
                                       extra_steps=extra_steps, cam_method=cam_method, sources=sources)
except FractureError as exc:
    head.error(str(exc))
    choices.empty()
    st.stop()
prediction = prediction.at_operating_point(point["name"])
with head:
    for refused in prediction.refused:  # level (a): what is not a radiograph gets no label at all
        st.error(f"**{refused.name}** — " + NOT_RADIOGRAPH.format(reason=refused.gate["reason"]))
if prediction.study_prob is None:
    choices.empty()
    st.stop()

positive_name = prediction.class_names[1]
kept, offered = len(prediction.images) - len(prediction.refused), max(n_files, len(prediction.images))
used_of = f" from {kept} of {offered} files" if 0 < kept < offered else ""
with head:
    if present:  # in large type one heading says it all
        color = "red" if prediction.positive else "green"
        st.markdown(f"#### Study{used_of}: :{color}-background[{prediction.study_label}] "
                    f"(P = {prediction.study_prob:.3f}, threshold {prediction.threshold:.3f})")
    else:
        cols = st.columns(4)
        cols[0].metric(f"Study P({positive_name})", f"{prediction.study_prob:.3f}",
                       help="Mean of the images' probabilities.")
        cols[1].metric("Study label", prediction.study_label,
                       help="Positive when the probability is at least the threshold of the operating point.")
        cols[2].metric("Threshold", f"{prediction.threshold:.3f}",
                       help=f"{point['label']}: chosen on the validation split"
                       + (f" (there: sensitivity {point['sensitivity']:.2f}, specificity {point['specificity']:.2f}, "
                          f"PPV {point['ppv']:.2f}, NPV {point['npv']:.2f})" if point.get("ppv") is not None
                          and point.get("npv") is not None else "")
                       + (". Probabilities are calibrated (temperature scaling)." if prediction.temperature else "."))
        if prediction.body_part is not None:  # a single-task model has no body part to show
            confidence = f" ({prediction.body_part_prob:.0%})" if prediction.body_part_prob is not None else ""
            cols[3].metric("Body part", f"{prediction.body_part}{confidence}",
                           help=f"{prediction.body_part_source} by the model"
                           if prediction.body_part_source == "predicted" else "given by you")
        where = cols[3] if prediction.body_part is None else st  # the free fourth column: one row less
        where.caption(" · ".join(part for part in (
            f"Study{used_of}" if used_of else "", f"model `{checkpoint_label(entry)}`", known_label) if part))


def _image_caption(item) -> str:
    return f"{item.name} — P({positive_name}) {item.prob:.3f} · {item.label}" + (
        f" · body part: {item.body_part} ({item.body_part_prob:.0%})" if item.body_part is not None else "")


def _ood_note(item) -> None:
    """Level (b): a radiograph unlike the training data, saying how where that is known (OOD score, file)."""
    if (item.gate or {}).get("unfamiliar"):
        st.warning(unfamiliar_warning(item.gate["differences"]))


shown = [item for item in prediction.images if item.is_radiograph]  # refused images were named above
if present and len(shown) > 1:  # one image at a time, large
    names_shown = [item.name for item in shown]
    with picture:
        pick = st.segmented_control("Image", range(len(shown)), format_func=lambda i: names_shown[i],
                                    default=0, required=True, key="predict-present-image")
    shown = [shown[pick or 0]]
if present:  # one image, its view controls beside it
    item = shown[0]
    with picture:
        settings = xray_viewer(item.image, item.heatmap, key="predict-view", caption=_image_caption(item),
                               heatmap_label=heatmap_label, boxes=truth.get(item.name, ()), height=PRESENT_HEIGHT)
        _ood_note(item)
else:
    with side:
        settings = view_controls("predict-view", heatmap=any(i.heatmap is not None for i in shown),
                                 boxes=any(len(truth.get(i.name, ())) for i in shown))
    per_row = grid_columns(len(shown))
    with picture:
        for start in range(0, len(shown), per_row):
            for column, item in zip(st.columns(per_row) if per_row > 1 else [st.container()],
                                    shown[start:start + per_row]):
                with column, st.container(border=per_row > 1):
                    show_xray(item.image, item.heatmap, settings, key=f"predict-view-{start}-{item.name}",
                              caption=_image_caption(item), heatmap_label=heatmap_label,
                              boxes=truth.get(item.name, ()),
                              height=VIEW_HEIGHT if per_row == 1 else VIEW_HEIGHT * 3 // 4)
                    _ood_note(item)
if any(item.heatmap is not None for item in prediction.images):
    heatmap_legend()

result = prediction.to_dict()
result["model"] = checkpoint_label(entry)
result["extra_preprocess"] = extra_steps
d1, d2 = st.columns(2)
d1.download_button("⬇ Result (JSON)", json.dumps(result, indent=2), file_name="prediction.json",
                   mime="application/json")
images_out = [item for item in prediction.images if item.is_radiograph]
index = 0
if len(images_out) > 1:
    index = d2.selectbox("Image to download", range(len(images_out)), key="predict-overlay-index",
                         format_func=lambda i: images_out[i].name)
chosen = images_out[index]  # as the viewer shows it (window/level, heatmap, box)
d2.download_button("⬇ Image as shown (PNG)", png_bytes(render_view(chosen.image, chosen.heatmap, settings,
                                                                   truth.get(chosen.name, ()))[-1]),
                   file_name=f"heatmap-{Path(chosen.name).stem}.png", mime="image/png")

st.subheader("Model card")
model_card(entry)
