"""Reader studies: a class reads X-rays, then sees the truth, the model and its heatmap.

The MURA paper compared each radiologist with the model by Cohen's kappa; this
package lets a teaching session do the same live. An instructor builds a case
set under a PIN (:func:`create_session`), each reader claims a name
(:func:`claim_reader`) and their answers, with an optional click on the
fracture, are saved in a file of their own (:func:`save_answer`);
:func:`reader_summary` / :func:`session_summary` compute the figures a class
asks for, the clicks scored with the model's pointing game (:mod:`.localise`).
"""
from fracture.reader_study.localise import localisation_summary, mark_hit, score_mark
from fracture.reader_study.metrics import MIN_KAPPA_CASES, fleiss_kappa, reader_metrics
from fracture.reader_study.pin_lock import PinLockedError, open_instructor_view
from fracture.reader_study.session import (
    Answer,
    Case,
    Mark,
    Reader,
    ReaderNameTaken,
    ReaderSet,
    ReaderStudyError,
    Session,
    WrongPinError,
    case_heatmaps,
    check_pin,
    claim_reader,
    create_session,
    find_reader,
    list_sessions,
    load_answers,
    load_readers,
    load_session,
    reader_order,
    save_answer,
    sessions_root,
)
from fracture.reader_study.summary import export_csv, reader_summary, session_summary

__all__ = [
    "Answer", "Case", "MIN_KAPPA_CASES", "Mark", "Reader", "ReaderNameTaken", "ReaderSet", "ReaderStudyError",
    "Session", "case_heatmaps", "check_pin", "claim_reader", "create_session", "export_csv", "find_reader", "fleiss_kappa",
    "list_sessions", "load_answers", "open_instructor_view", "PinLockedError", "WrongPinError", "load_readers", "load_session", "localisation_summary", "mark_hit",
    "reader_metrics", "reader_order", "reader_summary", "save_answer", "score_mark", "session_summary",
    "sessions_root",
]
