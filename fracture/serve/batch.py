"""A folder (or a pile of uploads) of X-rays through a model: a CSV and a shareable HTML report.

Why: researchers and teachers run a model over whole folders, and nothing
else turns that into a table or a page a person can send. Every file gets a
row: an unreadable one has its ``error`` filled in, never dropped. The
probabilities, labels and out-of-distribution flags come from the one scorer
(:class:`fracture.serve.scorer.Scorer`): onnxruntime on a CPU unless ``backend``
says otherwise; Grad-CAM heatmaps need torch, which is used when they are asked for.

``predictions.csv`` columns: :data:`CSV_COLUMNS` (``study`` added with
study grouping). ``report.html`` is one self-contained file: summary counts, a
table sortable by clicking its headers (plain inline JavaScript), thumbnails
and heatmaps as inline base64 images; nothing is fetched from anywhere.
"""
from __future__ import annotations

import base64
import html
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, Union

import numpy as np

from fracture.util.csvsafe import csv_bytes
from fracture.util.files import atomic_write_bytes
from fracture.data.imageio import IMAGE_EXTENSIONS
from fracture.errors import ConfigError, FractureError, ImageLoadError
from fracture.serve.onnx_backend import InferenceCancelled, InferenceProgress

log = logging.getLogger(__name__)

CSV_COLUMNS = ("path", "probability", "label", "threshold", "ood", "not_radiograph", "error")
STUDY_COLUMNS = ("study", "images", "predicted", "probability", "label", "threshold")
REPORT_FILES = ("predictions.csv", "report.html")
STUDIES_FILE = "studies.csv"
THUMBNAIL_SIDE = 128
PICTURE_COLUMNS = ("thumbnail", "Grad-CAM")
#: Past this many rows the HTML report keeps the rows but drops the pictures (its size stays sane).
MAX_PICTURES = 2000
#: Files with no extension are tried too (DICOM often has none).
CANDIDATE_SUFFIXES = frozenset(IMAGE_EXTENSIONS) | {""}

#: A file to predict: its path, or the bytes of an upload.
Source = Union[str, os.PathLike, bytes]


@dataclass
class BatchRow:
    """One input file's outcome (``error`` set means no probability)."""

    path: str
    probability: float | None = None
    label: str = ""
    ood: bool | None = None
    error: str = ""
    study: str | None = None
    not_radiograph: str = ""  # why the radiograph gate refused it (then no probability, no label)
    thumbnail: bytes | None = field(default=None, repr=False)  # JPEG
    heatmap: bytes | None = field(default=None, repr=False)  # JPEG overlay


@dataclass
class StudyRow:
    study: str
    images: int
    predicted: int
    probability: float | None
    label: str


@dataclass
class BatchResult:
    """Everything a batch produced; the CSV and HTML are rendered from it on demand."""

    rows: list[BatchRow]
    checkpoint: str
    threshold: float
    class_names: tuple[str, str]
    backend: str
    seconds: float
    source: str
    has_ood: bool = False
    cam: bool = False
    studies: list[StudyRow] | None = None
    skipped: list[str] = field(default_factory=list)
    hidden: list[str] = field(default_factory=list)  # names starting with "." (folders end in "/"): not read
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    # -- counts ------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        readable = [r for r in self.rows if not r.error]
        predicted = [r for r in readable if not r.not_radiograph]
        positive = sum(1 for r in predicted if r.label == self.class_names[1])
        return {
            "files": len(self.rows),
            "predicted": len(predicted),
            "positive": positive,
            "negative": len(predicted) - positive,
            "unreadable": len(self.rows) - len(readable),
            "not_radiograph": len(readable) - len(predicted),
            "ood": sum(1 for r in predicted if r.ood),
            "skipped_not_images": len(self.skipped),
            "skipped_hidden": len(self.hidden),
        }

    # -- files -------------------------------------------------------------
    def csv_bytes(self) -> bytes:
        """``predictions.csv``: one row per input file, in input order."""
        columns = list(CSV_COLUMNS) + (["study"] if self.studies is not None else [])
        rows = []
        for r in self.rows:
            row = [r.path, "" if r.probability is None else f"{r.probability:.6f}", r.label,
                   f"{self.threshold:.6f}", "" if r.ood is None else str(bool(r.ood)).lower(), r.not_radiograph,
                   r.error]
            if self.studies is not None:
                row.append(r.study or "")
            rows.append(row)
        return csv_bytes(columns, rows)  # spreadsheet-safe: file names are not formulas, CR/LF quoted

    def studies_csv_bytes(self) -> bytes:
        """``studies.csv`` (study grouping only): mean probability of each study's readable images."""
        return csv_bytes(STUDY_COLUMNS, (
            [s.study, s.images, s.predicted, "" if s.probability is None else f"{s.probability:.6f}", s.label,
             f"{self.threshold:.6f}"] for s in self.studies or []))

    def html_bytes(self) -> bytes:
        """``report.html``: self-contained (inline CSS, JS and images)."""
        return render_html(self).encode("utf-8")


# ------------------------------------------------------------------ inputs
def list_folder(folder: str | Path) -> tuple[list[Path], list[Path], list[Path]]:
    """``(candidate images, other files, hidden entries)`` under ``folder``, sorted.

    A candidate has an image extension or none (DICOM); whether it really is
    an image is for the loader to say, in its row. Hidden entries (names
    starting with ``.``: ``.DS_Store``, macOS ``._x.png`` forks, ``.git/``) are
    not read, and hidden folders not walked, but they are returned so that the
    report can count them: nothing is dropped silently.

    Raises:
        ConfigError: ``folder`` is not a folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder}: not a folder; give the folder that holds the images")
    images, others, hidden = [], [], []
    for dirpath, dirnames, filenames in os.walk(folder):
        hidden.extend(Path(dirpath) / d for d in sorted(dirnames) if d.startswith("."))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if name.startswith("."):
                hidden.append(path)
                continue
            (images if path.suffix.lower() in CANDIDATE_SUFFIXES else others).append(path)
    return images, others, sorted(hidden)


def study_of(name: str) -> str:
    """The study a file belongs to: its folder (MURA: ``patient00001/study1_positive``), ``.`` at the top."""
    parent = Path(name).parent.as_posix()
    return parent if parent else "."


def check_output_dir(out_dir: str | Path, *, studies: bool = False, overwrite: bool = False) -> Path:
    """Refuse to overwrite an earlier report unless asked (checked before any work is done).

    Raises:
        ConfigError: a report file exists and ``overwrite`` is False, or ``out_dir`` is a file.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir}: exists and is not a folder; give a folder for the report")
    names = REPORT_FILES + ((STUDIES_FILE,) if studies else ())
    existing = [n for n in names if (out_dir / n).exists()]
    if existing and not overwrite:
        raise ConfigError(f"{out_dir}: {', '.join(existing)} already exist; choose another --out or add --overwrite")
    return out_dir


def write_report(result: BatchResult, out_dir: str | Path, *, overwrite: bool = False) -> list[Path]:
    """Write ``predictions.csv``, ``report.html`` (and ``studies.csv``) atomically.

    Raises:
        ConfigError: see :func:`check_output_dir`.
    """
    out_dir = check_output_dir(out_dir, studies=result.studies is not None, overwrite=overwrite)
    written = [atomic_write_bytes(out_dir / "predictions.csv", result.csv_bytes()),
               atomic_write_bytes(out_dir / "report.html", result.html_bytes())]
    if result.studies is not None:
        written.append(atomic_write_bytes(out_dir / STUDIES_FILE, result.studies_csv_bytes()))
    return written


# ------------------------------------------------------------------ prediction
def _jpeg(image: np.ndarray, side: int = THUMBNAIL_SIDE) -> bytes:
    import cv2

    h, w = image.shape[:2]
    scale = side / max(h, w)
    if scale < 1:
        image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
    return data.tobytes() if ok else b""


def _error_text(exc: BaseException) -> str:
    """The reason without the file name (the row already has it); an unexpected error names its type."""
    if isinstance(exc, ImageLoadError):
        return exc.reason.replace("_", " ") + (f" ({exc.detail})" if exc.detail else "")
    if isinstance(exc, FractureError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _row_error(row: BatchRow, exc: Exception, stage: str) -> None:
    """One file's failure becomes its row's reason; the traceback goes to the log, never to stderr."""
    row.error = _error_text(exc) if stage == "reading" else f"{stage} failed: {_error_text(exc)}"
    row.probability, row.label, row.ood = None, "", None
    expected = isinstance(exc, FractureError)
    log.log(logging.INFO if expected else logging.WARNING, "batch: %s: %s", row.path, row.error)
    if not expected:  # a bug or a library's surprise: the traceback for -v / the log file, not the console
        log.debug("batch: %s failed while %s", row.path, stage, exc_info=exc)


def predict_files(
    items: Sequence[tuple[str, Source]],
    checkpoint: str | Path | None = None,
    *,
    cam: bool = False,
    studies: bool = False,
    backend: str | None = None,
    device: str = "auto",
    batch_size: int = 16,
    progress: Callable[[InferenceProgress], None] | None = None,
    cancel: threading.Event | None = None,
    source: str = "uploads",
    skipped: Sequence[str] = (),
    max_files: int | None = None,
) -> BatchResult:
    """Predict each ``(name, path or bytes)`` as its own image; unreadable ones get an error row.

    Args:
        checkpoint: default: the shipped default model.
        cam: Grad-CAM heatmaps (torch; slower).
        studies: group rows by folder and add study probabilities (mean of the images').
        progress: an :class:`InferenceProgress` after every chunk.
        max_files: refuse more files than this (the web upload's
            ``FRACTURE_MAX_UPLOAD_FILES``); ``None``: no limit (the CLI).

    Every file gets its row: an error while reading, preparing or scoring one
    file, whatever its Python type, becomes that row's ``error`` (the others
    are scored). Images are kept at ``FRACTURE_MAX_IMAGE_MEGAPIXELS`` (a larger
    one is reduced while decoded, as on the Predict page).

    Raises:
        CheckpointError: no or an invalid checkpoint.
        ConfigError: more than ``max_files`` files.
        InferenceCancelled: ``cancel`` was set.
    """
    if max_files is not None and len(items) > max_files:
        raise ConfigError(f"{len(items)} files: at most {max_files} at once (FRACTURE_MAX_UPLOAD_FILES); "
                          "predict fewer at a time, or use `python -m fracture batch FOLDER`")
    from fracture.errors import CheckpointError
    from fracture.serve.predictor import default_checkpoint
    from fracture.serve.scorer import Scorer

    checkpoint = checkpoint or default_checkpoint()
    if checkpoint is None:
        raise CheckpointError("no checkpoint given and no default model in weights/")
    scorer = Scorer.from_checkpoint(checkpoint, backend=backend, device=device, need_heatmaps=cam)
    threshold = scorer.threshold  # probabilities and threshold on the calibrated scale when the model has one
    class_names = scorer.meta.class_names
    has_ood = scorer.ood is not None
    from fracture.gate.radiograph import RadiographGate

    gate = RadiographGate.from_checkpoint(dict(scorer.meta.raw), scorer.extras, where=str(checkpoint))
    started = time.monotonic()
    rows = [BatchRow(path=name, study=study_of(name) if studies else None) for name, _ in items]
    report = _reporter(len(items), started, progress)
    used = _predict_with_scorer(items, rows, scorer, cam, batch_size, report, cancel, gate)
    result = BatchResult(
        rows=rows, checkpoint=Path(checkpoint).name, threshold=threshold, class_names=class_names, backend=used,
        seconds=time.monotonic() - started, source=source, has_ood=has_ood, cam=cam,
        studies=_group_studies(rows, threshold, class_names) if studies else None, skipped=list(skipped),
    )
    counts = result.counts()
    log.info("batch: %d files, %d predicted (%d %s), %d unreadable in %.1f s with %s", counts["files"],
             counts["predicted"], counts["positive"], class_names[1], counts["unreadable"], result.seconds, used)
    return result


def predict_folder(folder: str | Path, checkpoint: str | Path | None = None, **kwargs) -> BatchResult:
    """:func:`predict_files` over every candidate image under ``folder`` (paths in the CSV are relative to it).

    Files that are not image candidates (``.csv``, ``.txt``...) are listed in
    ``result.skipped``, not predicted.
    """
    folder = Path(folder)
    images, others, hidden_paths = list_folder(folder)
    items = [(p.relative_to(folder).as_posix(), p) for p in images]
    skipped = [p.relative_to(folder).as_posix() for p in others]
    hidden = [p.relative_to(folder).as_posix() + ("/" if p.is_dir() else "") for p in hidden_paths]
    if skipped:
        log.info("batch: %d files that are not images skipped (first: %s)", len(skipped), skipped[0])
    if hidden:
        log.info("batch: %d hidden entries not read (first: %s)", len(hidden), hidden[0])
    result = predict_files(items, checkpoint, source=str(folder), skipped=skipped, **kwargs)
    result.hidden = hidden
    return result


def _reporter(total: int, started: float, progress: Callable[[InferenceProgress], None] | None):
    def report(done: int) -> None:
        if progress is not None:
            progress(InferenceProgress("predicting", done, total, time.monotonic() - started))

    return report


def _check_cancel(cancel: threading.Event | None, done: int, total: int) -> None:
    if cancel is not None and cancel.is_set():
        raise InferenceCancelled(f"cancelled after {done} of {total} files; nothing was written")


def _load(name: str, source: Source) -> tuple[np.ndarray, Any]:
    """The pixels and what the file said about itself (DICOM modality, colour, bit depth) for the gate."""
    from fracture.data.imageio import decode_image
    from fracture.gate.radiograph import SourceFacts
    from fracture.settings import get_settings

    # The megapixel limit of the app: a 63 MP PNG is decoded reduced, not at full size (and then with --cam).
    decoded = decode_image(source, name=name, pixel_budget=get_settings().max_image_pixels)
    for note in decoded.notes:
        log.info("%s", note)
    return decoded.image, SourceFacts.of(decoded)


def _predict_with_scorer(items, rows, scorer, cam, batch_size, report, cancel, gate=None) -> str:
    """Load and prepare a chunk of files, score them in one batch, fill their rows (errors per file)."""
    cam_choice = scorer.stored_cam() if cam else None
    for start in range(0, len(items), batch_size):
        _check_cancel(cancel, start, len(items))
        ready, shown, where, facts = [], [], [], []
        for i in range(start, min(start + batch_size, len(items))):
            name, source = items[i]
            try:
                image, fact = _load(name, source)
            except Exception as exc:  # noqa: BLE001 - any failure is this file's row, never the batch's end
                _row_error(rows[i], exc, "reading")
                continue
            try:
                ready.append(scorer.prepare(image))
            except Exception as exc:  # noqa: BLE001
                _row_error(rows[i], exc, "preparing")
                continue
            where.append(i)
            facts.append(fact)
            shown.append(image if cam else None)
            if i < MAX_PICTURES:
                rows[i].thumbnail = _jpeg(image)
        if ready:
            _score_chunk(scorer, ready, shown, where, rows, cam_choice, gate, facts)
        report(min(start + batch_size, len(items)))
    return scorer.backend


def _score_chunk(scorer, ready, shown, where, rows, cam_choice, gate=None, facts=None) -> None:
    """Score a chunk in one batch; if that fails, score its files one by one so only the bad one fails."""
    facts = facts or [None] * len(where)
    try:
        _fill_rows(scorer, ready, shown, where, rows, cam_choice, gate, facts)
    except Exception as exc:  # noqa: BLE001 - find the file that fails, keep the others
        if len(where) == 1:
            _row_error(rows[where[0]], exc, "scoring")
            return
        log.info("batch: scoring a chunk of %d failed (%s); scoring its files one by one", len(where), exc)
        for j, i in enumerate(where):
            try:
                _fill_rows(scorer, ready[j:j + 1], shown[j:j + 1], [i], rows, cam_choice, gate, facts[j:j + 1])
            except Exception as one:  # noqa: BLE001
                _row_error(rows[i], one, "scoring")


def _fill_rows(scorer, ready, shown, where, rows, cam_choice, gate=None, facts=None) -> None:
    """Score the prepared images ``ready`` (rows ``where``) in one batch and fill their rows.

    A file the radiograph gate refuses (:mod:`fracture.gate.radiograph`) gets its reason, no probability, no label.
    """
    from fracture.gate.radiograph import check, image_statistics

    stacked = np.stack(ready)
    scores = scorer.score(stacked, body_parts=scorer.body_indices(None, len(ready)), cam=cam_choice,
                          features=True if gate is not None else None)
    gate_p = None
    if gate is not None and scores.features is not None:
        gate_p = gate.probability(scores.features, image_statistics(stacked))
    for j, i in enumerate(where):
        verdict = check((facts or [None] * len(where))[j], None if gate_p is None else float(gate_p[j]), gate)
        if not verdict["radiograph"]:
            rows[i].not_radiograph = verdict["reason"]
            continue
        rows[i].probability = float(scores.probs[j])
        rows[i].label = scores.labels[j]
        rows[i].ood = None if scores.ood is None else bool(scores.ood[j]["flagged"])
        if cam_choice is not None and i < MAX_PICTURES:
            from fracture.explain.gradcam import heatmap_to_original, overlay_heatmap  # torch: only with --cam

            heatmap = heatmap_to_original(scores.heatmaps[j].cpu().numpy(), shown[j].shape[:2],
                                          scorer.pipeline.resize_mode)
            rows[i].heatmap = _jpeg(overlay_heatmap(shown[j], heatmap))


def _group_studies(rows: Iterable[BatchRow], threshold: float, class_names: tuple[str, str]) -> list[StudyRow]:
    groups: dict[str, list[BatchRow]] = {}
    for r in rows:
        groups.setdefault(r.study or ".", []).append(r)
    out = []
    for study, members in groups.items():
        probs = [r.probability for r in members if r.probability is not None]
        mean = float(np.mean(probs)) if probs else None
        label = "" if mean is None else class_names[int(mean >= threshold)]
        out.append(StudyRow(study=study, images=len(members), predicted=len(probs), probability=mean, label=label))
    return out


# ------------------------------------------------------------------ the HTML report
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:1.5rem;color:#1f2328}
h1{font-size:1.4rem}table{border-collapse:collapse;margin:1rem 0}
th,td{border-bottom:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:middle}
th{background:#f6f8fa;position:sticky;top:0;white-space:nowrap}th.s{cursor:pointer}th.s:after{content:" \\2195";color:#8c959f}
.pos{color:#b42318;font-weight:600}.neg{color:#067647}.err{color:#8c959f}
.cards{display:flex;gap:1rem;flex-wrap:wrap}.card{border:1px solid #d0d7de;border-radius:6px;padding:.5rem 1rem}
.card b{display:block;font-size:1.3rem}img{display:block;max-height:128px}.note{color:#57606a;font-size:.9rem}
"""

# Sorts by each cell's data-v (numbers numerically, text alphabetically); a second click reverses.
_JS = """
document.querySelectorAll("table.sortable").forEach(function(table){
  table.querySelectorAll("th").forEach(function(th, col){
    if (!th.classList.contains("s")) { return; }
    th.addEventListener("click", function(){
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var asc = th.getAttribute("data-dir") !== "asc";
      table.querySelectorAll("th").forEach(function(h){ h.removeAttribute("data-dir"); });
      th.setAttribute("data-dir", asc ? "asc" : "desc");
      rows.sort(function(a, b){
        var x = a.cells[col].getAttribute("data-v"), y = b.cells[col].getAttribute("data-v");
        var nx = parseFloat(x), ny = parseFloat(y), r;
        if (!isNaN(nx) && !isNaN(ny)) { r = nx - ny; }
        else if (x === "" || y === "") { r = (x === "") - (y === ""); return r; }
        else { r = x < y ? -1 : (x > y ? 1 : 0); }
        return asc ? r : -r;
      });
      rows.forEach(function(row){ body.appendChild(row); });
    });
  });
});
"""


def _img(data: bytes | None, alt: str) -> str:
    if not data:
        return ""
    return f'<img alt="{html.escape(alt)}" src="data:image/jpeg;base64,{base64.b64encode(data).decode("ascii")}">'


def _td(text: str, value: Any = None, cls: str = "") -> str:
    v = text if value is None else value
    klass = f' class="{cls}"' if cls else ""
    return f'<td data-v="{html.escape(str(v), quote=True)}"{klass}>{html.escape(text)}</td>'


def render_html(result: BatchResult) -> str:
    """The report page (see the module docstring); every text from a file name is escaped."""
    e = html.escape
    counts = result.counts()
    positive = result.class_names[1]
    cards = [("files", counts["files"]), ("predicted", counts["predicted"]), (positive, counts["positive"]),
             (result.class_names[0], counts["negative"]), ("unreadable", counts["unreadable"]),
             ("not a radiograph", counts["not_radiograph"])]
    if result.has_ood:
        cards.append(("out of distribution", counts["ood"]))
    header = ["thumbnail"] + (["Grad-CAM"] if result.cam else []) + ["path"] + (
        ["study"] if result.studies is not None else []) + ["probability", "label"] + (
        ["OOD"] if result.has_ood else []) + ["error"]
    body = []
    for r in result.rows:
        cls = "err" if r.error else ("pos" if r.label == positive else "neg")
        cells = [f'<td data-v="">{_img(r.thumbnail, r.path)}</td>']
        if result.cam:
            cells.append(f'<td data-v="">{_img(r.heatmap, "Grad-CAM of " + r.path)}</td>')
        cells.append(_td(r.path))
        if result.studies is not None:
            cells.append(_td(r.study or ""))
        cells.append(_td("" if r.probability is None else f"{r.probability:.3f}",
                         "" if r.probability is None else f"{r.probability:.6f}"))
        cells.append(_td(r.label or (f"not a radiograph: {r.not_radiograph}" if r.not_radiograph else ""), cls=cls))
        if result.has_ood:
            cells.append(_td("" if r.ood is None else ("yes" if r.ood else "no")))
        cells.append(_td(r.error, cls="err" if r.error else ""))
        body.append("<tr>" + "".join(cells) + "</tr>")
    studies_html = ""
    if result.studies is not None:
        srows = "".join(
            "<tr>" + _td(s.study) + _td(str(s.images), s.images) + _td(str(s.predicted), s.predicted)
            + _td("" if s.probability is None else f"{s.probability:.3f}", "" if s.probability is None else s.probability)
            + _td(s.label, cls="pos" if s.label == positive else "neg") + "</tr>"
            for s in result.studies
        )
        studies_html = (
            f"<h2>Studies ({len(result.studies)})</h2><p class=note>A study is a folder; its probability is the "
            "mean of its readable images' probabilities (the MURA rule).</p><table class=sortable><thead><tr>"
            "<th class=s>study</th><th class=s>images</th><th class=s>predicted</th><th class=s>probability</th>"
            "<th class=s>label</th></tr></thead>"
            f"<tbody>{srows}</tbody></table>"
        )
    pictures_note = (f"<p class=note>Pictures are shown for the first {MAX_PICTURES:,} files only.</p>"
                     if len(result.rows) > MAX_PICTURES else "")
    skipped_note = (f"<p class=note>{len(result.skipped):,} file(s) that are not images were skipped, "
                    f"e.g. {e(result.skipped[0])}.</p>" if result.skipped else "")
    skipped_note += (f"<p class=note>{len(result.hidden):,} hidden file(s) or folder(s) (names starting with "
                     f"'.') were not read, e.g. {e(result.hidden[0])}.</p>" if result.hidden else "")
    csp = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'")
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
        f"<title>Fracture Lab batch report — {e(result.source)}</title><style>{_CSS}</style></head><body>"
        f"<h1>Fracture Lab batch report</h1>"
        f"<p>Model <code>{e(result.checkpoint)}</code>, threshold {result.threshold:.3f} "
        f"(probability of <i>{e(positive)}</i> at or above it is labelled {e(positive)}); "
        f"{e(result.source)}; {e(result.created_at)}; {result.seconds:.1f} s on {e(result.backend)}.</p>"
        "<div class=cards>" + "".join(f"<div class=card><b>{n:,}</b>{e(str(label))}</div>" for label, n in cards)
        + "</div>" + skipped_note
        + "<p class=note>A teaching and research tool, not a medical device. Click a column header to sort.</p>"
        + studies_html + f"<h2>Images ({len(result.rows):,})</h2>" + pictures_note
        + "<table class=sortable id=images><thead><tr>" + "".join(f"<th>{e(h)}</th>" if h in PICTURE_COLUMNS else f"<th class=s>{e(h)}</th>" for h in header)
        + "</tr></thead><tbody>" + "\n".join(body) + "</tbody></table>"
        + f"<script>{_JS}</script></body></html>"
    )


def summary_json(result: BatchResult) -> str:
    """Counts and settings as JSON (for logs and scripts)."""
    return json.dumps({"checkpoint": result.checkpoint, "threshold": result.threshold, "backend": result.backend,
                       "seconds": round(result.seconds, 3), **result.counts()}, indent=2)
