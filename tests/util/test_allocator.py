"""The allocator tuning: on when asked, off when switched off, never an error."""
from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
import numpy as np
from fracture.util import allocator
tuned = allocator.keep_freed_memory()
print("tuned", tuned, allocator.is_tuned())
# Large blocks still allocate, are written and freed, over and over.
for _ in range(3):
    block = np.ones(64 * 1024 * 1024 // 8)
    assert block.sum() == block.size
    del block
"""


def _run(env_value: str | None, monkeypatch) -> str:
    if env_value is None:
        monkeypatch.delenv("FRACTURE_MALLOC_TUNING", raising=False)
    else:
        monkeypatch.setenv("FRACTURE_MALLOC_TUNING", env_value)
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt tuning is glibc/Linux only")
def test_tuning_applies_on_glibc(monkeypatch):
    out = _run(None, monkeypatch)
    assert "tuned True True" in out
    assert "heap never trimmed" in out


@pytest.mark.parametrize("value", ["0", "off", "False"])
def test_switch_turns_it_off(monkeypatch, value):
    out = _run(value, monkeypatch)
    assert "tuned False False" in out
    assert "allocator tuning off" in out


def test_an_unknown_switch_value_is_named_and_the_default_kept(monkeypatch):
    out = _run("banana", monkeypatch)
    assert "FRACTURE_MALLOC_TUNING='banana' is not one of" in out
    if sys.platform.startswith("linux"):
        assert "tuned True True" in out
