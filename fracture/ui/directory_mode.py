"""Keep Streamlit out of its old ``pages/`` directory mode (imports nothing but streamlit).

Its own module so that ``app.py`` can call it before importing anything
heavy: until it runs, a fresh server's first request shows Streamlit's own
navigation with a nameless "app" entry.
"""
from __future__ import annotations

import streamlit as st


def leave_directory_mode() -> None:
    """Rerun through ``app.py``'s ``st.navigation`` if Streamlit started this run in directory mode.

    Streamlit decides once per server process, when the first session starts,
    whether the entry script's neighbour ``pages/`` means its older directory
    mode; only a later ``st.navigation`` call turns that off. So a fresh
    server's first request (and every ``AppTest`` run) runs a page script
    directly, under a navigation of its own with a nameless "app" page and no
    shared sidebar. ``app.py`` and every page call this first: it turns the
    mode off and reruns, and the rerun goes through ``app.py`` to the same URL.
    ``tests/test_first_request.py`` proves it in a real browser.
    """
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # a Streamlit without directory mode
        return
    if getattr(PagesManager, "uses_pages_directory", None):
        PagesManager.uses_pages_directory = False
        st.rerun()
