"""Reader study: a class reads X-rays, then sees the truth, the model and its heatmap."""
from __future__ import annotations

import streamlit as st

from fracture.errors import FractureError
from fracture.reader_study import (
    ReaderNameTaken,
    claim_reader,
    create_session,
    find_reader,
    list_sessions,
    load_session,
    open_instructor_view,
    reader_summary,
    save_answer,
)
from fracture.reader_study.summary import fmt
from fracture.ui import loaders
from fracture.ui import reader_views as views
from fracture.ui.context import active_context, dataset_root
from fracture.ui.reader_charts import readers_roc

context = active_context()
loaders.freeze_long_lived("reader")  # the server's first reader: no full GC of its modules on every click
role = st.sidebar.radio("Reader Study: I am", ("a reader", "the instructor"), horizontal=True, key="rs-role",
                        bind="query-params")

# ---------------------------------------------------------------- the instructor
if role == "the instructor":
    st.title("👩‍🏫 Reader study: instructor")
    unlocked = st.session_state.get("rs-unlocked")
    codes = list_sessions()
    with st.expander("New session", expanded=not unlocked and not codes):
        with st.form("rs-create"):
            left, mid, right = st.columns(3)
            use_dataset = left.radio("Cases from", ("built-in real gallery", "active dataset (test split)"),
                                     key="rs-source") != "built-in real gallery"
            n_cases = mid.number_input("Cases", 1, 200, 10, key="rs-n")
            seed = mid.number_input("Seed", 0, 10_000, 0, key="rs-seed")
            prevalence = right.radio("Prevalence", ("balanced", "natural"), key="rs-prevalence",
                                     help="Balanced: half fractured. Natural: as the split has them.")
            body_part = right.text_input("Body part (optional)", key="rs-body", help="e.g. hand, leg").strip() or None
            new_pin = left.text_input("Instructor PIN (4-32 characters)", type="password", key="rs-new-pin",
                                      help="Needed to open this dashboard, the truth and the CSV. Not stored in clear.")
            submitted = st.form_submit_button("Create session", type="primary")
        if submitted:
            checkpoint = context.checkpoint.path if context.checkpoint is not None else None
            root = dataset_root(context) if use_dataset else None  # a demo set still being built: waited for
            try:
                with st.spinner("Building the case set, scoring it and storing the model's heatmaps…"):
                    created = create_session(
                        pin=new_pin, source="dataset" if use_dataset else "gallery",
                        data_root=str(root) if root else None,
                        n_cases=int(n_cases), seed=int(seed), prevalence=prevalence, body_part=body_part,
                        checkpoint=checkpoint,
                    )
            except FractureError as exc:
                st.error(str(exc))
            else:
                st.session_state["rs-unlocked"] = unlocked = created.code
                st.success(f"Session **{created.code}**: {len(created.cases)} cases. Give this code to the class.")
    if not unlocked:
        with st.form("rs-open"):
            left, right = st.columns(2)
            code = left.text_input("Session code", key="rs-open-code", bind="query-params",
                                   placeholder="e.g. K7QXM2").strip().upper()
            pin = right.text_input("Instructor PIN", type="password", key="rs-pin")
            opened = st.form_submit_button("Open dashboard")
        if opened and code:
            try:
                open_instructor_view(load_session(code), pin)  # 5 wrong in 5 minutes: locked for a while
            except FractureError as exc:
                st.error(str(exc))
            else:
                st.session_state["rs-unlocked"] = unlocked = code
        if not unlocked:
            st.info("The dashboard, the truth of every case and the CSV need the session's instructor PIN.")
            if codes:
                st.caption(f"Sessions on this server: {', '.join(codes)}")
            st.stop()
    try:
        session = load_session(unlocked)
    except FractureError as exc:
        st.error(str(exc))
        st.stop()
    head, lock = st.columns([5, 1], vertical_alignment="center")
    head.caption(f"Session {session.code}: {len(session.cases)} cases from {session.source_detail}; "
                 f"model: {session.checkpoint.rsplit('/', 1)[-1] if session.checkpoint else 'none'}")
    if lock.button("Lock", key="rs-lock", help="Close the dashboard; the PIN is needed again."):
        st.session_state["rs-unlocked"] = None
        st.rerun()
    views.join_panel(session.code)
    show = st.toggle("Show the class's results (holds the truth: keep off the projector while the class reads)",
                     key="rs-show-results")
    views.live_dashboard(session.code, show)
    views.csv_button(session)
    st.stop()

# ---------------------------------------------------------------- a reader
code = st.session_state.get("rs-code") or st.query_params.get("rs-code", "")
name = st.session_state.get("rs-name") or st.query_params.get("rs-name", "")
joined = bool(code and name)
if joined:  # reading: the X-ray and the controls get the viewport, the session line stays one row
    views.compact_page()
    status, change = st.columns([5, 1], vertical_alignment="bottom")
    inputs = change.popover("Change", width="stretch", help="Another session code or name")
else:
    st.title("👩‍🏫 Reader study")
    st.caption("Read X-rays one at a time, commit to an answer, then see the truth, the model's probability and "
               "its heatmap. At the end: your sensitivity and specificity against the truth and the model, and "
               "your point on the model's ROC curve for the same cases. A teaching tool, not a test of clinical skill.")
    inputs = st.container()
with inputs:
    code = st.text_input("Session code", key="rs-code", bind="query-params").strip().upper()
    name = st.text_input("Your name (or a pseudonym)", key="rs-name", bind="query-params").strip()
if not code or not name:
    st.info("Enter the session code your instructor gave you and a name.")
    st.stop()
if not joined:
    st.rerun()  # lay the page out for reading
try:
    session = load_session(code)
    reader = find_reader(session, name)
    token = st.query_params.get("rs-key")
    if reader is None:
        try:
            reader = claim_reader(session, name)
        except ReaderNameTaken:
            reader = find_reader(session, name)
        else:
            st.query_params["rs-key"] = token = reader.token
    if reader is not None and reader.token != token:
        st.warning(f"The name **{reader.name}** is already taken in session {session.code} "
                   f"({len(reader.answers)} of {len(session.cases)} answered). Is that you (another tab, another "
                   "computer)? Otherwise choose another name with *Change*.")
        if st.button(f"Yes, I am {reader.name}: continue", key="rs-join", type="primary"):
            st.query_params["rs-key"] = claim_reader(session, name, join=True).token
            st.rerun()
        st.stop()
except FractureError as exc:
    st.error(str(exc))
    st.stop()

answers = reader.answers
pending = [cid for cid in reader.order if cid not in answers]
total = len(session.cases)
status.progress(min(1.0, len(answers) / total),
                text=f"Session {session.code} · {reader.name} · {len(answers)} of {total} cases read")

revealed = st.session_state.get("rs-reveal")
if revealed and revealed in answers:
    case = session.case(revealed)
    if views.reveal(session, case, answers[revealed], "Next case" if pending else "See my results"):
        st.session_state["rs-reveal"] = None
        st.rerun()
    st.stop()

if pending:
    case = session.case(pending[0])
    picture, controls = st.columns([3, 2])
    with picture:
        views.mark_images(case)
    with controls:
        st.markdown(f"**Case {len(answers) + 1} of {total}** · body part: {case.body_part}")
        call, level, mark = views.answer_controls(session, case)
        ready = call is not None and level is not None
        if st.button("Answer", type="primary", key="rs-answer", disabled=not ready, shortcut="Enter",
                     width="stretch", help=None if ready else "Choose a reading (F / N) and how sure you are (1-5)"):
            try:
                save_answer(code, name, case.case_id, fractured=bool(call), confidence=views.CONFIDENCE_LEVELS[level],
                            mark=mark, token=reader.token)
            except FractureError as exc:
                st.error(str(exc))
            else:
                st.session_state["rs-reveal"] = case.case_id
                st.rerun()
        if not ready:
            st.caption("Answer unlocks once you have chosen a reading and how sure you are. Keys: F / N, 1-5, Enter.")
    st.stop()

# ---------------------------------------------------------------- results
result = reader_summary(session, answers)
m = result["metrics"]
st.subheader(f"Your results on the {total} cases of session {session.code}")
cols = st.columns(5)
cols[0].metric("Sensitivity", fmt(m["sensitivity"]))
cols[1].metric("Specificity", fmt(m["specificity"]))
cols[2].metric("Accuracy", fmt(m["accuracy"]))
cols[3].metric("Kappa with the truth", fmt(m["kappa_truth"]), help="Cohen's kappa; shown from 5 cases on.")
cols[4].metric("Kappa with the model", fmt(m["kappa_model"]), help="Cohen's kappa; shown from 5 cases on.")
left, right = st.columns([2, 3])
with left:
    st.markdown("**You vs the model** (same cases)")
    st.dataframe(views.you_vs_model(result), hide_index=True, width="stretch")
with right:
    points = [(reader.name, *m["roc_point"])] if m["roc_point"] else []
    st.plotly_chart(readers_roc(result["model"], points, "You on the model's ROC curve (same cases)"),
                    key="rs-roc")
if result["missed"]:
    st.markdown(f"**Cases you missed** ({len(result['missed'])} of {total})")
    views.missed_gallery(session, result["missed"])
else:
    st.success("You missed none.")
if session.checkpoint is None:
    st.caption("This session was made without a model: no model figures.")
