"""Reader-study sessions: the case set, and each reader's answers in a file of their own.

Layout under ``$FRACTURE_HOME/reader_studies/<CODE>/``::

    session.json            the case set, the model's probabilities, how it was built
    readers/<slug>.json     one reader's answers (written atomically, under a lock)

One file per reader means several readers can answer at once without
touching each other's files, and a reload or a second browser loses nothing:
every answer is on disk the moment it is given.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import re
import secrets
import time
import unicodedata
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fracture.util.files import atomic_write_json, read_bytes_bounded
from fracture.errors import FractureError

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read aloud in a classroom
CODE_LENGTH = 6
CODE_RE = re.compile(rf"^[{CODE_ALPHABET}]{{{CODE_LENGTH}}}$")
MAX_CASES = 200
MAX_READER_NAME = 40
MAX_FILE_BYTES = 8 * 1024 * 1024
PREVALENCES = ("balanced", "natural")
SOURCES = ("gallery", "dataset")


class ReaderStudyError(FractureError):
    """A bad session code, reader name, answer or case-set request."""


@dataclass(frozen=True)
class Case:
    """One case a reader sees: a study's image(s) with the truth and the model's opinion."""

    case_id: str
    paths: tuple[str, ...]
    label: int
    body_part: str
    boxes: tuple[tuple[tuple[float, float, float, float], ...], ...]
    model_prob: float | None
    source_id: str


@dataclass
class Session:
    code: str
    created_at: str
    source: str
    source_detail: str
    split: str
    seed: int
    prevalence: str
    body_part: str | None
    checkpoint: str | None
    threshold: float | None
    class_names: tuple[str, str]
    cases: list[Case] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["format_version"] = FORMAT_VERSION
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> "Session":
        try:
            cases = [
                Case(
                    case_id=str(c["case_id"]), paths=tuple(str(p) for p in c["paths"]), label=int(c["label"]),
                    body_part=str(c["body_part"]),
                    boxes=tuple(tuple(tuple(float(v) for v in box) for box in image) for image in c["boxes"]),
                    model_prob=None if c["model_prob"] is None else float(c["model_prob"]),
                    source_id=str(c["source_id"]),
                )
                for c in data["cases"]
            ]
            return cls(
                code=str(data["code"]), created_at=str(data["created_at"]), source=str(data["source"]),
                source_detail=str(data["source_detail"]), split=str(data["split"]), seed=int(data["seed"]),
                prevalence=str(data["prevalence"]), body_part=data["body_part"], checkpoint=data["checkpoint"],
                threshold=None if data["threshold"] is None else float(data["threshold"]),
                class_names=tuple(data["class_names"]), cases=cases,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ReaderStudyError(f"{where}: not a reader-study session ({type(exc).__name__}: {exc})") from None

    def case(self, case_id: str) -> Case:
        for case in self.cases:
            if case.case_id == case_id:
                return case
        raise ReaderStudyError(f"session {self.code}: no case {case_id!r}")


@dataclass(frozen=True)
class Answer:
    """A reader's call on one case: fractured or not, and how sure (0-100)."""

    case_id: str
    fractured: bool
    confidence: int
    answered_at: str


# --------------------------------------------------------------------------
# Paths and names.


def sessions_root(root: str | Path | None = None) -> Path:
    if root is not None:
        return Path(root)
    from fracture.settings import get_settings

    return get_settings().home / "reader_studies"


def check_code(code: str) -> str:
    code = str(code).strip().upper()
    if not CODE_RE.match(code):
        raise ReaderStudyError(
            f"{code!r} is not a session code: {CODE_LENGTH} characters from {CODE_ALPHABET} (e.g. 'K7QXM2')"
        )
    return code


def check_reader_name(name: str) -> str:
    """A display name: 1-40 printable characters, surrounding blanks removed."""
    name = unicodedata.normalize("NFC", str(name)).strip()
    if not name:
        raise ReaderStudyError("enter a reader name (any name or pseudonym, up to 40 characters)")
    if len(name) > MAX_READER_NAME:
        raise ReaderStudyError(f"reader name is {len(name)} characters; use at most {MAX_READER_NAME}")
    if any(unicodedata.category(ch).startswith("C") for ch in name):
        raise ReaderStudyError("reader name contains control characters; use letters, digits and spaces")
    return name


def _reader_file(session_dir: Path, name: str) -> Path:
    """A file name that no reader name can steer outside the folder (slug + digest)."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:24] or "reader"
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:10]
    return session_dir / "readers" / f"{slug}-{digest}.json"


def _session_dir(code: str, root: str | Path | None) -> Path:
    return sessions_root(root) / check_code(code)


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(read_bytes_bounded(path, MAX_FILE_BYTES).decode("utf-8"))
    except FileNotFoundError:
        raise ReaderStudyError(f"{path}: no such {what}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, FractureError) as exc:
        raise ReaderStudyError(f"{path}: unreadable {what} ({exc})") from None


# --------------------------------------------------------------------------
# Building a case set.


def _candidates(source: str, data_root: str | None, split: str) -> tuple[list[dict], str, tuple[str, str]]:
    """Every study available as a case: ``{id, paths, label, body_part, boxes}``."""
    if source == "gallery":
        from fracture.data.gallery import CLASS_NAMES, load_gallery

        items = load_gallery()
        rows = [
            {"id": item.key, "paths": [str(item.path)], "label": item.label, "body_part": item.body_part,
             "boxes": [list(item.boxes)], "source_id": item.source_id}
            for item in items
        ]
        return rows, "built-in gallery (FracAtlas test split)", tuple(CLASS_NAMES)
    if source != "dataset":
        raise ReaderStudyError(f"source {source!r}: use one of {', '.join(SOURCES)}")
    if not data_root:
        raise ReaderStudyError("source 'dataset' needs a dataset folder (--data DIR)")
    from fracture.data import open_dataset

    manifest = open_dataset(data_root)
    frame = manifest.subset(split)
    rows = []
    for study_id, group in frame.groupby("study_id", sort=True):
        rows.append({
            "id": str(study_id), "paths": group["path"].tolist(), "label": int(group["label"].max()),
            "body_part": str(group["body_part"].iloc[0]),
            "boxes": [list(b) for b in group["boxes"]] if "boxes" in group else [[] for _ in range(len(group))],
            "source_id": str(study_id),
        })
    return rows, f"{manifest.layout} at {manifest.root}, {split} split", tuple(manifest.class_names)


def _sample(rows: list[dict], n: int, prevalence: str, rng: np.random.Generator) -> list[dict]:
    if prevalence == "natural":
        picked = rng.choice(len(rows), size=min(n, len(rows)), replace=False)
        return [rows[i] for i in sorted(picked)]
    positives = [r for r in rows if r["label"] == 1]
    negatives = [r for r in rows if r["label"] == 0]
    n_pos = min(len(positives), n // 2 + n % 2)
    n_neg = min(len(negatives), n - n_pos)
    n_pos = min(len(positives), n - n_neg)  # top up from positives when negatives run short
    chosen = [positives[i] for i in rng.choice(len(positives), n_pos, replace=False)] + \
             [negatives[i] for i in rng.choice(len(negatives), n_neg, replace=False)]
    order = rng.permutation(len(chosen))
    return [chosen[i] for i in order]


def create_session(
    *,
    source: str = "gallery",
    data_root: str | None = None,
    split: str = "test",
    n_cases: int = 10,
    seed: int = 0,
    prevalence: str = "balanced",
    body_part: str | None = None,
    checkpoint: str | Path | None = None,
    root: str | Path | None = None,
) -> Session:
    """Build a case set, score it with the model once, and save it under a new code.

    Raises:
        ReaderStudyError: a bad option, or too few cases for the request.
        FractureError: the dataset or checkpoint cannot be read.
    """
    if prevalence not in PREVALENCES:
        raise ReaderStudyError(f"prevalence {prevalence!r}: use one of {', '.join(PREVALENCES)}")
    if not 1 <= int(n_cases) <= MAX_CASES:
        raise ReaderStudyError(f"n_cases={n_cases}: use 1 to {MAX_CASES}")
    rows, detail, class_names = _candidates(source, data_root, split)
    if body_part:
        rows = [r for r in rows if r["body_part"] == body_part]
    if not rows:
        raise ReaderStudyError(f"no cases in {detail}" + (f" for body part {body_part!r}" if body_part else ""))
    rng = np.random.default_rng(int(seed))
    chosen = _sample(rows, int(n_cases), prevalence, rng)
    threshold = None
    probs: list[float | None] = [None] * len(chosen)
    if checkpoint is not None:
        from fracture.data.imageio import load_image
        from fracture.serve.predictor import Predictor

        predictor = Predictor.from_checkpoint(checkpoint)
        threshold = float(predictor.threshold)
        for i, row in enumerate(chosen):
            images = [load_image(p) for p in row["paths"]]
            result = predictor.predict(images, names=[Path(p).name for p in row["paths"]], with_cam=False)
            probs[i] = float(result.study_prob)
    cases = [
        Case(
            case_id=f"case{i + 1:03d}", paths=tuple(row["paths"]), label=int(row["label"]), body_part=row["body_part"],
            boxes=tuple(tuple(tuple(float(v) for v in box) for box in image) for image in row["boxes"]),
            model_prob=prob, source_id=row["source_id"],
        )
        for i, (row, prob) in enumerate(zip(chosen, probs))
    ]
    base = sessions_root(root)
    base.mkdir(parents=True, exist_ok=True)
    for _ in range(20):
        code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
        folder = base / code
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        break
    else:  # pragma: no cover - 32^6 codes
        raise ReaderStudyError(f"{base}: could not find a free session code")
    (folder / "readers").mkdir()
    session = Session(
        code=code, created_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"), source=source, source_detail=detail,
        split=split if source == "dataset" else "test", seed=int(seed), prevalence=prevalence, body_part=body_part,
        checkpoint=str(checkpoint) if checkpoint is not None else None, threshold=threshold,
        class_names=class_names, cases=cases,
    )
    atomic_write_json(folder / "session.json", session.to_dict())
    logger.info("reader study %s: %d cases from %s", code, len(cases), detail)
    return session


def load_session(code: str, root: str | Path | None = None) -> Session:
    folder = _session_dir(code, root)
    path = folder / "session.json"
    data = _read_json(path, "reader-study session (check the code)")
    if not isinstance(data, dict):
        raise ReaderStudyError(f"{path}: not a reader-study session")
    return Session.from_dict(data, str(path))


def list_sessions(root: str | Path | None = None) -> list[str]:
    base = sessions_root(root)
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if CODE_RE.match(p.name) and (p / "session.json").is_file())


# --------------------------------------------------------------------------
# Answers.


@contextmanager
def _locked(path: Path):
    """An exclusive lock per reader file: the same reader in two browsers cannot lose an answer."""
    lock_path = path.with_suffix(".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _read_reader(path: Path, name: str) -> dict[str, Any]:
    if not path.exists():
        return {"reader": name, "answers": {}}
    data = _read_json(path, "reader file")
    if not isinstance(data, dict) or not isinstance(data.get("answers"), dict):
        raise ReaderStudyError(f"{path}: not a reader file")
    return data


def save_answer(
    code: str, reader: str, case_id: str, *, fractured: bool, confidence: int, root: str | Path | None = None,
) -> Answer:
    """Record one answer (a second answer to the same case replaces the first, as a re-read).

    Raises:
        ReaderStudyError: bad code, reader name, case or confidence.
    """
    session = load_session(code, root)
    session.case(case_id)
    name = check_reader_name(reader)
    if isinstance(confidence, bool) or not isinstance(confidence, (int, np.integer)) or not 0 <= int(confidence) <= 100:
        raise ReaderStudyError(f"confidence={confidence!r}: use a whole number from 0 to 100")
    answer = Answer(case_id=case_id, fractured=bool(fractured), confidence=int(confidence),
                    answered_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    path = _reader_file(_session_dir(session.code, root), name)
    with _locked(path):
        data = _read_reader(path, name)
        data["reader"] = name
        data["answers"][case_id] = asdict(answer)
        atomic_write_json(path, data)
    return answer


def load_answers(code: str, root: str | Path | None = None) -> dict[str, dict[str, Answer]]:
    """``{reader name: {case_id: Answer}}`` for every reader of a session (unreadable files are skipped
    with a warning naming them, so one broken file cannot hide the class's answers)."""
    folder = _session_dir(code, root) / "readers"
    out: dict[str, dict[str, Answer]] = {}
    if not folder.is_dir():
        return out
    for path in sorted(folder.glob("*.json")):
        try:
            data = _read_json(path, "reader file")
            name = check_reader_name(data["reader"])
            answers = {
                cid: Answer(case_id=str(a["case_id"]), fractured=bool(a["fractured"]),
                            confidence=int(a["confidence"]), answered_at=str(a["answered_at"]))
                for cid, a in data["answers"].items()
            }
        except (ReaderStudyError, KeyError, TypeError, ValueError, AttributeError) as exc:
            logger.warning("reader study %s: skipping %s (%s)", code, path, exc)
            continue
        out[name] = answers
    return out


def reader_answers(code: str, reader: str, root: str | Path | None = None) -> dict[str, Answer]:
    return load_answers(code, root).get(check_reader_name(reader), {})
