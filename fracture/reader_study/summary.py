"""What a reader sees at the end, what the instructor sees for the class, and the CSV export.

Every number here is computed on the session's own cases (the built-in
gallery's or a dataset's test split, image level for one-image cases, the
mean of a study's image probabilities for the model otherwise).
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fracture.reader_study.localise import localisation_summary, mark_hit
from fracture.reader_study.metrics import MIN_KAPPA_CASES, fleiss_kappa, reader_metrics, reader_score
from fracture.reader_study.session import Answer, ReaderSet, ReaderStudyError, Session, load_readers
from fracture.util.files import atomic_write_text

CSV_COLUMNS = ("session", "reader", "case_id", "source_id", "body_part", "truth", "answer", "confidence",
               "reader_score", "correct", "mark_image", "mark_x", "mark_y", "mark_hit", "model_probability",
               "model_answer", "model_hit", "answered_at")


def _model_calls(session: Session, case_ids: list[str]) -> list[int] | None:
    if session.threshold is None:
        return None
    probs = [session.case(cid).model_prob for cid in case_ids]
    if any(p is None for p in probs):
        return None
    return [int(p >= session.threshold) for p in probs]


def model_metrics(session: Session) -> dict[str, Any] | None:
    """The model on the same cases (its probabilities as scores, its calls at the stored threshold)."""
    if session.threshold is None or any(c.model_prob is None for c in session.cases):
        return None
    truth = [c.label for c in session.cases]
    probs = [float(c.model_prob) for c in session.cases]
    calls = [int(p >= session.threshold) for p in probs]
    return {"threshold": session.threshold, **reader_metrics(truth, calls, probs)}


def reader_summary(session: Session, answers: dict[str, Answer]) -> dict[str, Any]:
    """One reader's figures on the cases they answered, their misses, and the model on the same cases.

    Returns:
        ``answered, total, metrics`` (:func:`reader_metrics`), ``missed`` (case, truth, answer,
        confidence, model probability), ``localisation`` (:func:`localisation_summary`) and ``model``.
    """
    case_ids = [c.case_id for c in session.cases if c.case_id in answers]
    truth = [session.case(cid).label for cid in case_ids]
    calls = [int(answers[cid].fractured) for cid in case_ids]
    scores = [reader_score(answers[cid].fractured, answers[cid].confidence) for cid in case_ids]
    metrics = reader_metrics(truth, calls, scores, _model_calls(session, case_ids))
    missed = [
        {"case_id": cid, "source_id": session.case(cid).source_id, "truth": session.case(cid).label,
         "answer": int(answers[cid].fractured), "confidence": answers[cid].confidence,
         "model_probability": session.case(cid).model_prob}
        for cid in case_ids if int(answers[cid].fractured) != session.case(cid).label
    ]
    return {"answered": len(case_ids), "total": len(session.cases), "metrics": metrics, "missed": missed,
            "localisation": localisation_summary(session.cases, answers), "model": model_metrics(session)}


def _pooled_localisation(session: Session, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The class's pointing hit (every scored click of every reader) and the model's on the session's boxed cases."""
    cases = sum(r["localisation"]["cases"] for r in rows)
    hits = sum(r["localisation"]["hits"] for r in rows)
    model = [c.model_hit for c in session.cases if c.has_box and c.model_hit is not None]
    return {"cases": cases, "hits": hits, "rate": hits / cases if cases else None,
            "model_cases": len(model), "model_hits": int(sum(model)),
            "model_rate": float(np.mean(model)) if model else None}


def session_summary(session: Session, root: str | Path | None = None,
                    readers: ReaderSet | None = None) -> dict[str, Any]:
    """Every reader's row, Fleiss' kappa over the readers who finished, and the model's figures.

    Fleiss' kappa needs every reader to rate every case, so it uses only the
    readers who answered all cases (the others are listed in ``unfinished``)
    and is None below 2 finished readers or :data:`MIN_KAPPA_CASES` cases.

    Returns:
        ``code, cases, readers`` (one row each: reader, answered, finished, the
        metrics and ``localisation``), ``finished``, ``unfinished``, ``fleiss_kappa``,
        ``fleiss_readers``, ``fleiss_cases``, ``model``, ``localisation`` (class vs
        model), ``problems`` (damaged reader files) and ``notes`` (answers left out).
    """
    readers = readers if readers is not None else load_readers(session, root)
    rows = []
    for name, reader in sorted(readers.readers.items(), key=lambda item: item[0].casefold()):
        summary = reader_summary(session, reader.answers)
        rows.append({"reader": name, "answered": summary["answered"], "finished": reader.finished(session),
                     **summary["metrics"], "localisation": summary["localisation"]})
    finished = [r["reader"] for r in rows if r["finished"]]
    unfinished = [r["reader"] for r in rows if not r["finished"]]
    kappa = None
    if len(finished) >= 2 and len(session.cases) >= MIN_KAPPA_CASES:
        ratings = np.array([[int(readers.readers[name].answers[cid].fractured) for name in finished]
                            for cid in session.case_ids])
        kappa = fleiss_kappa(ratings)
    return {
        "code": session.code, "cases": len(session.cases), "readers": rows, "finished": finished,
        "unfinished": unfinished, "fleiss_kappa": kappa, "fleiss_readers": len(finished),
        "fleiss_cases": len(session.cases) if len(finished) >= 2 else 0, "model": model_metrics(session),
        "localisation": _pooled_localisation(session, rows), "problems": list(readers.problems),
        "notes": list(readers.notes),
    }


def fmt(value: Any, digits: int = 3) -> str:
    """A number as a person reads it: fixed decimals, '—' where there is none (never 'None' or 'nan')."""
    if value is None or isinstance(value, bool):
        return "—" if value is None else ("yes" if value else "no")
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "—" if not np.isfinite(number) else f"{number:.{digits}f}"


def readers_table(summary: dict[str, Any]) -> pd.DataFrame:
    """The instructor's table: one row per reader (then the model), every figure as tidy text."""
    total = summary["cases"]
    rows = []
    for r in summary["readers"]:
        loc = r["localisation"]
        rows.append({
            "reader": r["reader"], "answered": f"{r['answered']}/{total}", "finished": "yes" if r["finished"] else "no",
            "sensitivity": fmt(r["sensitivity"]), "specificity": fmt(r["specificity"]), "accuracy": fmt(r["accuracy"]),
            "kappa vs truth": fmt(r["kappa_truth"]), "kappa vs model": fmt(r["kappa_model"]), "AUC": fmt(r["auc"]),
            "pointing hit": f"{fmt(loc['rate'])} ({loc['hits']}/{loc['cases']})" if loc["cases"] else "—",
        })
    model = summary.get("model")
    if model:
        loc = summary["localisation"]
        rows.append({
            "reader": "model", "answered": f"{model['n']}/{total}", "finished": "yes",
            "sensitivity": fmt(model["sensitivity"]), "specificity": fmt(model["specificity"]),
            "accuracy": fmt(model["accuracy"]), "kappa vs truth": fmt(model["kappa_truth"]), "kappa vs model": "—",
            "AUC": fmt(model["auc"]),
            "pointing hit": (f"{fmt(loc['model_rate'])} ({loc['model_hits']}/{loc['model_cases']})"
                             if loc["model_cases"] else "—"),
        })
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------
# CSV export.


def spreadsheet_safe(value: Any) -> Any:
    """One cell made safe for a spreadsheet (OWASP CSV injection): text starting with ``= + - @``,
    tab or CR gets a leading apostrophe, so ``=cmd|' /C calc'!A0`` typed as a reader name stays text.
    Numbers are left as numbers. The csv module quotes cells holding CR/LF."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def export_rows(session: Session, root: str | Path | None = None,
                readers: ReaderSet | None = None) -> list[dict[str, Any]]:
    readers = readers if readers is not None else load_readers(session, root)
    rows = []
    for name, reader in sorted(readers.readers.items(), key=lambda item: item[0].casefold()):
        for case in session.cases:
            answer = reader.answers.get(case.case_id)
            if answer is None:
                continue
            model_answer = (int(case.model_prob >= session.threshold)
                            if case.model_prob is not None and session.threshold is not None else "")
            hit = mark_hit(case, answer)
            mark = answer.mark
            rows.append({
                "session": session.code, "reader": name, "case_id": case.case_id, "source_id": case.source_id,
                "body_part": case.body_part, "truth": case.label, "answer": int(answer.fractured),
                "confidence": answer.confidence, "reader_score": reader_score(answer.fractured, answer.confidence),
                "correct": int(int(answer.fractured) == case.label),
                "mark_image": "" if mark is None else mark.image,
                "mark_x": "" if mark is None else round(mark.x, 4), "mark_y": "" if mark is None else round(mark.y, 4),
                "mark_hit": "" if hit is None else int(hit),
                "model_probability": "" if case.model_prob is None else round(case.model_prob, 6),
                "model_answer": model_answer, "model_hit": "" if case.model_hit is None else int(case.model_hit),
                "answered_at": answer.answered_at,
            })
    return [{key: spreadsheet_safe(value) for key, value in row.items()} for row in rows]


def export_csv_bytes(session: Session, root: str | Path | None = None, readers: ReaderSet | None = None) -> bytes:
    """One row per (reader, answered case), for a spreadsheet; every text cell through :func:`spreadsheet_safe`."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    writer.writeheader()
    writer.writerows(export_rows(session, root, readers))
    return buffer.getvalue().encode("utf-8")


def export_csv(session: Session, out: str | Path, root: str | Path | None = None, *, overwrite: bool = False) -> Path:
    """Write :func:`export_csv_bytes` atomically; refuses to replace a file unless ``overwrite``."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise ReaderStudyError(f"{out} exists; choose another file or pass --overwrite")
    atomic_write_text(out, export_csv_bytes(session, root).decode("utf-8"))
    return out
