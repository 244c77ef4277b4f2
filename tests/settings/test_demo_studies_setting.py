"""FRACTURE_DEMO_STUDIES is read like every limit: a typed error naming the variable, the default kept."""
from __future__ import annotations

import pytest

from fracture.errors import ConfigError
from fracture.settings import DEMO_STUDIES_DEFAULT, get_settings, settings_problems


def test_the_default_is_the_generators():
    from fracture.data.demo import DEFAULT_STUDIES

    assert DEMO_STUDIES_DEFAULT == DEFAULT_STUDIES


@pytest.mark.parametrize("value", ["abc", "1", "2.5", "-3", "nan"])
def test_a_bad_value_names_the_variable_and_the_app_keeps_the_default(monkeypatch, value):
    from fracture.ui.demo import demo_studies

    monkeypatch.setenv("FRACTURE_DEMO_STUDIES", value)
    problems = settings_problems()
    assert len(problems) == 1 and isinstance(problems[0], ConfigError)
    assert str(problems[0]).startswith(f"FRACTURE_DEMO_STUDIES={value!r}: must be") and "fix or unset it" in str(problems[0])
    assert demo_studies() == DEMO_STUDIES_DEFAULT
    with pytest.raises(ConfigError, match="FRACTURE_DEMO_STUDIES"):
        get_settings(strict=True)


def test_a_good_value_is_used(monkeypatch):
    from fracture.ui.demo import demo_studies

    monkeypatch.setenv("FRACTURE_DEMO_STUDIES", " 24 ")
    assert not settings_problems() and demo_studies() == 24 and isinstance(get_settings().demo_studies, int)
    monkeypatch.delenv("FRACTURE_DEMO_STUDIES")
    assert demo_studies() == DEMO_STUDIES_DEFAULT
