"""Reader study: a class reads X-rays, then sees the truth, the model and its heatmap."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from fracture.errors import FractureError
from fracture.explain.annotate import draw_boxes
from fracture.reader_study import (
    create_session,
    list_sessions,
    load_session,
    reader_summary,
    save_answer,
    session_summary,
)
from fracture.reader_study.session import reader_answers
from fracture.reader_study.summary import export_csv_bytes
from fracture.ui import loaders
from fracture.ui.context import active_context
from fracture.ui.widgets import overlay
from fracture.viz.eval_charts import roc_chart

context = active_context()
st.title("👩‍🏫 Reader study")
st.caption(
    "Read X-rays one at a time, commit to an answer, then see the truth, the model's probability and "
    "its heatmap. At the end: your sensitivity, specificity and Cohen's kappa against the truth and the "
    "model, and your point on the model's ROC curve for the same cases. A teaching tool, not a test of "
    "clinical skill."
)
role = st.radio("I am", ("a reader", "the instructor"), horizontal=True, key="rs-role", bind="query-params")


def _roc_figure(summary_model: dict | None, points: dict[str, tuple[float, float]], title: str):
    curves = {}
    if summary_model and summary_model.get("roc"):
        fpr, tpr = zip(*summary_model["roc"])
        curves["model"] = (list(fpr), list(tpr), summary_model.get("auc"))
    return roc_chart(curves, operating_points=points, title=title)


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


if role == "the instructor":
    with st.form("rs-create"):
        st.markdown("**New session**")
        left, mid, right = st.columns(3)
        use_dataset = left.radio("Cases from", ("built-in real gallery", "active dataset (test split)"),
                                 key="rs-source") != "built-in real gallery"
        n_cases = mid.number_input("Cases", 1, 200, 10, key="rs-n")
        seed = mid.number_input("Seed", 0, 10_000, 0, key="rs-seed")
        prevalence = right.radio("Prevalence", ("balanced", "natural"), key="rs-prevalence",
                                 help="Balanced: half fractured. Natural: as the split has them.")
        body_part = right.text_input("Body part (optional)", key="rs-body", help="e.g. hand, leg").strip() or None
        submitted = st.form_submit_button("Create session", type="primary")
    if submitted:
        checkpoint = context.checkpoint.path if context.checkpoint is not None else None
        try:
            with st.spinner("Building the case set and scoring it with the model…"):
                created = create_session(
                    source="dataset" if use_dataset else "gallery",
                    data_root=str(context.dataset_root) if use_dataset and context.dataset_root else None,
                    n_cases=int(n_cases), seed=int(seed), prevalence=prevalence, body_part=body_part,
                    checkpoint=checkpoint,
                )
        except FractureError as exc:
            st.error(str(exc))
        else:
            st.session_state["rs-view"] = created.code
            st.success(f"Session **{created.code}** — {len(created.cases)} cases. Give this code to the class.")
    codes = list_sessions()
    if not codes:
        st.info("No sessions yet: create one above.")
        st.stop()
    if st.session_state.get("rs-view") not in codes:
        st.session_state["rs-view"] = codes[-1]
    code = st.selectbox("Session", codes, key="rs-view")
    try:
        session = load_session(code)
    except FractureError as exc:
        st.error(str(exc))
        st.stop()
    summary = session_summary(session)
    st.caption(f"{summary['cases']} cases from {session.source_detail}; model: {session.checkpoint or 'none'}")
    cols = st.columns(3)
    cols[0].metric("Readers", len(summary["readers"]))
    cols[1].metric("Fleiss' kappa (readers)", _fmt(summary["fleiss_kappa"]),
                   help=f"Agreement between readers on the {summary['fleiss_cases']} cases all of them answered.")
    if summary["model"]:
        cols[2].metric("Model accuracy", _fmt(summary["model"]["accuracy"]))
    if summary["readers"]:
        table = pd.DataFrame(summary["readers"])[
            ["reader", "answered", "sensitivity", "specificity", "accuracy", "kappa_truth", "kappa_model", "auc"]]
        st.dataframe(table, hide_index=True, width="stretch")
        points = {r["reader"]: tuple(r["roc_point"]) for r in summary["readers"] if r["roc_point"]}
        st.plotly_chart(_roc_figure(summary["model"], points, f"Readers on the model's ROC curve ({code})"),
                        key="rs-class-roc")
    else:
        st.info("No answers yet.")
    st.download_button("Download answers (CSV)", export_csv_bytes(session), file_name=f"reader_study_{code}.csv",
                       mime="text/csv", key="rs-csv")
    st.stop()

# ---------------------------------------------------------------- a reader
left, right = st.columns(2)
code = left.text_input("Session code", key="rs-code", bind="query-params").strip().upper()
name = right.text_input("Your name (or a pseudonym)", key="rs-name").strip()
if not code or not name:
    st.info("Enter the session code your instructor gave you and a name.")
    st.stop()
try:
    session = load_session(code)
    answers = reader_answers(code, name)
except FractureError as exc:
    st.error(str(exc))
    st.stop()

reveal = st.session_state.get("rs-reveal")
pending = [c for c in session.cases if c.case_id not in answers]
st.progress(len(answers) / len(session.cases), text=f"{len(answers)} of {len(session.cases)} cases read")

if reveal and reveal in answers:
    case = session.case(reveal)
    answer = answers[reveal]
    correct = int(answer.fractured) == case.label
    truth = session.class_names[case.label]
    (st.success if correct else st.error)(
        f"Truth: **{truth}**. You said **{session.class_names[int(answer.fractured)]}** "
        f"({answer.confidence}% sure)."
    )
    images = [loaders.load_full_image(p, loaders.path_signature(p)) for p in case.paths]
    cols = st.columns(len(images) * 2)
    heatmaps = [None] * len(images)
    if session.checkpoint:
        try:
            prediction = loaders.predict_study(session.checkpoint, images, [c.split("/")[-1] for c in case.paths])
            heatmaps = [p.heatmap for p in prediction.images]
        except FractureError as exc:
            st.warning(f"No heatmap: {exc}")
    for i, (image, heatmap) in enumerate(zip(images, heatmaps)):
        boxes = case.boxes[i] if i < len(case.boxes) else ()
        cols[2 * i].image(draw_boxes(image, boxes), width="stretch",
                          caption="the X-ray" + (" · green box: annotated fracture" if boxes else ""))
        cols[2 * i + 1].image(overlay(image, heatmap, 0.45, boxes), caption="where the model looked (heatmap)",
                              width="stretch")
    if case.model_prob is not None:
        st.markdown(f"Model: P(fractured) = **{case.model_prob:.2f}** "
                    f"(threshold {session.threshold:.2f}) → **{session.class_names[int(case.model_prob >= session.threshold)]}**")
    if any(case.boxes):
        st.caption("The green box is the annotated fracture: does the heatmap point at it?")
    if st.button("Next case" if pending else "See my results", type="primary", key="rs-next"):
        st.session_state["rs-reveal"] = None
        st.rerun()
    st.stop()

if pending:
    case = pending[0]
    st.subheader(f"Case {session.cases.index(case) + 1} of {len(session.cases)}")
    st.caption(f"Body part: {case.body_part}")
    images = [loaders.load_full_image(p, loaders.path_signature(p)) for p in case.paths]
    for column, image in zip(st.columns(len(images)), images):
        column.image(image, width="stretch")
    with st.form(f"rs-answer-{case.case_id}"):
        call = st.radio("Your reading", session.class_names[::-1], key=f"rs-call-{case.case_id}", horizontal=True)
        confidence = st.slider("How sure are you? (%)", 0, 100, 70, 5, key=f"rs-conf-{case.case_id}")
        if st.form_submit_button("Answer", type="primary"):
            try:
                save_answer(code, name, case.case_id, fractured=call == session.class_names[1], confidence=int(confidence))
            except FractureError as exc:
                st.error(str(exc))
            else:
                st.session_state["rs-reveal"] = case.case_id
                st.rerun()
    st.stop()

# ---------------------------------------------------------------- results
result = reader_summary(session, answers)
m = result["metrics"]
st.subheader("Your results")
cols = st.columns(5)
cols[0].metric("Sensitivity", _fmt(m["sensitivity"]))
cols[1].metric("Specificity", _fmt(m["specificity"]))
cols[2].metric("Accuracy", _fmt(m["accuracy"]))
cols[3].metric("Kappa with the truth", _fmt(m["kappa_truth"]))
cols[4].metric("Kappa with the model", _fmt(m["kappa_model"]))
if result["model"]:
    st.caption(f"The model on the same {result['model']['n']} cases: sensitivity {_fmt(result['model']['sensitivity'])}, "
               f"specificity {_fmt(result['model']['specificity'])}, accuracy {_fmt(result['model']['accuracy'])}.")
points = {name: tuple(m["roc_point"])} if m["roc_point"] else {}
st.plotly_chart(_roc_figure(result["model"], points, "You on the model's ROC curve (same cases)"), key="rs-roc")
if result["missed"]:
    st.markdown("**Cases you missed**")
    st.dataframe(pd.DataFrame(result["missed"]), hide_index=True, width="stretch")
else:
    st.success("You missed none.")
