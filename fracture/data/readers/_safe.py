"""What every reader needs to read hostile folders safely: CSV rows one line at a time, and a walk
that opens nothing but regular files inside the dataset folder.

A bad byte or an extra field in one CSV line becomes a :class:`DataProblem`
naming the file and the line, and the other lines still load (pandas'
``read_csv`` refuses the whole file instead). A walk of a dataset folder
reports, and never follows or lists, a symbolic link that resolves outside the
folder, and reports files that are not regular files (a FIFO named ``x.jpg``
would hang any reader that opened it).
"""
from __future__ import annotations

import csv
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from fracture.util.files import NotRegularFileError, open_regular
from fracture.data.manifest import DataProblem
from fracture.errors import DatasetError

MAX_CSV_BYTES = 512 * 1024 * 1024
"""Largest metadata CSV read (MURA's largest is about 3 MB)."""
MAX_CSV_LINE = 64 * 1024
"""Longest CSV line parsed; a longer one is reported and skipped."""


def read_text_lines(path: Path, problems: list[DataProblem]) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of each line of a metadata file, counted from 1 (line ends removed).

    Lines that are not UTF-8 or too long are reported in ``problems`` (file
    and line) and skipped; the rest are read.

    Raises:
        DatasetError: the file is missing, not a regular file, unreadable or
            larger than :data:`MAX_CSV_BYTES`.
    """
    try:
        handle = open_regular(path)
    except FileNotFoundError as exc:
        raise DatasetError(f"{path}: file missing") from exc
    except NotRegularFileError as exc:
        raise DatasetError(f"{exc}; replace it with the dataset's own file") from exc
    except OSError as exc:
        raise DatasetError(f"{path}: unreadable ({exc.strerror or exc})") from exc
    with handle:
        size = os.fstat(handle.fileno()).st_size
        if size > MAX_CSV_BYTES:
            raise DatasetError(f"{path}: {size / 2**20:.0f} MB is too large for a metadata file "
                               f"(limit {MAX_CSV_BYTES / 2**20:.0f} MB)")
        data = handle.read(MAX_CSV_BYTES + 1)
    try:  # the usual case, decoded at once (per-line decoding costs seconds on MURA's CSVs)
        lines: list[str] | list[bytes] = data.decode("utf-8").split("\n")
    except UnicodeDecodeError:
        lines = data.split(b"\n")
    for number, line in enumerate(lines, start=1):
        if len(line) > MAX_CSV_LINE:
            problems.append(DataProblem(str(path), f"{path.name} line {number}: {len(line):,} characters long; skipped"))
            continue
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                problems.append(DataProblem(str(path), f"{path.name} line {number}: not UTF-8 text "
                                            f"(byte 0x{line[exc.start]:02x} at column {exc.start + 1}); skipped"))
                continue
        if number == 1:
            line = line.removeprefix("\ufeff")
        yield number, line.rstrip("\r")


def read_csv_lines(path: Path, problems: list[DataProblem]) -> Iterator[tuple[int, list[str]]]:
    """``(line number, fields)`` of each non-blank line of a CSV file (see :func:`read_text_lines`).

    Each line is parsed on its own, so an unbalanced quote spoils one line,
    not the rest of the file; a line that is not CSV is reported and skipped.
    Quoted fields may therefore not span lines (no metadata CSV we read has them).
    """
    for number, line in read_text_lines(path, problems):
        if '"' not in line and "\r" not in line:
            if line.replace(",", "").strip():  # not blank, not only commas
                yield number, line.split(",")  # what csv.reader gives for such a line, several times faster
            continue
        try:
            fields = next(csv.reader([line]), [])
        except csv.Error as exc:
            problems.append(DataProblem(str(path), f"{path.name} line {number}: not a CSV row ({exc}); skipped"))
            continue
        if any(field.strip() for field in fields):
            yield number, fields


def real_root(root: str | os.PathLike[str]) -> str:
    """The dataset folder with every symbolic link resolved (what "inside" is measured against)."""
    return os.path.realpath(root)


def leaves_root(path: str | os.PathLike[str], root_real: str) -> str | None:
    """The real path of ``path`` when it resolves outside ``root_real``, else None."""
    real = os.path.realpath(path)
    if real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep):
        return None
    return real


def entry_problem(entry: os.DirEntry, root_real: str) -> str | None:
    """Why a directory entry must not be used (a link out of the dataset, a special file), or None.

    Never opens the entry: ``os.DirEntry`` answers from the directory listing
    (one ``stat`` for links).
    """
    try:
        if entry.is_symlink():
            outside = leaves_root(entry.path, root_real)
            if outside is not None:
                return f"symbolic link to {outside}, outside the dataset folder; not followed"
            if not os.path.exists(entry.path):
                return "broken symbolic link; ignored"
        if entry.is_dir() or entry.is_file():
            return None
        mode = entry.stat().st_mode
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc}); ignored"
    kind = ("FIFO (named pipe)" if stat.S_ISFIFO(mode) else "device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "socket" if stat.S_ISSOCK(mode) else "special file")
    return f"a {kind}, not a regular file; ignored (never opened)"


def walk(top: Path, root_real: str, problems: list[DataProblem], *, skip_dirs: tuple[str, ...] = (),
         seen: set[str] | None = None) -> Iterator[tuple[Path, list[str]]]:
    """``(folder, regular file names)`` for ``top`` and every folder below it, top-down, sorted.

    Hidden entries and folders named in ``skip_dirs`` (lower case) are
    skipped. Symbolic links leaving ``root_real`` and special files are
    reported in ``problems``; a link back into a folder already walked (a
    loop, or a second path to one folder) is not walked twice; pass one ``seen``
    set to several walks to keep one folder from being read into two splits.
    """
    seen = set() if seen is None else seen
    stack = [top]
    while stack:
        folder = stack.pop()
        real = os.path.realpath(folder)
        if real in seen:
            problems.append(DataProblem(str(folder), "a link to a folder already read (a loop or a second path); "
                                        "not read twice"))
            continue
        seen.add(real)
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as exc:
            problems.append(DataProblem(str(folder), f"folder cannot be listed ({exc.strerror or exc}); skipped"))
            continue
        files, subdirs = [], []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            why = entry_problem(entry, root_real)
            if why is not None:
                problems.append(DataProblem(entry.path, why))
            elif entry.is_dir():
                if entry.name.lower() not in skip_dirs:
                    subdirs.append(Path(entry.path))
            else:
                files.append(entry.name)
        yield folder, files
        stack.extend(reversed(subdirs))
