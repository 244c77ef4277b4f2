"""CSV that is safe to open in a spreadsheet: every CSV the project writes goes through here.

Why: file names, class names and reader names typed by students end up in CSVs
that people open in Excel or LibreOffice. A cell starting with ``=``, ``+``,
``-``, ``@``, a tab or a carriage return is read as a formula there
(``=cmd|' /C calc'!A0``, ``@SUM(1)``, ``+HYPERLINK(...)``), so, following
OWASP's CSV-injection rule, such text cells get a leading ``'`` (shown as plain
text by spreadsheets). Python's ``csv`` module with a ``\\n`` line ending does
not quote a lone ``\\r``, which splits a row in most readers; every cell holding
CR or LF is quoted here. Numbers (``int``/``float`` values) are written as they
are: only text is neutralised, so a negative number stays a number.

Readers of these files get the neutralised text back (``'=cmd...``), which is
what OWASP recommends; the leading ``'`` marks text that was neutralised.
"""
from __future__ import annotations

import csv
import io
from typing import Any, Iterable, Mapping, Sequence

#: Characters that make a spreadsheet read a cell as a formula (OWASP, CSV injection).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    """``value`` with a leading ``'`` when it is text a spreadsheet would run as a formula; anything else unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any] | Mapping[str, Any]]) -> str:
    """A CSV document (``\\n`` line endings) with every text cell neutralised and CR/LF cells quoted.

    Args:
        header: the column names (neutralised too: class names can become columns).
        rows: sequences in ``header`` order, or mappings keyed by ``header``
            (missing keys are empty cells; extra keys are an error, as with ``csv.DictWriter``).

    Raises:
        ValueError: a mapping row has a key that is not in ``header``.
    """
    out = io.StringIO()
    line = io.StringIO()
    # "\r\n" as the writer's terminator makes it quote any cell holding \r or \n; the rows are then
    # joined with "\n" so the file looks like every other CSV the project writes.
    writer = csv.writer(line, lineterminator="\r\n")
    columns = list(header)

    def emit(cells: Sequence[Any]) -> None:
        line.seek(0)
        line.truncate()
        writer.writerow([safe_cell(c) for c in cells])
        out.write(line.getvalue()[:-2] + "\n")

    emit(columns)
    known = set(columns)
    for row in rows:
        if isinstance(row, Mapping):
            extra = [k for k in row if k not in known]
            if extra:
                raise ValueError(f"CSV row has keys {extra} that are not columns {columns}")
            emit(["" if row.get(c) is None else row.get(c) for c in columns])
        else:
            emit(list(row))
    return out.getvalue()


def csv_bytes(header: Sequence[str], rows: Iterable[Sequence[Any] | Mapping[str, Any]]) -> bytes:
    """:func:`csv_text` as UTF-8 bytes (downloads and atomic writes)."""
    return csv_text(header, rows).encode("utf-8")


def frame_csv_text(frame: Any) -> str:
    """A pandas DataFrame as safe CSV (no index); numeric columns keep pandas' own formatting of numbers."""
    columns = [str(c) for c in frame.columns]
    cells = frame.astype(object).where(frame.notna(), None)  # missing values are empty cells, as in to_csv
    return csv_text(columns, cells.itertuples(index=False, name=None))
