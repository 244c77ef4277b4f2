"""AppTest: the Reader Study as a class uses it: answering, clicking, the PIN, the dashboard, hostile files."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.app_support import app_home, assert_no_exception, demo_template, fresh_app_home, run_page  # noqa: F401

PAGE = "pages/6_Reader_Study.py"
PIN = "2468"
BOX = (0.5, 0.4, 0.7, 0.6)


@pytest.fixture
def tiny_gallery(monkeypatch, tmp_path):
    """Six generated 'X-rays' (3 fractured, with a box) stand in for the shipped gallery (fast, no model)."""
    from PIL import Image

    import fracture.ui.xray_gallery  # noqa: F401  bound to the real load_gallery before the patch below:
    # imported for the first time under it (the first AppTest run of a pytest process), the page module
    # would keep the fake gallery for every later test (Home's gallery links then pointed at "IMG0").
    from fracture.data import gallery as gallery_mod
    from fracture.data.gallery import GalleryItem

    items = []
    for i, label in enumerate([1, 0, 1, 0, 1, 0]):
        path = tmp_path / f"case{i}.png"
        Image.fromarray((np.random.default_rng(i).random((80, 120)) * 255).astype(np.uint8)).save(path)
        items.append(GalleryItem(path=path, label=label, body_part="hand", boxes=(BOX,) if label else (),
                                 source_id=f"IMG{i}.jpg"))
    monkeypatch.setattr(gallery_mod, "load_gallery", lambda folder=None: items)
    return items


@pytest.fixture
def session(app_home, tiny_gallery):
    from fracture.reader_study import create_session

    return create_session(pin=PIN, source="gallery", n_cases=6, seed=1)


def _as_reader(code: str, name: str):
    at = run_page(PAGE, query={"rs-code": code, "rs-name": name})  # as the join link (and a reload) set them
    assert_no_exception(at)
    return at


def _current_case(session, name):
    from fracture.reader_study import find_reader

    reader = find_reader(session, name)
    return session.case(next(cid for cid in reader.order if cid not in reader.answers))


def test_answer_is_disabled_until_chosen_and_a_click_is_scored(session):
    from fracture.reader_study import Mark, find_reader, mark_hit

    at = _as_reader(session.code, "Ada")
    assert at.button(key="rs-answer").disabled  # nothing pre-selected
    assert not any(b.key in ("rs-f", "rs-n") and b.proto.type == "primary" for b in at.button)
    at.button(key="rs-f").click().run()
    assert at.button(key="rs-answer").disabled  # a reading alone is not enough
    at.button(key="rs-level-4").click().run()
    assert not at.button(key="rs-answer").disabled

    case = _current_case(session, "Ada")
    fractured_case = case.has_box
    at.session_state[f"rs-mark-{case.case_id}"] = Mark(0, 0.6, 0.5)  # what a click on the image stores
    at.button(key="rs-answer").click().run()
    assert_no_exception(at)
    answer = find_reader(session, "Ada").answers[case.case_id]
    assert answer.fractured is True and answer.confidence == 75 and answer.mark == Mark(0, 0.6, 0.5)
    text = " ".join(m.value for m in at.markdown)
    if fractured_case:
        assert mark_hit(case, answer) is True and "you pointed at it" in text
    at.button(key="rs-next").click().run()

    # walk to a fractured case and miss it on purpose: the same pointing game says so
    for _ in range(len(session.cases)):  # bounded: the study has a fractured case with a box
        case = _current_case(session, "Ada")
        at.button(key="rs-n" if not case.has_box else "rs-f").click().run()
        at.button(key="rs-level-3").click().run()
        if case.has_box:
            at.session_state[f"rs-mark-{case.case_id}"] = Mark(0, 0.05, 0.95)
        at.button(key="rs-answer").click().run()
        assert_no_exception(at)
        if case.has_box:
            assert "your click missed it" in " ".join(m.value for m in at.markdown)
            assert mark_hit(case, find_reader(session, "Ada").answers[case.case_id]) is False
            break
        at.button(key="rs-next").click().run()
    else:
        pytest.fail("walked every case without meeting a fractured one with a box")


def test_reader_keeps_their_name_and_a_taken_name_asks_first(session):
    from fracture.reader_study import find_reader

    at = _as_reader(session.code, "Carol")
    carol = find_reader(session, "carol")
    assert carol is not None and carol.name == "Carol"
    assert at.query_params["rs-key"] in (carol.token, [carol.token])  # the token rides in the URL: a reload keeps it
    other = _as_reader(session.code, "CAROL")  # another browser, same name in other case
    assert any("already taken" in w.value for w in other.warning)
    assert other.button(key="rs-join") and not [b for b in other.button if b.key == "rs-answer"]
    other.button(key="rs-join").click().run()
    assert_no_exception(other)
    assert other.button(key="rs-answer").disabled  # joined as Carol, reading
    assert len(list((session_path(session) / "readers").glob("*.json"))) == 1


def session_path(session):
    from fracture.reader_study import sessions_root

    return sessions_root() / session.code


def test_instructor_view_refuses_without_the_pin(session):
    from fracture.reader_study import save_answer

    save_answer(session.code, "Ada", session.cases[0].case_id, fractured=True, confidence=50)
    at = run_page(PAGE)
    at.radio(key="rs-role").set_value("the instructor").run()
    assert_no_exception(at)

    def dashboard_shown() -> bool:
        return any(m.label == "Readers joined" for m in at.metric) or bool(at.get("download_button"))

    assert not dashboard_shown() and any("PIN" in i.value for i in at.info)
    at.text_input(key="rs-open-code").set_value(session.code)
    at.text_input(key="rs-pin").set_value("1111")
    next(b for b in at.button if "Open dashboard" in b.label).click().run()
    assert_no_exception(at)
    assert any("wrong PIN" in e.value for e in at.error) and not dashboard_shown()
    assert "/" not in " ".join(e.value for e in at.error)  # no server path
    at.text_input(key="rs-pin").set_value(PIN)
    next(b for b in at.button if "Open dashboard" in b.label).click().run()
    assert_no_exception(at)
    assert dashboard_shown()
    assert any(session.code in m.value for m in at.markdown)  # the large join code
    assert any(f"rs-code={session.code}" in m.value for m in at.markdown)  # the join link


def test_dashboard_kappa_uses_finished_readers_only(session):
    from fracture.reader_study import save_answer

    for case in session.cases:
        save_answer(session.code, "Ada", case.case_id, fractured=True, confidence=100)
        save_answer(session.code, "Bob", case.case_id, fractured=False, confidence=100)
    save_answer(session.code, "Cy", session.cases[0].case_id, fractured=True, confidence=50)
    at = run_page(PAGE)
    at.session_state["rs-unlocked"] = session.code  # as after the right PIN
    at.radio(key="rs-role").set_value("the instructor").run()
    at.toggle(key="rs-show-results").set_value(True).run()
    assert_no_exception(at)
    values = {m.label: m.value for m in at.metric}
    assert values["Readers joined"] == "3" and values["Finished"] == "2"
    assert values["Fleiss' kappa, finished"] == "-1.000"  # Cy (1 answer) does not drag it
    assert any("Cy" in c.value and "Not finished" in c.value for c in at.caption)
    table = at.dataframe[-1].value
    assert list(table["reader"]) == ["Ada", "Bob", "Cy"]
    assert "None" not in table.to_string() and table.loc[2, "kappa vs truth"] == "—"


def test_damaged_reader_files_are_listed_and_crash_nothing(session):
    from fracture.reader_study import claim_reader, save_answer

    readers = session_path(session) / "readers"
    (readers / "deep-0000000000.json").write_text("[" * 100_000 + "]" * 100_000)
    dana = claim_reader(session, "Dana")
    save_answer(session.code, "Dana", session.cases[0].case_id, fractured=True, confidence=60)
    path = next(p for p in readers.glob("dana-*.json"))
    data = json.loads(path.read_text())
    data["answers"]["case999"] = {"case_id": "case999", "fractured": True, "confidence": 1}
    data["answers"][session.cases[1].case_id] = {"fractured": "no", "confidence": 1e300}
    path.write_text(json.dumps(data))

    at = run_page(PAGE)
    at.session_state["rs-unlocked"] = session.code
    at.radio(key="rs-role").set_value("the instructor").run()
    assert_no_exception(at)
    assert any("Damaged reader file" in w.value and "deep-0000000000.json" in w.value for w in at.warning)
    assert not any(str(readers) in w.value for w in at.warning)

    reader = _as_reader(session.code, "Dana")
    reader.query_params["rs-key"] = dana.token
    reader.run()
    assert_no_exception(reader)  # the unknown case and the bad answer are ignored
    assert "1 of 6 cases read" in reader.get("progress")[0].proto.text


@pytest.fixture
def model_session(app_home, tiny_gallery, tmp_path):
    """A session scored by a tiny real checkpoint: its heatmaps are stored with it."""
    from fracture.reader_study import create_session
    from tests.app_support import write_tiny_run

    run = write_tiny_run(tmp_path / "runs", "tiny", image_size=32)
    return create_session(pin=PIN, source="gallery", n_cases=4, seed=2, checkpoint=run / "best.safetensors")


def _answer_first_case(code: str, name: str):
    at = _as_reader(code, name)
    at.button(key="rs-f").click().run()
    at.button(key="rs-level-5").click().run()
    at.button(key="rs-answer").click().run()
    assert_no_exception(at)
    return at


def test_the_reveal_shows_the_stored_heatmap_without_running_the_model(model_session, monkeypatch):
    from fracture.reader_study import case_heatmaps
    from fracture.ui import loaders

    maps = case_heatmaps(model_session, model_session.cases[0])
    assert maps is not None and all(m.dtype == np.float32 and 0.0 <= m.min() <= m.max() <= 1.0 for m in maps)
    runs = []
    monkeypatch.setattr(loaders, "_predictor", lambda *a: runs.append(a))  # the page must not need it
    at = _answer_first_case(model_session.code, "Ada")
    captions = [caption for image in at.image for caption in image.captions]
    assert "where the model looked (heatmap)" in captions and any(c.startswith("the X-ray") for c in captions)
    assert runs == []


def test_a_session_without_stored_heatmaps_runs_the_model_once_for_two_readers(model_session, monkeypatch):
    import shutil

    from fracture.ui import loaders

    shutil.rmtree(session_path(model_session) / "heatmaps")  # as a session made by an older version
    loaders.shared_predictions().clear()
    real, runs = loaders._predictor, []

    def counting(path, signature):
        runs.append(path)
        return real(path, signature)

    monkeypatch.setattr(loaders, "_predictor", counting)
    readers = [_as_reader(model_session.code, name) for name in ("Ada", "Bob")]
    firsts = {_current_case(model_session, name).case_id for name in ("Ada", "Bob")}
    for at in readers:
        at.button(key="rs-f").click().run()
        at.button(key="rs-level-5").click().run()
        at.button(key="rs-answer").click().run()
        assert_no_exception(at)
    assert len(runs) == len(firsts)  # one model run per case, whoever reveals it first


def test_five_wrong_pins_lock_the_dashboard_and_say_how_long(session):
    at = run_page(PAGE)
    at.radio(key="rs-role").set_value("the instructor").run()
    at.text_input(key="rs-open-code").set_value(session.code)

    def try_pin(pin: str) -> str:
        at.text_input(key="rs-pin").set_value(pin)
        next(b for b in at.button if "Open dashboard" in b.label).click().run()
        assert_no_exception(at)
        return " ".join(e.value for e in at.error)

    for left in (4, 3, 2, 1):
        assert f"wrong PIN for session {session.code} ({left} tr" in try_pin("0000")
    assert "the instructor view is locked. Wait 5 min 0 s" in try_pin("0000")
    said = try_pin(PIN)  # the right PIN now waits too
    assert "Too many wrong PINs" in said and ("Wait 4 min" in said or "Wait 5 min" in said)
    assert not any(m.label == "Readers joined" for m in at.metric) and not at.get("download_button")


def test_the_image_size_choice_outlives_the_reveal_and_small_x_rays_are_enlarged(session):
    from fracture.ui.reader_views import IMAGE_SIZES, MAX_UPSCALE, fit

    at = _as_reader(session.code, "Eve")
    at.segmented_control(key="rs-size").set_value("Large").run()
    at.button(key="rs-n").click().run()
    at.button(key="rs-level-2").click().run()
    at.button(key="rs-answer").click().run()
    at.button(key="rs-next").click().run()
    assert_no_exception(at)
    assert at.segmented_control(key="rs-size").value == "Large"  # the next case keeps it
    small = np.zeros((300, 240), np.uint8)  # a gallery X-ray is 384 px at most
    assert fit(small, IMAGE_SIZES["Large"], 2000, upscale=MAX_UPSCALE).shape == (600, 480)  # up to 2x
    assert fit(small, IMAGE_SIZES["Small"], 2000, upscale=MAX_UPSCALE).shape == (320, 256)
    assert fit(np.zeros((3000, 2000), np.uint8), 440, 560).shape == (440, 293)  # large ones come down
