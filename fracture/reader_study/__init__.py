"""Reader studies: a class reads X-rays, then sees the truth, the model and its heatmap.

The MURA paper compared each radiologist with the model by Cohen's kappa; this
package lets a teaching session do the same live. An instructor builds a case
set (:func:`create_session`), each reader's answers are saved in a file of
their own (:func:`save_answer`), and :func:`reader_summary` /
:func:`session_summary` compute the figures a class asks for.
"""
from fracture.reader_study.metrics import fleiss_kappa, reader_metrics
from fracture.reader_study.session import (
    Answer,
    Case,
    ReaderStudyError,
    Session,
    create_session,
    list_sessions,
    load_answers,
    load_session,
    save_answer,
    sessions_root,
)
from fracture.reader_study.summary import export_csv, reader_summary, session_summary

__all__ = [
    "Answer", "Case", "ReaderStudyError", "Session", "create_session", "export_csv", "fleiss_kappa",
    "list_sessions", "load_answers", "load_session", "reader_metrics", "reader_summary", "save_answer",
    "session_summary", "sessions_root",
]
