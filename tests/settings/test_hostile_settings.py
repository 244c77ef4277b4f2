"""Hostile environment variables: each is a typed error naming the variable; the app shows one clear error
and keeps running on the defaults (every page), the core never raises deep inside a page."""
from __future__ import annotations

import pytest

from fracture.errors import ConfigError
from fracture.settings import LIMITS, get_settings, read_settings, settings_problems

from app_support import app_home, demo_template, fresh_app_home, assert_no_exception, run_page  # noqa: F401

HOSTILE = [
    ("FRACTURE_MAX_UPLOAD_MB", "abc"),
    ("FRACTURE_MAX_TRAINING_JOBS", "lots"),
    ("FRACTURE_MAX_IMAGE_MEGAPIXELS", "nan"),
    ("FRACTURE_MAX_UPLOAD_MEGAPIXELS", "-inf"),
    ("FRACTURE_PREDICTION_CACHE_MB", "-5"),
    ("FRACTURE_MAX_UPLOAD_FILES", "2.5"),
    ("FRACTURE_MAX_UPLOAD_MB", "0"),
]
DEFAULTS = {limit.attr: limit.default for limit in LIMITS}


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    for limit in LIMITS:
        monkeypatch.delenv(limit.variable, raising=False)


@pytest.mark.parametrize("name, value", HOSTILE)
def test_a_bad_value_names_its_variable_and_falls_back_to_the_default(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    problems = settings_problems()
    assert len(problems) == 1 and isinstance(problems[0], ConfigError)
    assert str(problems[0]).startswith(f"{name}={value!r}: must be") and "default" in str(problems[0])
    attr = next(limit.attr for limit in LIMITS if limit.variable == name)
    assert getattr(get_settings(), attr) == DEFAULTS[attr]
    with pytest.raises(ConfigError, match=name):
        get_settings(strict=True)


def test_all_bad_at_once_and_good_values_kept(monkeypatch):
    for name, value in HOSTILE[:5]:
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("FRACTURE_MAX_UPLOAD_FILES", "12")
    settings, problems = read_settings()
    assert sorted(str(p).split("=")[0] for p in problems) == sorted(n for n, _ in HOSTILE[:5])
    assert settings.max_upload_files == 12 and isinstance(settings.max_upload_files, int)
    assert (settings.max_upload_mb, settings.max_training_jobs, settings.prediction_cache_mb) == (50, 1, 512.0)
    monkeypatch.setenv("FRACTURE_MAX_TRAINING_JOBS", "0")  # 0: training switched off, allowed
    settings, problems = read_settings()
    assert settings.max_training_jobs == 0 and not any("TRAINING_JOBS" in str(p) for p in problems)


def test_the_app_shows_one_error_and_runs_on_the_defaults(app_home, monkeypatch):
    for name, value in HOSTILE[:5]:
        monkeypatch.setenv(name, value)
    at = run_page()
    assert_no_exception(at)
    assert len(at.error) == 1
    message = at.error[0].value
    assert message.startswith("Settings refused, using the defaults")
    assert all(name in message for name, _ in HOSTILE[:5])
    assert "Fracture Lab" in at.title[0].value  # the home page is drawn
    for page in ("pages/4_Predict.py", "pages/3_Train.py"):  # pages that read the refused limits
        at = run_page(page)
        assert_no_exception(at)
        assert [e.value for e in at.error] == [message]
    for name, _ in HOSTILE[:5]:
        monkeypatch.delenv(name)
    at = run_page()
    assert_no_exception(at)
    assert not at.error
