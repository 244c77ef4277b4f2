"""Reader-study sessions: the case set, and each reader's answers in a file of their own.

Layout under ``$FRACTURE_HOME/reader_studies/<CODE>/``::

    session.json            the case set, the model's probabilities and hits, the instructor PIN's hash
    readers/<slug>.json     one reader's order of cases and answers (written atomically, under a lock)
    heatmaps/<case>-<i>.png the model's heatmap of each case image, made with the session (8-bit), so
                            the reveal after an answer never waits for the model

One file per reader means several readers can answer at once without
touching each other's files, and a reload or a second browser loses nothing:
every answer is on disk the moment it is given. Reader names are matched
without regard to case ("Carol" and "carol" are one reader); each reader
file holds a random token that the reader's browser keeps (in the page's
URL), so a second student typing a name already taken is asked to confirm
instead of silently sharing the file.

Files are read through the guarded JSON reader (size, depth, number length,
no NaN/inf) and validated field by field: a damaged reader file is listed as
a problem for the instructor, an answer to an unknown case is ignored with a
note, and nothing in a reader file can crash a page.
"""
from __future__ import annotations

import hashlib
import hmac
import io
import logging
import math
import re
import secrets
import time
import unicodedata
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fracture.errors import FractureError
from fracture.util.files import exclusive_lock
from fracture.util.jsonio import atomic_write_json
from fracture.util.jsonio import read_json

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2
CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read aloud in a classroom
CODE_LENGTH = 6
CODE_RE = re.compile(rf"^[{CODE_ALPHABET}]{{{CODE_LENGTH}}}$")
MAX_CASES = 200
MAX_READER_NAME = 40
MAX_FILE_BYTES = 8 * 1024 * 1024
PIN_MIN, PIN_MAX = 4, 32
PREVALENCES = ("balanced", "natural")
SOURCES = ("gallery", "dataset")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
HEATMAP_MAX_SIDE = 512


class ReaderStudyError(FractureError):
    """A bad session code, reader name, answer, PIN or case-set request."""


class WrongPinError(ReaderStudyError):
    """The instructor PIN given does not match the session's (counted by :mod:`.pin_lock`)."""


class ReaderNameTaken(ReaderStudyError):
    """Another browser already reads under this name; the page asks 'is that you?' before joining it."""


@dataclass(frozen=True)
class Case:
    """One case a reader sees: a study's image(s) with the truth and the model's opinion.

    ``sizes`` holds each image's (height, width), so a reader's mark can be
    scored without decoding the image; ``model_hit`` is the pointing game of
    the model's heatmap on the first image with a box (None: no box or no model).
    """

    case_id: str
    paths: tuple[str, ...]
    label: int
    body_part: str
    boxes: tuple[tuple[tuple[float, float, float, float], ...], ...]
    model_prob: float | None
    source_id: str
    sizes: tuple[tuple[int, int], ...] = ()
    model_hit: bool | None = None

    @property
    def has_box(self) -> bool:
        return bool(self.label == 1 and any(self.boxes))


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
    pin: dict[str, str] | None = None

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
                    sizes=tuple((int(h), int(w)) for h, w in c.get("sizes") or ()),
                    model_hit=None if c.get("model_hit") is None else bool(c["model_hit"]),
                )
                for c in data["cases"]
            ]
            pin = data.get("pin")
            if pin is not None and not (isinstance(pin, dict) and all(isinstance(pin.get(k), str) for k in ("salt", "hash"))):
                raise ValueError("'pin' is not {salt, hash}")
            session = cls(
                code=str(data["code"]), created_at=str(data["created_at"]), source=str(data["source"]),
                source_detail=str(data["source_detail"]), split=str(data["split"]), seed=int(data["seed"]),
                prevalence=str(data["prevalence"]), body_part=data["body_part"], checkpoint=data["checkpoint"],
                threshold=None if data["threshold"] is None else float(data["threshold"]),
                class_names=tuple(str(n) for n in data["class_names"]), cases=cases, pin=pin,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ReaderStudyError(f"{where}: not a reader-study session ({type(exc).__name__}: {exc})") from None
        if len(session.class_names) != 2 or not session.cases or len({c.case_id for c in cases}) != len(cases):
            raise ReaderStudyError(f"{where}: not a reader-study session (needs 2 class names and unique cases)")
        if any(c.label not in (0, 1) for c in cases):
            raise ReaderStudyError(f"{where}: not a reader-study session (a case label is not 0/1)")
        return session

    def case(self, case_id: str) -> Case:
        for case in self.cases:
            if case.case_id == case_id:
                return case
        raise ReaderStudyError(f"session {self.code}: no case {case_id!r}")

    @property
    def case_ids(self) -> list[str]:
        return [c.case_id for c in self.cases]


@dataclass(frozen=True)
class Mark:
    """Where a reader thinks the fracture is: image ``image`` of the case, at ``(x, y)`` in [0, 1]
    of that image's width and height."""

    image: int
    x: float
    y: float


@dataclass(frozen=True)
class Answer:
    """A reader's call on one case: fractured or not, how sure (0-100), and optionally where."""

    case_id: str
    fractured: bool
    confidence: int
    answered_at: str
    mark: Mark | None = None


@dataclass
class Reader:
    """One reader of a session as read back from their file."""

    name: str
    token: str
    order: list[str]
    answers: dict[str, Answer]
    file: str

    def finished(self, session: Session) -> bool:
        return all(cid in self.answers for cid in session.case_ids)


@dataclass
class ReaderSet:
    """Every reader of a session, plus what could not be used: ``problems`` are damaged files
    (nothing of them used), ``notes`` are answers left out of otherwise good files."""

    readers: dict[str, Reader]
    problems: list[str]
    notes: list[str]

    def answers(self) -> dict[str, dict[str, Answer]]:
        return {name: reader.answers for name, reader in self.readers.items()}


# --------------------------------------------------------------------------
# Paths, names, PINs.


def sessions_root(root: str | Path | None = None) -> Path:
    if root is not None:
        return Path(root)
    from fracture.settings import get_settings

    return get_settings().home / "reader_studies"


def check_code(code: str) -> str:
    code = str(code).strip().upper()
    if not CODE_RE.match(code):
        raise ReaderStudyError(
            f"{code[:20]!r} is not a session code: {CODE_LENGTH} characters from {CODE_ALPHABET} (e.g. 'K7QXM2')"
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


def reader_key(name: str) -> str:
    """What identifies a reader: the name without regard to case ('Carol' == 'carol' == 'CAROL')."""
    return check_reader_name(name).casefold()


def _reader_file(session_dir: Path, name: str) -> Path:
    """A file name that no reader name can steer outside the folder (slug + digest of the case-folded name)."""
    key = reader_key(name)
    slug = re.sub(r"[^a-z0-9]+", "-", key).strip("-")[:24] or "reader"
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:10]
    return session_dir / "readers" / f"{slug}-{digest}.json"


def _session_dir(code: str, root: str | Path | None) -> Path:
    return sessions_root(root) / check_code(code)


def check_pin_text(pin: str) -> str:
    pin = str(pin or "").strip()
    if not PIN_MIN <= len(pin) <= PIN_MAX:
        raise ReaderStudyError(f"choose an instructor PIN of {PIN_MIN} to {PIN_MAX} characters (digits are fine)")
    return pin


def _hash_pin(pin: str, salt: bytes) -> str:
    return hashlib.scrypt(pin.encode("utf-8"), salt=salt, dklen=32, **_SCRYPT).hex()


def pin_record(pin: str) -> dict[str, str]:
    """The salted scrypt hash kept in ``session.json`` (the PIN itself is never stored)."""
    salt = secrets.token_bytes(16)
    return {"method": "scrypt", "salt": salt.hex(), "hash": _hash_pin(check_pin_text(pin), salt)}


def check_pin(session: Session, pin: str) -> None:
    """Raise unless ``pin`` opens this session's instructor view (the truth, the dashboard, the CSV).

    Raises:
        WrongPinError: a wrong PIN.
        ReaderStudyError: no PIN given, or a session made without one.
    """
    if session.pin is None:
        raise ReaderStudyError(f"session {session.code} has no instructor PIN (made by an older version): "
                               "create a new session")
    given = str(pin or "").strip()
    if not given:
        raise ReaderStudyError(f"enter the instructor PIN of session {session.code}")
    try:
        expected = bytes.fromhex(session.pin["hash"])
        actual = bytes.fromhex(_hash_pin(given, bytes.fromhex(session.pin["salt"])))
    except ValueError:
        raise ReaderStudyError(f"session {session.code}: its PIN record is damaged; create a new session") from None
    if not hmac.compare_digest(expected, actual):
        raise WrongPinError(f"wrong PIN for session {session.code}")


def _read_json(path: Path, what: str) -> Any:
    """The guarded reader (size, depth, number length, no NaN/inf); errors name the file for the log."""
    return read_json(path, max_bytes=MAX_FILE_BYTES, error=ReaderStudyError, what=what)


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
    return rows, f"{manifest.layout}, {split} split", tuple(manifest.class_names)


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


def _image_sizes(paths: list[str]) -> tuple[tuple[int, int], ...]:
    from fracture.data.imageio import read_image_header

    sizes = []
    for path in paths:
        header = read_image_header(path)
        sizes.append((int(header.height), int(header.width)))
    return tuple(sizes)


def _score_with_model(
    checkpoint: str | Path, chosen: list[dict],
) -> tuple[float, list[float], list[bool | None], list[list[np.ndarray | None]]]:
    """The model's study probability and heatmaps (its stored choice) per case, and its pointing game on
    each case's first boxed image (the same heatmap choice and hit rule as ``evaluate --localisation``)."""
    import pandas as pd

    from fracture.data.imageio import load_image
    from fracture.assess.localisation import score_frame
    from fracture.serve.predictor import Predictor

    predictor = Predictor.from_checkpoint(checkpoint)
    probs, heatmaps = [], []
    for row in chosen:
        images = [load_image(p) for p in row["paths"]]
        result = predictor.predict(images, names=[Path(p).name for p in row["paths"]],
                                   with_cam=predictor.model is not None)  # onnxruntime: no heatmaps
        probs.append(float(result.study_prob))
        heatmaps.append([item.heatmap for item in result.images])
    boxed = []
    for i, row in enumerate(chosen):
        image = next((j for j, boxes in enumerate(row["boxes"]) if boxes), None)
        if row["label"] == 1 and image is not None:
            boxed.append({"case": i, "path": row["paths"][image], "body_part": row["body_part"],
                          "boxes": tuple(tuple(float(v) for v in b) for b in row["boxes"][image])})
    hits: list[bool | None] = [None] * len(chosen)
    if boxed:
        frame = pd.DataFrame(boxed)
        scored = score_frame(predictor.scorer, frame, [predictor.cam_choice])[predictor.cam_choice]
        by_path = dict(zip(scored["path"], scored["hit"]))
        for item in boxed:
            if item["path"] in by_path:
                hits[item["case"]] = bool(by_path[item["path"]])
    return float(predictor.threshold), probs, hits, heatmaps


def _heatmap_file(folder: Path, case_id: str, index: int) -> Path:
    return folder / "heatmaps" / f"{case_id}-{index}.png"


def _save_heatmap(path: Path, heatmap: np.ndarray) -> None:
    """A heatmap in [0, 1] as an 8-bit PNG, its longer side at most :data:`HEATMAP_MAX_SIDE`
    (the reveal blends it resized onto the X-ray; 8 bits are finer than a colour map shows)."""
    import cv2
    from PIL import Image

    from fracture.util.files import atomic_write_bytes

    grey = np.round(np.clip(np.nan_to_num(np.asarray(heatmap, np.float32)), 0.0, 1.0) * 255).astype(np.uint8)
    scale = HEATMAP_MAX_SIDE / max(grey.shape)
    if scale < 1:
        size = (max(1, round(grey.shape[1] * scale)), max(1, round(grey.shape[0] * scale)))
        grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
    buffer = io.BytesIO()
    Image.fromarray(grey).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())


def case_heatmaps(session: Session, case: Case, root: str | Path | None = None) -> list[np.ndarray | None] | None:
    """The model's heatmaps of ``case`` as stored when the session was made (float32 in [0, 1],
    possibly smaller than the image), so a reveal never waits for the model.

    Returns:
        One map per image, or None when the session has none stored (made without a model, by an
        older version, or a file is missing or unreadable: logged; the caller may compute them).
    """
    from fracture.data.imageio import load_image

    folder = _session_dir(session.code, root)
    maps: list[np.ndarray | None] = []
    for index in range(len(case.paths)):
        path = _heatmap_file(folder, case.case_id, index)
        try:
            maps.append(load_image(path).astype(np.float32) / 255.0)
        except FileNotFoundError:
            return None
        except FractureError as exc:
            logger.warning("reader study %s: stored heatmap %s unreadable (%s)", session.code, path, exc)
            return None
    return maps


def create_session(
    *,
    pin: str,
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

    Args:
        pin: the instructor PIN (4-32 characters) that opens the dashboard, the truth and the CSV.

    Raises:
        ReaderStudyError: a bad option or PIN, or too few cases for the request.
        FractureError: the dataset or checkpoint cannot be read.
    """
    pin_hash = pin_record(pin)
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
    hits: list[bool | None] = [None] * len(chosen)
    heatmaps: list[list[np.ndarray | None]] = [[] for _ in chosen]
    if checkpoint is not None:
        threshold, probs, hits, heatmaps = _score_with_model(checkpoint, chosen)
    cases = [
        Case(
            case_id=f"case{i + 1:03d}", paths=tuple(row["paths"]), label=int(row["label"]), body_part=row["body_part"],
            boxes=tuple(tuple(tuple(float(v) for v in box) for box in image) for image in row["boxes"]),
            model_prob=prob, source_id=row["source_id"], sizes=_image_sizes(row["paths"]), model_hit=hit,
        )
        for i, (row, prob, hit) in enumerate(zip(chosen, probs, hits))
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
        raise ReaderStudyError("could not find a free session code; remove old sessions")
    (folder / "readers").mkdir()
    for case, maps in zip(cases, heatmaps):  # the reveal reads these: no model run while the class reads
        for index, heatmap in enumerate(maps):
            if heatmap is not None:
                _save_heatmap(_heatmap_file(folder, case.case_id, index), heatmap)
    session = Session(
        code=code, created_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"), source=source, source_detail=detail,
        split=split if source == "dataset" else "test", seed=int(seed), prevalence=prevalence, body_part=body_part,
        checkpoint=str(checkpoint) if checkpoint is not None else None, threshold=threshold,
        class_names=class_names, cases=cases, pin=pin_hash,
    )
    atomic_write_json(folder / "session.json", session.to_dict())
    logger.info("reader study %s: %d cases from %s", code, len(cases), detail)
    return session


def load_session(code: str, root: str | Path | None = None) -> Session:
    """The session saved under ``code``.

    Raises:
        ReaderStudyError: a bad or unknown code, or a damaged session file. The
        message names the code, never a server path (readers see it); the log
        has the file.
    """
    code = check_code(code)
    path = _session_dir(code, root) / "session.json"
    try:
        data = _read_json(path, "reader-study session")
    except FileNotFoundError:
        raise ReaderStudyError(f"no session with code {code}: check the code with your instructor") from None
    except ReaderStudyError as exc:
        logger.warning("reader study %s: %s", code, exc)
        raise ReaderStudyError(f"session {code} cannot be read (its file is damaged); ask your instructor") from None
    if not isinstance(data, dict):
        logger.warning("reader study %s: %s is not a JSON object", code, path)
        raise ReaderStudyError(f"session {code} cannot be read (its file is damaged); ask your instructor")
    try:
        return Session.from_dict(data, f"session {code}")
    except ReaderStudyError as exc:
        logger.warning("reader study %s: %s (%s)", code, exc, path)
        raise


def list_sessions(root: str | Path | None = None) -> list[str]:
    base = sessions_root(root)
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if CODE_RE.match(p.name) and (p / "session.json").is_file())


# --------------------------------------------------------------------------
# Readers and answers.


def reader_order(session: Session, name: str) -> list[str]:
    """This reader's order of the cases: a permutation seeded by the session's seed and the reader's
    case-folded name, so a reload (or another browser) gives the same order and two readers differ."""
    digest = int(hashlib.sha256(reader_key(name).encode("utf-8")).hexdigest()[:12], 16)
    rng = np.random.default_rng([int(session.seed) & 0xFFFFFFFF, digest])
    ids = session.case_ids
    return [ids[i] for i in rng.permutation(len(ids))]


@contextmanager
def _locked(path: Path):
    """An exclusive lock per reader file: the same reader in two browsers cannot lose an answer."""
    with exclusive_lock(path.with_suffix(".lock")):
        yield


def _parse_mark(value: Any, where: str) -> Mark | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"{where}: 'mark' is not an object")
    image, x, y = value.get("image"), value.get("x"), value.get("y")
    if isinstance(image, bool) or not isinstance(image, int) or image < 0:
        raise ValueError(f"{where}: mark 'image' is not a whole number >= 0")
    for v in (x, y):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0.0 <= v <= 1.0:
            raise ValueError(f"{where}: mark x/y must be numbers from 0 to 1")
    return Mark(image=int(image), x=float(x), y=float(y))


def _parse_answer(case_id: str, value: Any, where: str) -> Answer:
    """One answer from a reader file, every field checked (``fractured`` a JSON boolean, not "no")."""
    if not isinstance(value, dict):
        raise ValueError(f"{where}: answer is not an object")
    fractured, confidence = value.get("fractured"), value.get("confidence")
    if not isinstance(fractured, bool):
        raise ValueError(f"{where}: 'fractured' is {type(fractured).__name__}, not true/false")
    if isinstance(confidence, bool) or not isinstance(confidence, int) or not 0 <= confidence <= 100:
        raise ValueError(f"{where}: 'confidence' must be a whole number from 0 to 100")
    return Answer(case_id=case_id, fractured=fractured, confidence=int(confidence),
                  answered_at=str(value.get("answered_at", ""))[:40], mark=_parse_mark(value.get("mark"), where))


def _parse_reader(session: Session, data: Any, file: str) -> tuple[Reader, list[str]]:
    """A reader file -> (:class:`Reader`, notes on left-out answers). Raises ValueError when damaged."""
    if not isinstance(data, dict) or not isinstance(data.get("answers"), dict):
        raise ValueError("not a reader file (needs 'reader' and 'answers')")
    try:
        name = check_reader_name(data.get("reader") if isinstance(data.get("reader"), str) else "")
    except ReaderStudyError as exc:
        raise ValueError(f"bad reader name ({exc})") from None
    known = set(session.case_ids)
    answers: dict[str, Answer] = {}
    notes: list[str] = []
    for case_id, value in data["answers"].items():
        if case_id not in known:
            notes.append(f"{file}: an answer to {str(case_id)[:20]!r}, not a case of this session, was ignored")
            continue
        try:
            answers[case_id] = _parse_answer(case_id, value, f"{file} {case_id}")
        except ValueError as exc:
            notes.append(f"{exc}; that answer was ignored")
    order = data.get("order")
    if not (isinstance(order, list) and sorted(map(str, order)) == sorted(known)):
        order = reader_order(session, name)
    token = data.get("token") if isinstance(data.get("token"), str) else ""
    return Reader(name=name, token=token, order=[str(c) for c in order], answers=answers, file=file), notes


def load_readers(session: Session, root: str | Path | None = None) -> ReaderSet:
    """Every reader of ``session``; damaged files go to ``problems`` (by file name, within the
    session folder), left-out answers to ``notes``. Never raises for a reader file."""
    folder = _session_dir(session.code, root) / "readers"
    readers: dict[str, Reader] = {}
    problems: list[str] = []
    notes: list[str] = []
    if not folder.is_dir():
        return ReaderSet(readers, problems, notes)
    for path in sorted(folder.glob("*.json")):
        file = f"readers/{path.name}"
        try:
            reader, file_notes = _parse_reader(session, _read_json(path, "reader file"), file)
        except (ReaderStudyError, FileNotFoundError, ValueError) as exc:
            reason = str(exc).replace(str(path), file)
            logger.warning("reader study %s: skipping %s (%s)", session.code, path, reason)
            problems.append(f"{file}: {reason}" if not reason.startswith(file) else reason)
            continue
        notes.extend(file_notes)
        key = reader.name.casefold()
        clash = next((n for n in readers if n.casefold() == key), None)
        if clash is not None:
            problems.append(f"{file}: a second file for reader {reader.name!r}; not used")
            continue
        readers[reader.name] = reader
    return ReaderSet(readers, problems, notes)


def load_answers(code: str, root: str | Path | None = None) -> dict[str, dict[str, Answer]]:
    """``{reader name: {case_id: Answer}}`` for every readable reader of a session."""
    return load_readers(load_session(code, root), root).answers()


def find_reader(session: Session, name: str, root: str | Path | None = None) -> Reader | None:
    """The reader called ``name`` (any case), or None if nobody uses that name yet.

    Raises:
        ReaderStudyError: a bad name, or that reader's file is damaged (the reader is told to pick another name).
    """
    path = _reader_file(_session_dir(session.code, root), name)
    try:
        data = _read_json(path, "reader file")
    except FileNotFoundError:
        return None
    except ReaderStudyError as exc:
        logger.warning("reader study %s: %s", session.code, exc)
        raise ReaderStudyError(f"the answers saved under {check_reader_name(name)!r} cannot be read; "
                               "use another name and tell your instructor") from None
    try:
        reader, _ = _parse_reader(session, data, f"readers/{path.name}")
    except ValueError as exc:
        logger.warning("reader study %s: %s: %s", session.code, path, exc)
        raise ReaderStudyError(f"the answers saved under {check_reader_name(name)!r} cannot be read; "
                               "use another name and tell your instructor") from None
    return reader


def claim_reader(session: Session, name: str, *, join: bool = False, root: str | Path | None = None) -> Reader:
    """Start reading as ``name``: a new reader gets a file with a fresh token and their case order.

    Args:
        join: when the name is already in use, join it (the person confirmed "that's me") and get its token.

    Raises:
        ReaderNameTaken: the name is in use and ``join`` is False.
        ReaderStudyError: a bad name or a damaged file under that name.
    """
    name = check_reader_name(name)
    path = _reader_file(_session_dir(session.code, root), name)
    with _locked(path):
        existing = find_reader(session, name, root)
        if existing is not None:
            if not join:
                raise ReaderNameTaken(f"the name {existing.name!r} is already taken in session {session.code} "
                                      f"({len(existing.answers)} answers)")
            if not existing.token:  # a file from before tokens: give it one
                existing.token = secrets.token_hex(8)
                _write_reader(path, existing)
            return existing
        reader = Reader(name=name, token=secrets.token_hex(8), order=reader_order(session, name), answers={},
                        file=f"readers/{path.name}")
        _write_reader(path, reader)
        logger.info("reader study %s: reader %r joined", session.code, name)
        return reader


def _write_reader(path: Path, reader: Reader) -> None:
    atomic_write_json(path, {
        "format_version": FORMAT_VERSION, "reader": reader.name, "token": reader.token, "order": reader.order,
        "answers": {cid: asdict(a) for cid, a in reader.answers.items()},
    })


def save_answer(
    code: str, reader: str, case_id: str, *, fractured: bool, confidence: int, mark: Mark | None = None,
    token: str | None = None, root: str | Path | None = None,
) -> Answer:
    """Record one answer (a second answer to the same case replaces the first, as a re-read).

    Args:
        mark: where the reader clicked (optional).
        token: the reader's token from :func:`claim_reader`; when given it must match the file's
            (the page always passes it; trusted core callers may leave it out).

    Raises:
        ReaderNameTaken: ``token`` does not match: someone else reads under this name.
        ReaderStudyError: bad code, reader name, case, confidence or mark.
    """
    session = load_session(code, root)
    session.case(case_id)
    name = check_reader_name(reader)
    if not isinstance(fractured, (bool, np.bool_)):
        raise ReaderStudyError(f"fractured={fractured!r}: use True or False")
    if isinstance(confidence, bool) or not isinstance(confidence, (int, np.integer)) or not 0 <= int(confidence) <= 100:
        raise ReaderStudyError(f"confidence={confidence!r}: use a whole number from 0 to 100")
    if mark is not None:
        try:
            mark = _parse_mark(asdict(mark), "mark")
        except ValueError as exc:
            raise ReaderStudyError(str(exc)) from None
        if mark.image >= len(session.case(case_id).paths):
            raise ReaderStudyError(f"mark on image {mark.image}: case {case_id} has {len(session.case(case_id).paths)}")
    answer = Answer(case_id=case_id, fractured=bool(fractured), confidence=int(confidence),
                    answered_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"), mark=mark)
    path = _reader_file(_session_dir(session.code, root), name)
    with _locked(path):
        existing = find_reader(session, name, root)
        if existing is None:
            existing = Reader(name=name, token=token or secrets.token_hex(8), order=reader_order(session, name),
                              answers={}, file=f"readers/{path.name}")
        elif token is not None and existing.token and not hmac.compare_digest(existing.token, token):
            raise ReaderNameTaken(f"the name {existing.name!r} is used by another reader in session {session.code}")
        existing.answers[case_id] = answer
        _write_reader(path, existing)
    return answer


def reader_answers(code: str, reader: str, root: str | Path | None = None) -> dict[str, Answer]:
    found = find_reader(load_session(code, root), reader, root)
    return found.answers if found is not None else {}
