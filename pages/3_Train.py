"""Train: start a background training run, watch it live, promote its checkpoint."""
from __future__ import annotations

import streamlit as st

from fracture.errors import FractureError
from fracture.train.launcher import list_runs
from fracture.ui import loaders
from fracture.ui.context import active_context, dataset_root
from fracture.ui.job_viewer import REFRESH_S, STATE_ICONS, is_live, newest_run, show_run
from fracture.train.run_table import launch_from_form, past_runs_table, promote_run
from fracture.ui.train_form import RUN_NAME_KEY, train_form

RUN_KEY = "train_selected_run"

context = active_context()
settings = context.settings
st.title("🏋️ Train")
st.caption(
    "Training runs as a separate process (`python -m fracture train`) that writes its events to "
    f"its run folder under `{settings.runs_dir}`; this page reads them, so a run keeps going when "
    "you switch pages or reload. How long it takes depends on this machine: once the run has measured "
    "its pace, each phase below says how much time is left."
)

runs = list_runs(settings.runs_dir)
live_runs = [r.run_dir.name for r in runs if is_live(r.run_dir)]
top = st.container()  # a live run is drawn here, above the form: Start shows it without scrolling
with st.expander("Start a new run", expanded=not runs):
    root = dataset_root(context)
    if root is None:
        st.info(context.dataset_error or "Pick a dataset in the sidebar first.")
    else:
        config = train_form(root)
        if config is not None:
            try:
                run_dir = launch_from_form(config, settings, st.session_state.get(RUN_NAME_KEY))
            except FractureError as exc:
                st.error(str(exc))
            else:
                st.session_state[RUN_KEY] = run_dir.name
                st.rerun()  # draw the new run at the top

if not runs:
    st.info("No runs yet: start one above.")
    st.stop()

names = [r.run_dir.name for r in runs]
if st.session_state.get(RUN_KEY) not in names:
    # after a reload: a live run if there is one, else the run started last
    st.session_state[RUN_KEY] = live_runs[0] if live_runs else newest_run(runs).run_dir.name
with top if live_runs else st.container():
    st.subheader("Run")
    selected = st.selectbox("Run to show", names, key=RUN_KEY,
                            help="The newest running run is shown after a reload.")
    run_dir = settings.runs_dir / selected
    show_run(run_dir)

st.subheader("Past runs")


@st.fragment(run_every=REFRESH_S if live_runs else None)
def past_runs() -> None:
    """Re-read while a run is live, so its row says what the run view above says."""
    table = past_runs_table(list_runs(settings.runs_dir))
    table["state"] = [f"{STATE_ICONS.get(state, '')} {state.replace('_', ' ')}" for state in table["state"]]
    st.dataframe(table, hide_index=True)


past_runs()
with st.form("promote"):
    st.markdown(
        "**Promote** a run's best checkpoint into `weights/` so that it is offered on every page "
        "under that name."
    )
    cols = st.columns([2, 2, 1])
    run_name = cols[0].selectbox("Run", names, index=names.index(selected), key="promote-run")
    new_name = cols[1].text_input("Checkpoint name", value=f"{selected}", key="promote-name")
    make_default = cols[2].checkbox("Make default", value=False, key="promote-default")
    overwrite = st.checkbox(
        "Replace an existing promoted checkpoint of this name", value=False, key="promote-overwrite",
        help="Without this, a name that exists is refused. Shipped checkpoints are never replaced from here.",
    )
    if st.form_submit_button("Promote", key="promote-submit"):
        try:
            target = promote_run(settings.runs_dir / run_name, new_name.strip(), settings.weights_dir,
                                 make_default=make_default, overwrite=overwrite)
        except FractureError as exc:
            st.error(str(exc))
        else:
            loaders.refresh_checkpoints()
            st.success(f"Promoted to `{target}`; pick it in the sidebar.")
