"""What a reader sees at the end, what the instructor sees for the class, and the CSV export."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from fracture.util.files import atomic_write_text
from fracture.reader_study.metrics import fleiss_kappa, reader_metrics, reader_score
from fracture.reader_study.session import Answer, ReaderStudyError, Session, load_answers

CSV_COLUMNS = ("session", "reader", "case_id", "source_id", "body_part", "truth", "answer", "confidence",
               "reader_score", "correct", "model_probability", "model_answer", "answered_at")


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
    """One reader's figures on the cases they answered, their misses, and the model on the same cases."""
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
            "model": model_metrics(session)}


def session_summary(session: Session, root: str | Path | None = None) -> dict[str, Any]:
    """Every reader's row, Fleiss' kappa over the cases all readers answered, and the model's curve."""
    everyone = load_answers(session.code, root)
    rows = []
    for name, answers in sorted(everyone.items()):
        summary = reader_summary(session, answers)
        rows.append({"reader": name, "answered": summary["answered"], **summary["metrics"]})
    common = [c.case_id for c in session.cases if everyone and all(c.case_id in a for a in everyone.values())]
    ratings = np.array([[int(a[cid].fractured) for a in everyone.values()] for cid in common]) if common else np.zeros((0, 0))
    return {
        "code": session.code, "cases": len(session.cases), "readers": rows,
        "fleiss_kappa": fleiss_kappa(ratings) if len(everyone) >= 2 and common else None,
        "fleiss_cases": len(common), "model": model_metrics(session),
    }


def export_rows(session: Session, root: str | Path | None = None) -> list[dict[str, Any]]:
    rows = []
    for name, answers in sorted(load_answers(session.code, root).items()):
        for case in session.cases:
            answer = answers.get(case.case_id)
            if answer is None:
                continue
            model_answer = (int(case.model_prob >= session.threshold)
                            if case.model_prob is not None and session.threshold is not None else "")
            rows.append({
                "session": session.code, "reader": name, "case_id": case.case_id, "source_id": case.source_id,
                "body_part": case.body_part, "truth": case.label, "answer": int(answer.fractured),
                "confidence": answer.confidence, "reader_score": reader_score(answer.fractured, answer.confidence),
                "correct": int(int(answer.fractured) == case.label),
                "model_probability": "" if case.model_prob is None else round(case.model_prob, 6),
                "model_answer": model_answer, "answered_at": answer.answered_at,
            })
    return rows


def export_csv_bytes(session: Session, root: str | Path | None = None) -> bytes:
    """One row per (reader, answered case), for a spreadsheet."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(export_rows(session, root))
    return buffer.getvalue().encode("utf-8")


def export_csv(session: Session, out: str | Path, root: str | Path | None = None, *, overwrite: bool = False) -> Path:
    """Write :func:`export_csv_bytes` atomically; refuses to replace a file unless ``overwrite``."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise ReaderStudyError(f"{out} exists; choose another file or pass --overwrite")
    atomic_write_text(out, export_csv_bytes(session, root).decode("utf-8"))
    return out
