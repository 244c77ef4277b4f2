"""A lock-out for wrong instructor PINs: 5 wrong in 5 minutes close a session's instructor view for a while.

Why: the PIN guards the truth of every case and the class's answers, and a
4-digit PIN falls to a student trying numbers by hand. The wrong tries are
kept per session in ``wrong_pins.json`` beside ``session.json`` (under a
lock, so every browser and every server process on the machine counts into
one record, and a restart forgets nothing); a right PIN clears them.
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path

from fracture.reader_study.session import ReaderStudyError, Session, WrongPinError, _session_dir, check_pin
from fracture.util.files import exclusive_lock
from fracture.util.jsonio import atomic_write_json, read_json

logger = logging.getLogger(__name__)

MAX_WRONG = 5
WINDOW_S = 300
RECORD = "wrong_pins.json"


class PinLockedError(ReaderStudyError):
    """Too many wrong PINs lately: the instructor view stays closed for ``retry_after_s`` seconds."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def _wait_text(seconds: float) -> str:
    seconds = max(1, math.ceil(seconds))
    minutes, rest = divmod(seconds, 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def _read(path: Path, now: float) -> list[float]:
    """The wrong tries of the last :data:`WINDOW_S` seconds; a missing or damaged record is empty (logged)."""
    try:
        data = read_json(path, max_bytes=64 * 1024, error=ReaderStudyError, what="wrong-PIN record")
    except FileNotFoundError:
        return []
    except ReaderStudyError as exc:
        logger.warning("%s", exc)
        return []
    times = data.get("wrong") if isinstance(data, dict) else None
    if not isinstance(times, list):
        return []
    return sorted(float(t) for t in times
                  if isinstance(t, (int, float)) and not isinstance(t, bool) and 0 <= now - t < WINDOW_S)


def open_instructor_view(session: Session, pin: str, *, now: float | None = None,
                         root: str | Path | None = None) -> None:
    """:func:`check_pin` with a lock-out: the :data:`MAX_WRONG`-th wrong PIN within :data:`WINDOW_S`
    seconds locks the session's instructor view until the oldest of those tries is that old.

    Raises:
        PinLockedError: locked now (the message says how long to wait); the PIN is not even checked.
        WrongPinError: a wrong PIN (the message says how many tries are left).
        ReaderStudyError: no PIN given, or a session without one (not counted).
    """
    now = time.time() if now is None else float(now)
    path = _session_dir(session.code, root) / RECORD
    with exclusive_lock(path.with_suffix(".lock")):
        wrong = _read(path, now)
        if len(wrong) >= MAX_WRONG:
            wait = wrong[-MAX_WRONG] + WINDOW_S - now
            raise PinLockedError(
                f"Too many wrong PINs for session {session.code}: the instructor view is locked. "
                f"Wait {_wait_text(wait)}, then enter the right PIN.", wait)
        try:
            check_pin(session, pin)
        except WrongPinError:
            wrong.append(now)
            atomic_write_json(path, {"wrong": wrong})
            logger.warning("reader study %s: wrong instructor PIN (%d in %d s)", session.code, len(wrong),
                           WINDOW_S)
            left = MAX_WRONG - len(wrong)
            if left <= 0:
                raise PinLockedError(
                    f"Wrong PIN for session {session.code}, {MAX_WRONG} times in {WINDOW_S // 60} minutes: "
                    f"the instructor view is locked. Wait {_wait_text(WINDOW_S)}, then enter the right PIN.",
                    float(WINDOW_S)) from None
            raise WrongPinError(f"wrong PIN for session {session.code} ({left} "
                                f"{'try' if left == 1 else 'tries'} left before a {WINDOW_S // 60}-minute "
                                "lock)") from None
        if wrong:
            atomic_write_json(path, {"wrong": []})

