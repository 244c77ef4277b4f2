"""The Reader Study's widgets: a reader's case, the reveal, their results, and the instructor's dashboard.

A reader's case fits one 1280x720 viewport: the X-ray (clickable, to mark
where the fracture is) on the left, the answer controls on the right. Nothing
is pre-selected: *Answer* stays disabled until the reader has chosen a reading
and a confidence. Every control has a key (F / N, 1-5, Enter) through
Streamlit's own ``st.button(shortcut=...)``.
"""
from __future__ import annotations

import io
from collections.abc import Sequence
from urllib.parse import quote

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image, ImageDraw

from fracture.errors import FractureError
from fracture.explain.annotate import draw_boxes
from fracture.reader_study import (
    Case,
    Mark,
    ReaderStudyError,
    Session,
    case_heatmaps,
    load_readers,
    load_session,
    mark_hit,
    session_summary,
)
from fracture.reader_study.metrics import MIN_KAPPA_CASES
from fracture.reader_study.summary import export_csv_bytes, fmt, readers_table
from fracture.ui import loaders
from fracture.ui.reader_charts import readers_roc
from fracture.ui.widgets import overlay

#: Confidence keys 1-5 -> the 0-100 confidence stored with the answer (1: a guess, 5: certain).
CONFIDENCE_LEVELS = {1: 0, 2: 25, 3: 50, 4: 75, 5: 100}
#: The largest an X-ray is drawn while reading: fits 1280x720 with the page's header and the progress bar.
VIEW_MAX_H, VIEW_MAX_W = 440, 560
#: The reader's *Image size* choice -> the largest height drawn (Medium fits 1280x720; Large suits 1920x1080).
IMAGE_SIZES = {"Small": 320, "Medium": VIEW_MAX_H, "Large": 680}
SIZE_KEPT = "rs-size-kept"  # the choice outlives the reveal, where the size control is not drawn
#: How much a small X-ray (the gallery's are 384 px) may be enlarged to reach the chosen size.
MAX_UPSCALE = 2.0
THUMB = 240
JPEG_QUALITY = 90
REFRESH_S = 3
MARK_COLOUR = (0, 230, 255)
PAGE_PATH = "Reader_Study"


def compact_page() -> None:
    """Less blank space above the page's first row while reading, so a 720 px high screen holds the case."""
    st.html("<style>[data-testid='stMainBlockContainer'] { padding-top: 2.5rem; }</style>")


def fit(image: np.ndarray, max_h: int, max_w: int, *, upscale: float = 1.0) -> np.ndarray:
    """``image`` scaled to fit ``max_h`` x ``max_w``, aspect kept: down as needed, up by at most ``upscale``."""
    h, w = image.shape[:2]
    scale = min(max_h / h, max_w / w, upscale)
    if abs(scale - 1.0) < 1e-3:
        return image
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))


def draw_mark(image: np.ndarray, mark: Mark | None) -> np.ndarray:
    """A copy of ``image`` (RGB) with the reader's click drawn as a ring and a cross."""
    rgb = Image.fromarray(image).convert("RGB")
    if mark is not None:
        draw = ImageDraw.Draw(rgb)
        x, y = mark.x * rgb.width, mark.y * rgb.height
        r = max(6, round(0.03 * max(rgb.size)))
        width = max(2, r // 4)
        draw.ellipse((x - r, y - r, x + r, y + r), outline=MARK_COLOUR, width=width)
        draw.line((x - 2 * r, y, x - r // 2, y), fill=MARK_COLOUR, width=width)
        draw.line((x + r // 2, y, x + 2 * r, y), fill=MARK_COLOUR, width=width)
        draw.line((x, y - 2 * r, x, y - r // 2), fill=MARK_COLOUR, width=width)
        draw.line((x, y + r // 2, x, y + 2 * r), fill=MARK_COLOUR, width=width)
    return np.asarray(rgb)


def case_images(case: Case) -> list[np.ndarray]:
    return [loaders.load_full_image(p, loaders.path_signature(p)) for p in case.paths]


class EncodedImage:
    """Image bytes already encoded, for a component that takes "an object with a save method"
    (``streamlit_image_coordinates``): it copies them instead of encoding the image again."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def save(self, buffer, format=None, **_options) -> None:  # noqa: A002 - PIL's signature
        buffer.write(self.data)


def jpeg_bytes(image: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _mark_tuple(mark: Mark | None) -> tuple[float, float] | None:
    return None if mark is None else (mark.x, mark.y)


@st.cache_data(max_entries=512, show_spinner=False)
def reading_view(path: str, signature: int, max_h: int, max_w: int,
                 mark: tuple[float, float] | None) -> tuple[bytes, int, int]:
    """The X-ray as a reader sees it (fitted, their click drawn) as JPEG bytes, with its height and width.

    Why cached: every click of a reader reruns the page, and each rerun used to decode, resize and send
    the X-ray as an uncompressed PNG (~0.5-1 MB); now a rerun sends the same ~30 KB it sent before.
    """
    shown = fit(loaders.load_full_image(path, signature), max_h, max_w, upscale=MAX_UPSCALE)
    drawn = draw_mark(shown, None if mark is None else Mark(0, *mark))
    return jpeg_bytes(drawn), int(shown.shape[0]), int(shown.shape[1])


@st.cache_data(max_entries=256, show_spinner=False)
def reveal_views(code: str, case_id: str, index: int, path: str, signature: int,
                 mark: tuple[float, float] | None, max_h: int) -> tuple[bytes, bytes | None, bool]:
    """The reveal's pictures of one image as JPEG bytes: the X-ray with the truth box and the reader's
    click, and the model's heatmap stored with the session blended on it.

    Returns:
        (X-ray, heatmap view or None, whether the session has its heatmaps stored).
    """
    session = load_session(code)
    case = session.case(case_id)
    boxes = case.boxes[index] if index < len(case.boxes) else ()
    image = loaders.load_full_image(path, signature)
    max_w = round(max_h * VIEW_MAX_W / VIEW_MAX_H)
    xray = jpeg_bytes(fit(draw_mark(draw_boxes(image, boxes), None if mark is None else Mark(0, *mark)),
                          max_h, max_w, upscale=MAX_UPSCALE))
    maps = case_heatmaps(session, case)
    if maps is None or maps[index] is None:
        return xray, None, maps is not None
    return xray, jpeg_bytes(fit(overlay(image, maps[index], 0.45, boxes), max_h, max_w, upscale=MAX_UPSCALE)), True


def live_heatmaps(session: Session, case: Case) -> list[np.ndarray | None]:
    """The case's heatmaps from the model now (a session made before heatmaps were stored with it):
    shared with every session and queued for the model (:func:`fracture.ui.loaders.predict_study`)."""
    if not session.checkpoint:
        return [None] * len(case.paths)
    try:
        prediction = loaders.predict_study(session.checkpoint, case_images(case),
                                           [p.rsplit("/", 1)[-1] for p in case.paths])
    except FractureError as exc:
        st.warning(f"No heatmap: {exc}")
        return [None] * len(case.paths)
    return [p.heatmap for p in prediction.images]


# --------------------------------------------------------------------------
# A reader's case.


def _keep_size() -> None:
    st.session_state[SIZE_KEPT] = st.session_state.get("rs-size") or "Medium"


def image_height() -> int:
    """The largest height an X-ray is drawn at, from the reader's *Image size* choice."""
    return IMAGE_SIZES.get(st.session_state.get(SIZE_KEPT) or "Medium", VIEW_MAX_H)


def _keys(case_id: str) -> dict[str, str]:
    return {"call": f"rs-call-{case_id}", "level": f"rs-level-{case_id}", "mark": f"rs-mark-{case_id}"}


def _choose(key: str, value) -> None:
    st.session_state[key] = value


def mark_images(case: Case) -> None:
    """The case's X-ray(s), clickable: a click stores a :class:`Mark` in ``st.session_state["rs-mark-<case>"]``."""
    from streamlit_image_coordinates import streamlit_image_coordinates

    keys = _keys(case.case_id)
    mark = st.session_state.get(keys["mark"])
    max_h = image_height()
    columns = st.columns(len(case.paths)) if len(case.paths) > 1 else [st.container()]
    for index, (column, path) in enumerate(zip(columns, case.paths)):
        data, height, width = reading_view(path, loaders.path_signature(path), max_h,
                                           round(max_h * 1.4) // len(case.paths),
                                           _mark_tuple(mark if mark is not None and mark.image == index else None))
        with column:
            value = streamlit_image_coordinates(
                EncodedImage(data), image_format="JPEG",
                width="content", key=f"rs-click-{case.case_id}-{index}", cursor="crosshair",
            )
        seen = f"rs-click-seen-{case.case_id}-{index}"
        if value and value.get("unix_time") != st.session_state.get(seen):
            st.session_state[seen] = value.get("unix_time")
            width, height = float(value.get("width") or width), float(value.get("height") or height)
            x, y = float(value["x"]) / width, float(value["y"]) / height
            if 0.0 <= x <= 1.0 and 0.0 <= y <= 1.0:
                st.session_state[keys["mark"]] = Mark(image=index, x=x, y=y)
                st.rerun()


def answer_controls(session: Session, case: Case) -> tuple[bool | None, int | None, Mark | None]:
    """Reading (F / N), confidence (1-5) and the mark, each shown as chosen; nothing pre-selected.

    Returns:
        (fractured or None, confidence level 1-5 or None, mark or None).
    """
    keys = _keys(case.case_id)
    call = st.session_state.get(keys["call"])
    level = st.session_state.get(keys["level"])
    st.markdown("**Your reading**")
    yes, no = st.columns(2)
    yes.button(session.class_names[1].capitalize(), key="rs-f", shortcut="F", width="stretch",
               type="primary" if call is True else "secondary", on_click=_choose, args=(keys["call"], True))
    no.button(session.class_names[0].capitalize(), key="rs-n", shortcut="N", width="stretch",
              type="primary" if call is False else "secondary", on_click=_choose, args=(keys["call"], False))
    st.markdown("**How sure?** 1 = a guess · 5 = certain")
    for column, value in zip(st.columns(5), CONFIDENCE_LEVELS):
        column.button(str(value), key=f"rs-level-{value}", shortcut=str(value), width="stretch",
                      type="primary" if level == value else "secondary", on_click=_choose,
                      args=(keys["level"], value))
    mark = st.session_state.get(keys["mark"])
    if mark is None:
        st.caption("Where is the fracture? Click it on the X-ray (optional; on a fractured X-ray, "
                   "no click counts as a miss, as the model's heatmap always points somewhere).")
    else:
        left, right = st.columns([3, 2], vertical_alignment="center")
        left.caption(f"Marked at {mark.x:.0%} across, {mark.y:.0%} down" +
                     (f" (image {mark.image + 1})" if len(case.paths) > 1 else ""))
        right.button("Clear mark", key="rs-clear", on_click=_choose, args=(keys["mark"], None))
    st.segmented_control("Image size", tuple(IMAGE_SIZES), default=st.session_state.get(SIZE_KEPT, "Medium"),
                         key="rs-size", on_change=_keep_size,
                         help="Medium fits a 1280x720 screen; Large for a projector or a 1920x1080 screen.")
    return call, level, mark


# --------------------------------------------------------------------------
# The reveal and the results.


def reveal(session: Session, case: Case, answer, next_label: str) -> bool:
    """The X-ray with the truth box and the reader's click beside the model's heatmap (left), the verdicts
    and the *Next* button (right, key Enter), in one viewport. Returns whether *Next* was pressed.

    The heatmaps were stored with the session (no model run); a session made without them gets them
    from the shared, queued prediction (:func:`live_heatmaps`)."""
    picture, text = st.columns([3, 2])
    live: list[np.ndarray | None] | None = None
    with picture:
        for index, path in enumerate(case.paths):
            boxes = case.boxes[index] if index < len(case.boxes) else ()
            mark = answer.mark if answer.mark is not None and answer.mark.image == index else None
            xray, heat, stored = reveal_views(session.code, case.case_id, index, path, loaders.path_signature(path),
                                              _mark_tuple(mark), image_height())
            if heat is None and not stored and session.checkpoint:
                live = live_heatmaps(session, case) if live is None else live
                if live[index] is not None:
                    image = case_images(case)[index]
                    heat = jpeg_bytes(fit(overlay(image, live[index], 0.45, boxes), image_height(), VIEW_MAX_W,
                                          upscale=MAX_UPSCALE))
            left, right = st.columns(2) if heat is not None else (st.container(), None)
            left.image(xray, caption="the X-ray" + (" · green: annotated fracture" if boxes else "")
                       + (" · blue ring: your click" if mark else ""))
            if right is not None:
                right.image(heat, caption="where the model looked (heatmap)")
    with text:
        correct = int(answer.fractured) == case.label
        (st.success if correct else st.error)(
            f"Truth: **{session.class_names[case.label]}**. You said "
            f"**{session.class_names[int(answer.fractured)]}** ({answer.confidence}% sure)."
        )
        hit = mark_hit(case, answer)
        if hit is not None:
            you = ("you pointed at it ✓" if hit else
                   "you did not mark it" if answer.mark is None else "your click missed it")
            model = "" if case.model_hit is None else (
                "; the model's heatmap " + ("pointed at it ✓" if case.model_hit else "missed it"))
            st.markdown(f"Where: {you}{model}.")
            st.caption("A click (or the heatmap's peak) within 5% of the box counts: the same rule for both.")
        if case.model_prob is not None and session.threshold is not None:
            st.markdown(f"Model: P(fractured) = **{case.model_prob:.3f}** (threshold {session.threshold:.3f}) → "
                        f"**{session.class_names[int(case.model_prob >= session.threshold)]}**.")
        return st.button(next_label, type="primary", key="rs-next", shortcut="Enter", width="stretch")


def you_vs_model(result: dict) -> pd.DataFrame:
    """Finding and localising, the reader against the model on the same cases (tidy text)."""
    m, model, loc = result["metrics"], result["model"], result["localisation"]
    rows = [
        {"": "finding: accuracy", "you": fmt(m["accuracy"]), "model": fmt(model["accuracy"]) if model else "—"},
        {"": "finding: sensitivity", "you": fmt(m["sensitivity"]), "model": fmt(model["sensitivity"]) if model else "—"},
        {"": "finding: specificity", "you": fmt(m["specificity"]), "model": fmt(model["specificity"]) if model else "—"},
        {"": "localising: pointing hit",
         "you": f"{fmt(loc['rate'])} ({loc['hits']}/{loc['cases']})" if loc["cases"] else "—",
         "model": f"{fmt(loc['model_rate'])} ({loc['model_hits']}/{loc['model_cases']})" if loc["model_cases"] else "—"},
    ]
    return pd.DataFrame(rows)


def missed_gallery(session: Session, missed: Sequence[dict]) -> None:
    """Thumbnails of the cases the reader got wrong, each with its truth box and what they said."""
    per_row = 4
    for start in range(0, len(missed), per_row):
        for column, item in zip(st.columns(per_row), missed[start:start + per_row]):
            case = session.case(item["case_id"])
            path = case.paths[0]
            try:
                thumb = loaders.load_thumbnail(path, loaders.path_signature(path), THUMB)
            except FractureError as exc:
                column.warning(f"{item['case_id']}: {exc}")
                continue
            column.image(draw_boxes(thumb, case.boxes[0] if case.boxes else ()), width=THUMB)
            model = "" if item["model_probability"] is None else f" · model {item['model_probability']:.3f}"
            column.caption(f"Truth **{session.class_names[item['truth']]}**; you said "
                           f"{session.class_names[item['answer']]} ({item['confidence']}%){model}")


# --------------------------------------------------------------------------
# The instructor.


def join_link(base_url: str, code: str) -> str:
    """The link a student opens: the app's address, this page, the code filled in."""
    base = base_url.split("?", 1)[0].rstrip("/")
    if base.endswith(f"/{PAGE_PATH}"):
        base = base[: -len(PAGE_PATH) - 1]
    return f"{base}/{PAGE_PATH}?rs-code={quote(code)}"


def qr_png(text: str) -> bytes:
    """A QR code of ``text`` as PNG bytes (segno), large enough to scan from the back of a room."""
    import segno

    buffer = io.BytesIO()
    segno.make(text, error="m").save(buffer, kind="png", scale=8, border=2)
    return buffer.getvalue()


def join_panel(code: str) -> None:
    """The large join code, the join link and its QR code (for the projector)."""
    left, right = st.columns([3, 2], vertical_alignment="center")
    with left:
        st.markdown("Join code")
        st.markdown(f"<div style='font-size:4.5rem;font-weight:700;letter-spacing:0.25em;line-height:1.1'>"
                    f"{code}</div>", unsafe_allow_html=True)
        with st.popover("Link address"):
            base = st.text_input("Address students use to reach this app",
                                 value=st.context.url or "http://localhost:8501", key="rs-base-url",
                                 help="If this says localhost or 127.0.0.1, put the machine's network address "
                                      "here (e.g. http://192.168.1.20:8501): the link and QR code follow.")
        link = join_link(base, code)
        st.markdown(f"Or open **{link}**")
    right.image(qr_png(link), width=230, caption="scan to join")


def progress_table(summary: dict) -> pd.DataFrame:
    total = summary["cases"]
    return pd.DataFrame([{"reader": r["reader"], "answered": r["answered"],
                          "status": "finished" if r["finished"] else f"{total - r['answered']} to go"}
                         for r in summary["readers"]])


@st.fragment(run_every=REFRESH_S)
def live_dashboard(code: str, show_results: bool) -> None:
    """Progress per student and the class's figures, re-read from disk every few seconds.

    Args:
        show_results: also the readers' table and ROC figure (they hold the truth; the instructor
            may keep them off the projector while the class is reading).
    """
    try:
        session = load_session(code)
    except ReaderStudyError as exc:
        st.error(str(exc))
        return
    readers = load_readers(session)
    summary = session_summary(session, readers=readers)
    total = summary["cases"]
    cols = st.columns(4)
    cols[0].metric("Readers joined", len(summary["readers"]))
    cols[1].metric("Finished", f"{len(summary['finished'])}")
    kappa_help = (f"Fleiss' kappa: agreement between the {summary['fleiss_readers']} readers who finished "
                  f"all {total} cases (unfinished readers are left out; needs 2 readers and {MIN_KAPPA_CASES} cases).")
    cols[2].metric("Fleiss' kappa, finished",
                   fmt(summary["fleiss_kappa"]) if total >= MIN_KAPPA_CASES else f"— (needs {MIN_KAPPA_CASES} cases)",
                   help=kappa_help)
    loc = summary["localisation"]
    cols[3].metric("Class pointing hit", fmt(loc["rate"]),
                   delta=None if loc["model_rate"] is None else f"model {fmt(loc['model_rate'])}", delta_color="off",
                   help="Share of the class's answers on fractured cases with a box where the click fell in the "
                        "box grown by 5% (no click counts as a miss); the model: its heatmap's maximum, same rule.")
    if summary["unfinished"]:
        st.caption("Not finished (left out of Fleiss' kappa): " + ", ".join(summary["unfinished"]))
    if summary["readers"]:
        st.dataframe(progress_table(summary), hide_index=True, width="stretch", column_config={
            "answered": st.column_config.ProgressColumn("answered", min_value=0, max_value=total,
                                                        format=f"%d of {total}")})
    else:
        st.info("No reader has joined yet.")
    for problem in summary["problems"]:
        st.warning(f"Damaged reader file, not counted: {problem}")
    if summary["notes"]:
        with st.expander(f"{len(summary['notes'])} answers left out"):
            for note in summary["notes"]:
                st.caption(note)
    if show_results:
        results_panel(session, summary)


def results_panel(session: Session, summary: dict) -> None:
    """The readers' table (then the model) and the ROC figure with one colour and marker per reader."""
    if summary["readers"]:
        st.dataframe(readers_table(summary), hide_index=True, width="stretch")
        st.caption(f"On this session's {summary['cases']} cases ({session.source_detail}). Kappa needs "
                   f"{MIN_KAPPA_CASES} answered cases; pointing hit: a click within 5% of the annotated box, "
                   "as the model's heatmap is scored.")
        points = [(r["reader"], *r["roc_point"]) for r in summary["readers"] if r["roc_point"]]
        st.plotly_chart(readers_roc(summary["model"], points, f"Readers on the model's ROC curve ({session.code})"),
                        key="rs-class-roc")


def csv_button(session: Session) -> None:
    st.download_button("Download answers (CSV)", export_csv_bytes(session), file_name=f"reader_study_{session.code}.csv",
                       mime="text/csv", key="rs-csv")

