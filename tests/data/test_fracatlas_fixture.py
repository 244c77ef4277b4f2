"""The fracatlas_root fixture (tests/conftest.py): skip when the data is simply absent, fail when asked for and
missing, and mark every test that uses it as an integration test."""
from __future__ import annotations

from pathlib import Path

import pytest

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"
PYTEST_INI = Path(__file__).resolve().parents[2] / "pytest.ini"


@pytest.fixture()
def scratch(pytester: pytest.Pytester, monkeypatch) -> pytest.Pytester:
    """A scratch project with this conftest and one test that needs the data (no ../shared beside it)."""
    monkeypatch.delenv("FRACTURE_FRACATLAS", raising=False)
    pytester.makeconftest(CONFTEST.read_text(encoding="utf-8").replace('pytest_plugins = ["pytester"]', ""))
    pytester.makeini(PYTEST_INI.read_text(encoding="utf-8").replace("testpaths = tests", ""))  # strict markers
    pytester.makepyfile(test_needs_data="def test_reads(fracatlas_root):\n"
                                         "    assert (fracatlas_root / 'dataset.csv').is_file()\n")
    return pytester


def test_absent_at_the_default_place_skips_with_where_it_looked(scratch):
    result = scratch.runpytest("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*FracAtlas not found at *shared*fracatlas (set FRACTURE_FRACATLAS*"])


def test_asked_for_but_missing_fails(scratch, monkeypatch, tmp_path):
    monkeypatch.setenv("FRACTURE_FRACATLAS", str(tmp_path / "nowhere"))
    result = scratch.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*FRACTURE_FRACATLAS=*nowhere: no dataset.csv there*"])


def test_asked_for_and_present_runs_and_is_marked_integration(scratch, monkeypatch, tmp_path):
    (tmp_path / "dataset.csv").write_text("image_id\n")
    monkeypatch.setenv("FRACTURE_FRACATLAS", str(tmp_path))
    scratch.runpytest("-m", "integration").assert_outcomes(passed=1)
    scratch.runpytest("-m", "not integration").assert_outcomes(deselected=1)
