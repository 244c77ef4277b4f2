"""Preprocessing Lab: one image through CLAHE, Canny and diffusion, side by side, with the model's view."""
from __future__ import annotations

import streamlit as st

from fracture.checkpoints.compatibility import describe_mismatch
from fracture.errors import FractureError
from fracture.checkpoints.decision import calibrated_threshold
from fracture.gate.ood import WARNING as OOD_WARNING
from fracture.gate.radiograph import NOT_RADIOGRAPH
from fracture.ui import loaders
from fracture.ui.context import active_context, checkpoint_label, dataset_root
from fracture.ui.lab import DEFAULT_VARIANTS, LAB_MAX_SIDE, apply_spec, fit_image, lab_variants
from fracture.ui.samples import load_study_images, study_picker
from fracture.ui.uploads import UPLOAD_TYPES, read_uploads
from fracture.ui.kept_uploads import uploader_files
from fracture.explain.forward import stored_choice
from fracture.ui.viewer import PRESENT_HEIGHT, VIEW_HEIGHT, heatmap_legend, presentation_mode, show_xray, view_controls
from fracture.ui.widgets import op_controls
from fracture.ui.xray_gallery import gallery_image, gallery_picker, sample_source
from fracture.viz.charts import image_histogram_chart

SOURCES = {"Sample": "a real X-ray from the gallery, or an image of the active dataset",
           "Upload": "your own PNG, JPEG or DICOM file"}

context = active_context()
present = presentation_mode()
st.title("🧪 Preprocessing Lab")
if not present:
    st.caption(
        "How do CLAHE, Canny edges and anisotropic diffusion change an X-ray, its histogram, and what "
        "the network predicts and looks at? Each variant below goes through the active model's own "
        "pipeline after the shown steps."
    )

# Presentation mode: the image choice folds away, so that the variants fill the screen.
uploading = st.session_state.get("image", st.query_params.get("image", "Sample")) == "Upload"
chooser = st.expander("Image", expanded=uploading) if present else st.container()
with chooser:
    source = st.radio("Image", tuple(SOURCES), help=" · ".join(f"{k}: {v}" for k, v in SOURCES.items()),
                      horizontal=True,
                      key="image", bind="query-params")
    image, name = None, ""
    boxes = ()  # annotated fracture boxes of the image, drawn on it and on its Grad-CAM
    if source == "Upload":
        uploads = uploader_files("One X-ray (PNG, JPEG, DICOM)", type=list(UPLOAD_TYPES), key="lab-upload",
                                 max_upload_size=context.settings.max_upload_mb)  # kept across a page switch
        loaded, problems = read_uploads(uploads[:1], max_mb=context.settings.max_upload_mb)
        for problem in problems:
            st.error(problem.message)
        if loaded:
            image, name = loaded[0].image, loaded[0].name
            for note in loaded[0].notes:
                st.warning(note)
    elif sample_source() == "Gallery":
        item = gallery_picker()
        if item is not None:
            image, name = gallery_image(item), item.source_id
            boxes = item.boxes
    elif dataset_root(context) is None:
        st.info(context.dataset_error or "Pick a dataset in the sidebar, or upload an image.")
    else:
        manifest = loaders.load_manifest(dataset_root(context))
        mismatch = describe_mismatch(context.checkpoint.meta, manifest) if context.checkpoint is not None else None
        if mismatch:
            st.warning(mismatch)
        with st.container() if present else st.expander("Choose the sample", expanded=True):  # never nested
            study = study_picker(manifest, key="lab")
            if study is not None:
                images, names, problems = load_study_images(study)
                for message in problems:
                    st.error(message)
                if images:
                    index = st.radio("View", range(len(images)), format_func=lambda i: names[i],
                                     horizontal=True, key="lab-view") if len(images) > 1 else 0
                    image, name = images[index], names[index]
                    truth = dict(zip(study["path"].map(lambda p: p.rsplit("/", 1)[-1]), study["boxes"]))
                    boxes = truth.get(name, ())
if image is None:
    st.info("Pick a sample or upload an image to start.")
    st.stop()
if boxes:
    st.caption("Green box: the annotated fracture. Does the model look there?")

with st.expander("Parameters", expanded=not present):
    c1, c2, c3 = st.columns(3)
    with c1:
        st.markdown("**CLAHE**")
        clahe = op_controls("clahe", key="lab")
    with c2:
        st.markdown("**Canny edges**")
        canny = op_controls("canny", key="lab")
    with c3:
        st.markdown("**Anisotropic diffusion**")
        diffusion = op_controls("diffusion", key="lab")
    variants = lab_variants(clahe, canny, diffusion)
    chosen = st.multiselect("Variants", list(variants), default=list(DEFAULT_VARIANTS), key="lab-variants")

work = fit_image(image)
if work.shape != image.shape:
    st.caption(f"Working on a copy scaled to {work.shape[1]}×{work.shape[0]} px "
               f"(longer side {LAB_MAX_SIDE}) so that the sliders stay interactive.")
entry = context.checkpoint
if entry is None:
    st.info("No model is active, so only the images and histograms are shown. Train one on the "
            "Train page to see probabilities and Grad-CAM here.")
else:
    st.caption(f"Model: `{checkpoint_label(entry)}` · threshold {calibrated_threshold(entry.meta):.3f}")

results = {}  # variant -> (processed image, prediction or None, error or None)
for variant in chosen:
    try:
        processed = apply_spec(work, variants[variant])
        prediction = None if entry is None else loaders.predict_study(
            entry.path, [work], [name], extra_steps=variants[variant] or None)
        results[variant] = (processed, prediction, None)
    except FractureError as exc:
        results[variant] = (None, None, str(exc))

scored = {v: r[1].images[0] for v, r in results.items() if r[1] is not None}


def probability_row() -> None:
    """Every variant's probability, comparable at a glance (and from the back of a room)."""
    if not scored:
        return
    st.markdown(f"#### P({results[next(iter(scored))][1].class_names[1]}) by variant")
    baseline = scored.get("Original")
    per_row = 3  # three to a row: a variant's whole name stays readable
    items = list(scored.items())
    for start in range(0, len(items), per_row):
        for column, (variant, item) in zip(st.columns(per_row), items[start:start + per_row]):
            delta = None if baseline is None or variant == "Original" else f"{item.prob - baseline.prob:+.3f}"
            column.metric(variant, f"{item.prob:.3f}", delta=delta, delta_color="off",
                          help="Change against the original image" if delta else None)


if not present:  # in presentation mode the variant's images come first, the summary after them
    probability_row()


def variant_card(variant: str, *, height: int, settings, beside: bool = False) -> None:
    """One variant: the processed image beside its heatmap (linked zoom), its verdict and histogram
    (with ``beside``, the histogram to the right of the images, else under them)."""
    processed, prediction, error = results[variant]
    st.markdown(f"**{variant}**")
    if error is not None:
        st.error(error)
        return
    pictures, chart = st.columns([3, 2], vertical_alignment="center") if beside else (st.container(),) * 2
    with pictures:
        _variant_pictures(variant, processed, prediction, height=height, settings=settings)
    with chart:
        st.plotly_chart(image_histogram_chart(processed, variant, height=260 if present else 230,
                                              font_size=20 if present else 14),
                        key=f"lab-hist-{variant}", config={"displayModeBar": False})


def _variant_pictures(variant: str, processed, prediction, *, height: int, settings) -> None:
    if prediction is None:
        show_xray(processed if processed.ndim == 2 else processed[..., 0], None, settings,
                  key=f"lab-view-{variant}", caption=f"{variant} (what the model's pipeline gets next)",
                  height=height)
    else:
        item = prediction.images[0]
        # The processed image on the left, the model's heatmap on the image it scored on the right.
        show_xray(item.image, item.heatmap, settings, key=f"lab-view-{variant}",
                  caption=f"{variant}: P({prediction.class_names[1]}) {item.prob:.3f} · "
                          + (f"{'🔴' if item.positive else '🟢'} {item.label} at threshold {prediction.threshold:.3f}"
                           if item.is_radiograph else "no label: not a radiograph"),
                  heatmap_label=heatmap_label, boxes=boxes, height=height)
        if not item.is_radiograph:  # level (a): the label shown above is not given on the Predict page
            st.error(NOT_RADIOGRAPH.format(reason=item.gate["reason"]))
        elif item.ood and item.ood["flagged"]:
            st.warning(OOD_WARNING)


if chosen:
    heatmap_label = stored_choice(entry.meta or {}).label() if entry is not None else None
    if present:  # one variant at a time, as large as the screen allows
        variant = st.segmented_control("Variant", chosen, default=chosen[0], required=True,
                                       key="lab-present-variant") or chosen[0]
        picture, controls = st.columns([4, 1])
        with controls:
            settings = view_controls("lab-view", heatmap=entry is not None, boxes=bool(len(boxes)),
                                     mode="side by side")
        with picture:
            variant_card(variant, height=PRESENT_HEIGHT, settings=settings)
        probability_row()
    else:  # the controls in one row above, every variant a full-width row: image beside heatmap, histogram
        settings = view_controls("lab-view", heatmap=entry is not None, boxes=bool(len(boxes)),
                                 mode="side by side", horizontal=True)
        for variant in chosen:
            with st.container(border=True):
                variant_card(variant, height=VIEW_HEIGHT * 4 // 5, settings=settings, beside=True)
    if entry is not None:
        heatmap_legend()
