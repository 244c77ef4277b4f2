"""Uploads that survive a page switch.

Streamlit forgets a file uploader's files when its page is left; a person who
dropped three X-rays on Predict, looked at the Lab and came back found an
empty box. :func:`uploader_files` keeps the files' bytes in the session and
hands them back when the page is drawn again, until the person clears the
uploader or presses "Forget".
"""
from __future__ import annotations

from typing import Any

import streamlit as st

_PREFIX = "kept-uploads-"


def uploader_files(label: str, *, key: str, **uploader_kwargs: Any) -> list[tuple[str, bytes]]:
    """A multi-file uploader whose files outlive a page switch; returns ``(name, bytes)`` pairs."""
    store = _PREFIX + key
    returning = key not in st.session_state  # widget state is dropped when its page was left
    files = st.file_uploader(label, key=key, **uploader_kwargs)
    if not isinstance(files, list):
        files = [files] if files is not None else []
    restored = store + "-restored"
    if files:
        st.session_state[store] = [(f.name, f.getvalue()) for f in files]
        st.session_state.pop(restored, None)
        return list(st.session_state[store])
    kept = st.session_state.get(store) or []
    if kept and (returning or st.session_state.get(restored)):
        st.session_state[restored] = True  # stays in use until new files come or "Forget"
        note, forget = st.columns([4, 1], vertical_alignment="center")
        note.caption(f"Kept from before you left this page: {', '.join(name for name, _ in kept)}")
        if not forget.button("Forget", key=f"{store}-forget"):
            return list(kept)
    st.session_state.pop(store, None)  # cleared by the person, or forgotten
    st.session_state.pop(restored, None)
    return []
