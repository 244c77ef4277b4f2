"""AppTest: a short reader study (3 cases, 2 readers) walked to the instructor's aggregate view."""
from __future__ import annotations

import numpy as np
import pytest

from tests.app_support import app_home, assert_no_exception, demo_template, fresh_app_home, run_page, switch_to  # noqa: F401

PAGE = "pages/6_Reader_Study.py"


@pytest.fixture
def tiny_gallery(monkeypatch, tmp_path):
    """Three generated 'X-rays' stand in for the shipped gallery (fast, no model needed)."""
    from PIL import Image

    from fracture.data import gallery as gallery_mod
    from fracture.data.gallery import GalleryItem

    items = []
    for i, label in enumerate([1, 0, 1]):
        path = tmp_path / f"case{i}.png"
        Image.fromarray((np.random.default_rng(i).random((80, 64)) * 255).astype(np.uint8)).save(path)
        items.append(GalleryItem(path=path, label=label, body_part="hand",
                                 boxes=((0.1, 0.1, 0.4, 0.4),) if label else (), source_id=f"IMG{i}.jpg"))
    monkeypatch.setattr(gallery_mod, "load_gallery", lambda folder=None: items)
    return items


def _read_all(at, code: str, name: str, fractured_every_time: bool) -> None:
    at.radio(key="rs-role").set_value("a reader").run()
    at.text_input(key="rs-code").set_value(code).run()
    at.text_input(key="rs-name").set_value(name).run()
    for _ in range(3):
        assert_no_exception(at)
        radio = next(r for r in at.radio if r.key and r.key.startswith("rs-call-"))
        radio.set_value("fractured" if fractured_every_time else "not fractured")
        at.button[0].click().run() if False else None
        form_button = next(b for b in at.button if "Answer" in b.label)
        form_button.click().run()
        assert_no_exception(at)
        assert any("Truth:" in s.value for s in list(at.success) + list(at.error))
        at.button(key="rs-next").click().run()
    assert_no_exception(at)


def test_two_readers_then_the_aggregate_view(app_home, tiny_gallery):
    from fracture.reader_study import list_sessions, load_answers

    at = run_page(PAGE)
    assert_no_exception(at)
    at.radio(key="rs-role").set_value("the instructor").run()
    at.number_input(key="rs-n").set_value(3).run()
    create = next(b for b in at.button if "Create session" in b.label)
    create.click().run()
    assert_no_exception(at)
    codes = list_sessions()
    assert len(codes) == 1
    code = codes[0]
    assert any(code in s.value for s in at.success)

    _read_all(at, code, "Ada", fractured_every_time=True)
    labels = [m.label for m in at.metric]
    assert "Kappa with the truth" in labels and "Sensitivity" in labels
    values = {m.label: m.value for m in at.metric}
    assert values["Sensitivity"] == "1.00" and values["Specificity"] == "0.00"

    _read_all(at, code, "Bob", fractured_every_time=False)
    values = {m.label: m.value for m in at.metric}
    assert values["Sensitivity"] == "0.00" and values["Specificity"] == "1.00"

    answers = load_answers(code)
    assert set(answers) == {"Ada", "Bob"} and all(len(a) == 3 for a in answers.values())

    at.radio(key="rs-role").set_value("the instructor").run()
    assert_no_exception(at)
    values = {m.label: m.value for m in at.metric}
    assert values["Readers"] == "2"
    # Ada says 'fractured' to all, Bob 'not fractured' to all: total disagreement -> Fleiss' kappa -1
    assert values["Fleiss' kappa (readers)"] == "-1.00"
    table = at.dataframe[0].value
    assert list(table["reader"]) == ["Ada", "Bob"]
