"""Reader studies: metrics checked by hand and against scikit-learn, sessions on disk, CSV export."""
from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from fracture.cli import main as cli_main
from fracture.reader_study import (
    ReaderStudyError,
    create_session,
    fleiss_kappa,
    load_answers,
    load_session,
    reader_metrics,
    save_answer,
    session_summary,
)
from fracture.reader_study.metrics import reader_score
from fracture.reader_study.summary import export_csv, export_csv_bytes, reader_summary


def test_reader_metrics_by_hand():
    truth = [1, 1, 1, 0, 0, 0, 0, 1]
    calls = [1, 0, 1, 0, 1, 0, 0, 1]
    m = reader_metrics(truth, calls)
    # tp=3 (cases 0,2,7), fn=1 (case 1), fp=1 (case 4), tn=3
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (3, 1, 1, 3)
    assert m["sensitivity"] == pytest.approx(0.75)
    assert m["specificity"] == pytest.approx(0.75)
    assert m["accuracy"] == pytest.approx(0.75)
    # po = 0.75, pe = 0.5*0.5 + 0.5*0.5 = 0.5 -> kappa 0.5
    assert m["kappa_truth"] == pytest.approx(0.5)
    assert m["kappa_truth"] == pytest.approx(cohen_kappa_score(truth, calls))
    assert m["roc_point"] == pytest.approx([0.25, 0.75])


def test_kappa_with_model_matches_sklearn():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, 40)
    calls = rng.integers(0, 2, 40)
    model = rng.integers(0, 2, 40)
    m = reader_metrics(truth, calls, model_calls=model)
    assert m["kappa_model"] == pytest.approx(cohen_kappa_score(model, calls))


def test_reader_scores_give_roc_and_auc():
    truth = [1, 1, 0, 0]
    scores = [reader_score(True, 90), reader_score(False, 20), reader_score(False, 80), reader_score(True, 10)]
    assert scores == [95.0, 40.0, 10.0, 55.0]
    m = reader_metrics(truth, [1, 0, 0, 1], scores)
    # positives 95, 40 vs negatives 10, 55: pairs won 95>10, 95>55, 40>10; lost 40<55 -> 3/4
    assert m["auc"] == pytest.approx(0.75)
    assert m["roc"][0] == [0.0, 0.0] and m["roc"][-1] == [1.0, 1.0]


def test_fleiss_kappa_by_hand():
    # 4 cases x 3 readers.  counts (not, frac): (3,0) (0,3) (2,1) (1,2)
    ratings = np.array([[0, 0, 0], [1, 1, 1], [0, 0, 1], [1, 0, 1]] * 2)
    # P_i: 1, 1, (4+1-3)/6 = 1/3, 1/3 (twice) -> P_bar = 2/3; p_j = (12/24, 12/24) -> P_e = 0.5 -> kappa = 1/3
    assert fleiss_kappa(ratings) == pytest.approx(1 / 3)
    assert fleiss_kappa(np.array([[1, 1], [0, 0]] * 3)) == pytest.approx(1.0)
    assert fleiss_kappa(np.array([[1, 1]] * 6)) is None  # everyone says the same: undefined
    assert fleiss_kappa(np.array([[1], [0]] * 3)) is None  # one reader
    assert fleiss_kappa(np.array([[1, 1], [0, 0]])) is None  # 2 cases: under MIN_KAPPA_CASES


def test_fleiss_equals_cohen_like_agreement_for_perfect_disagreement():
    assert fleiss_kappa(np.array([[0, 1], [1, 0], [0, 1], [1, 0], [0, 1], [1, 0]])) == pytest.approx(-1.0)


PIN = "4711"


@pytest.fixture
def session_root(tmp_path):
    return tmp_path / "studies"


def _fake_gallery(monkeypatch, tmp_path):
    """A three-case gallery of generated images (the real one needs the shipped files)."""
    from PIL import Image

    from fracture.data import gallery as gallery_mod
    from fracture.data.gallery import GalleryItem

    items = []
    for i, label in enumerate([1, 0, 1, 0]):
        path = tmp_path / f"img{i}.png"
        Image.fromarray((np.random.default_rng(i).random((64, 48)) * 255).astype(np.uint8)).save(path)
        boxes = ((0.2, 0.2, 0.5, 0.5),) if label else ()
        items.append(GalleryItem(path=path, label=label, body_part="hand", boxes=boxes, source_id=f"IMG{i}.jpg"))
    monkeypatch.setattr(gallery_mod, "load_gallery", lambda folder=None: items)


def test_session_round_trip_answers_and_summary(monkeypatch, tmp_path, session_root):
    _fake_gallery(monkeypatch, tmp_path)
    session = create_session(pin=PIN, source="gallery", n_cases=4, seed=3, root=session_root)
    assert len(session.code) == 6
    assert sorted(c.label for c in session.cases) == [0, 0, 1, 1]  # balanced
    again = load_session(session.code.lower(), session_root)  # codes are case-insensitive
    assert again.to_dict() == session.to_dict()
    cases = session.cases
    for case in cases:
        save_answer(session.code, "Ada", case.case_id, fractured=bool(case.label), confidence=80, root=session_root)
    wrong = cases[0]
    save_answer(session.code, "Bob", wrong.case_id, fractured=not wrong.label, confidence=30, root=session_root)
    save_answer(session.code, "Bob", wrong.case_id, fractured=bool(wrong.label), confidence=60, root=session_root)  # re-read
    answers = load_answers(session.code, session_root)
    assert set(answers) == {"Ada", "Bob"}
    assert answers["Bob"][wrong.case_id].confidence == 60
    ada = reader_summary(session, answers["Ada"])
    assert ada["answered"] == 4 and ada["missed"] == []
    assert ada["metrics"]["sensitivity"] == 1.0
    assert ada["metrics"]["kappa_truth"] is None  # 4 cases: kappa is not shown under MIN_KAPPA_CASES
    summary = session_summary(session, session_root)
    assert [r["reader"] for r in summary["readers"]] == ["Ada", "Bob"]
    assert summary["finished"] == ["Ada"] and summary["unfinished"] == ["Bob"]
    assert summary["fleiss_kappa"] is None and summary["fleiss_readers"] == 1  # Bob has not finished


def test_bad_inputs_are_typed_errors(monkeypatch, tmp_path, session_root):
    _fake_gallery(monkeypatch, tmp_path)
    session = create_session(pin=PIN, source="gallery", n_cases=2, seed=0, root=session_root)
    case_id = session.cases[0].case_id
    with pytest.raises(ReaderStudyError, match="confidence"):
        save_answer(session.code, "Ada", case_id, fractured=True, confidence=101, root=session_root)
    with pytest.raises(ReaderStudyError, match="reader name"):
        save_answer(session.code, "   ", case_id, fractured=True, confidence=50, root=session_root)
    with pytest.raises(ReaderStudyError, match="no case"):
        save_answer(session.code, "Ada", "case999", fractured=True, confidence=50, root=session_root)
    with pytest.raises(ReaderStudyError, match="session code"):
        load_session("../../etc", session_root)
    with pytest.raises(ReaderStudyError, match="no session with code ABCDEF") as caught:
        load_session("ABCDEF", session_root)
    assert str(session_root) not in str(caught.value)  # a wrong code never shows a server path
    # a reader name cannot steer the file outside the session folder
    save_answer(session.code, "../../evil", case_id, fractured=True, confidence=50, root=session_root)
    files = list((session_root / session.code / "readers").glob("*.json"))
    assert len(files) == 1 and files[0].parent == session_root / session.code / "readers"


def test_csv_export_rows_and_no_overwrite(monkeypatch, tmp_path, session_root):
    _fake_gallery(monkeypatch, tmp_path)
    session = create_session(pin=PIN, source="gallery", n_cases=2, seed=1, root=session_root)
    for case in session.cases:
        save_answer(session.code, "Ada", case.case_id, fractured=True, confidence=70, root=session_root)
    rows = list(csv.DictReader(io.StringIO(export_csv_bytes(session, session_root).decode())))
    assert len(rows) == 2
    assert {r["reader"] for r in rows} == {"Ada"}
    for row in rows:
        case = session.case(row["case_id"])
        assert int(row["truth"]) == case.label
        assert int(row["correct"]) == int(case.label == 1)
        assert float(row["reader_score"]) == 85.0
    out = tmp_path / "export.csv"
    export_csv(session, out, session_root)
    with pytest.raises(ReaderStudyError, match="exists"):
        export_csv(session, out, session_root)
    # the CLI writes the same file
    out2 = tmp_path / "cli.csv"
    assert cli_main(["reader-study", "export", session.code, "--out", str(out2), "--dir", str(session_root)]) == 0
    assert out2.read_bytes() == out.read_bytes()


def test_cli_summary_json(monkeypatch, tmp_path, session_root, capsys):
    _fake_gallery(monkeypatch, tmp_path)
    session = create_session(pin=PIN, source="gallery", n_cases=2, seed=1, root=session_root)
    save_answer(session.code, "Ada", session.cases[0].case_id, fractured=True, confidence=70, root=session_root)
    assert cli_main(["reader-study", "summary", session.code, "--json", "--dir", str(session_root)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["code"] == session.code and data["readers"][0]["answered"] == 1
    assert cli_main(["reader-study", "summary", "NOPE!!", "--dir", str(session_root)]) == 2
    assert "session code" in capsys.readouterr().err


# ---------------------------------------------------------------- classroom: PIN, names, order, clicks, hostile files


def _six_case_session(monkeypatch, tmp_path, session_root):
    """Six cases (3 fractured with a box) from a generated gallery, model hits set by hand for the scoring tests."""
    from PIL import Image

    from fracture.data import gallery as gallery_mod
    from fracture.data.gallery import GalleryItem

    items = []
    for i, label in enumerate([1, 0, 1, 0, 1, 0]):
        path = tmp_path / f"six{i}.png"
        Image.fromarray((np.random.default_rng(i).random((100, 200)) * 255).astype(np.uint8)).save(path)
        boxes = ((0.5, 0.4, 0.7, 0.6),) if label else ()
        items.append(GalleryItem(path=path, label=label, body_part="hand", boxes=boxes, source_id=f"S{i}.jpg"))
    monkeypatch.setattr(gallery_mod, "load_gallery", lambda folder=None: items)
    return create_session(pin=PIN, source="gallery", n_cases=6, seed=5, root=session_root)


def test_pin_is_needed_and_checked(monkeypatch, tmp_path, session_root):
    from fracture.reader_study import check_pin

    _fake_gallery(monkeypatch, tmp_path)
    with pytest.raises(ReaderStudyError, match="PIN"):
        create_session(pin="12", source="gallery", n_cases=2, root=session_root)
    session = create_session(pin=" 4711 ", source="gallery", n_cases=2, root=session_root)
    stored = (session_root / session.code / "session.json").read_text()
    assert "4711" not in stored  # only a salted hash is kept
    check_pin(load_session(session.code, session_root), "4711")
    for wrong in ("", "4712", "47111"):
        with pytest.raises(ReaderStudyError, match="PIN"):
            check_pin(session, wrong)


def test_five_wrong_pins_in_five_minutes_lock_the_instructor_view(monkeypatch, tmp_path, session_root):
    from fracture.reader_study import PinLockedError, WrongPinError, open_instructor_view
    from fracture.reader_study.pin_lock import MAX_WRONG, WINDOW_S

    _fake_gallery(monkeypatch, tmp_path)
    session = create_session(pin="4711", source="gallery", n_cases=2, root=session_root)
    t0 = 1_000_000.0
    with pytest.raises(ReaderStudyError, match="enter the instructor PIN"):
        open_instructor_view(session, "", now=t0, root=session_root)  # an empty box is not a try
    for i in range(MAX_WRONG - 1):
        with pytest.raises(WrongPinError, match=f"{MAX_WRONG - 1 - i} tr"):
            open_instructor_view(session, "1111", now=t0 + i, root=session_root)
    open_instructor_view(session, "4711", now=t0 + 10, root=session_root)  # the right PIN clears the count
    for i in range(MAX_WRONG - 1):
        with pytest.raises(WrongPinError):
            open_instructor_view(session, "1111", now=t0 + 20 + i, root=session_root)
    with pytest.raises(PinLockedError, match="locked. Wait 5 min 0 s"):
        open_instructor_view(session, "2222", now=t0 + 30, root=session_root)  # the fifth
    with pytest.raises(PinLockedError, match=r"Wait 4 min 40 s") as locked:  # the right PIN waits too
        open_instructor_view(session, "4711", now=t0 + 40, root=session_root)
    assert locked.value.retry_after_s == pytest.approx(WINDOW_S - 20)
    # the oldest wrong try (t0 + 20) leaves the window: four remain, one more try is allowed
    open_instructor_view(session, "4711", now=t0 + 20 + WINDOW_S, root=session_root)
    assert json.loads((session_root / session.code / "wrong_pins.json").read_text()) == {"wrong": []}
    # a damaged record counts nothing and crashes nothing
    (session_root / session.code / "wrong_pins.json").write_text("{" * 10_000)
    open_instructor_view(session, "4711", now=t0, root=session_root)


def test_names_are_case_insensitive_and_a_taken_name_asks_first(monkeypatch, tmp_path, session_root):
    from fracture.reader_study import ReaderNameTaken, claim_reader, find_reader

    session = _six_case_session(monkeypatch, tmp_path, session_root)
    carol = claim_reader(session, "Carol", root=session_root)
    assert carol.token and sorted(carol.order) == sorted(session.case_ids)
    case_id = carol.order[0]
    save_answer(session.code, "carol", case_id, fractured=True, confidence=75, token=carol.token, root=session_root)
    found = find_reader(session, "CAROL", root=session_root)
    assert found.name == "Carol" and set(found.answers) == {case_id} and found.order == carol.order
    with pytest.raises(ReaderNameTaken, match="already taken"):
        claim_reader(session, "carol", root=session_root)  # a second student typing the same name
    with pytest.raises(ReaderNameTaken):
        save_answer(session.code, "carol", case_id, fractured=False, confidence=0, token="not-hers", root=session_root)
    joined = claim_reader(session, "CAROL", join=True, root=session_root)  # "yes, that's me"
    assert joined.token == carol.token
    assert len(list((session_root / session.code / "readers").glob("*.json"))) == 1


def test_each_reader_gets_a_recorded_order_of_their_own(monkeypatch, tmp_path, session_root):
    from fracture.reader_study import claim_reader, reader_order

    session = _six_case_session(monkeypatch, tmp_path, session_root)
    orders = {name: reader_order(session, name) for name in ("Ada", "Bob", "Cy", "Di")}
    assert all(sorted(o) == sorted(session.case_ids) for o in orders.values())
    assert len({tuple(o) for o in orders.values()}) > 1  # not everyone sees the same order
    assert reader_order(session, "ada") == orders["Ada"]  # seeded by the case-folded name: stable
    claim_reader(session, "Ada", root=session_root)
    data = json.loads(next((session_root / session.code / "readers").glob("*.json")).read_text())
    assert data["order"] == orders["Ada"]


def test_fleiss_kappa_ignores_unfinished_readers(monkeypatch, tmp_path, session_root):
    session = _six_case_session(monkeypatch, tmp_path, session_root)
    for case in session.cases:
        save_answer(session.code, "Ada", case.case_id, fractured=True, confidence=100, root=session_root)
        save_answer(session.code, "Bob", case.case_id, fractured=False, confidence=100, root=session_root)
    save_answer(session.code, "Cy", session.cases[0].case_id, fractured=True, confidence=50, root=session_root)
    summary = session_summary(session, session_root)
    assert summary["finished"] == ["Ada", "Bob"] and summary["unfinished"] == ["Cy"]
    assert summary["fleiss_kappa"] == pytest.approx(-1.0) and summary["fleiss_readers"] == 2
    cy = next(r for r in summary["readers"] if r["reader"] == "Cy")
    assert cy["answered"] == 1 and cy["kappa_truth"] is None  # one case: no kappa, not 1.0


def test_a_click_is_scored_with_the_models_pointing_game(monkeypatch, tmp_path, session_root):
    from fracture.evaluate.localisation import MARGIN, score_heatmap
    from fracture.reader_study import Mark, localisation_summary, score_mark

    box = (0.5, 0.4, 0.7, 0.6)
    hw = (100, 200)
    assert score_mark(Mark(0, 0.6, 0.5), [box], hw).hit  # in the box
    assert score_mark(Mark(0, 0.5 - MARGIN / 2, 0.5), [box], hw).hit  # in the 5% margin
    assert not score_mark(Mark(0, 0.5 - 2 * MARGIN, 0.5), [box], hw).hit  # beyond it
    assert not score_mark(Mark(0, 0.1, 0.1), [box], hw).hit
    # the same verdict as a model heatmap peaking at that point on the letterboxed input
    size = 64
    heat = np.zeros((size, size))
    heat[int((0.25 + 0.5 * 0.5) * size), int(0.6 * size)] = 1.0  # 200x100 letterboxed: rows 0.25-0.75
    assert score_heatmap(heat, [box], hw).hit == score_mark(Mark(0, 0.6, 0.5), [box], hw).hit

    session = _six_case_session(monkeypatch, tmp_path, session_root)
    boxed = [c for c in session.cases if c.has_box]
    assert len(boxed) == 3 and all(c.sizes == ((100, 200),) for c in session.cases)
    answers_in = {boxed[0].case_id: Mark(0, 0.6, 0.5), boxed[1].case_id: Mark(0, 0.05, 0.05), boxed[2].case_id: None}
    for case_id, mark in answers_in.items():
        save_answer(session.code, "Ada", case_id, fractured=True, confidence=80, mark=mark, root=session_root)
    answers = load_answers(session.code, session_root)["Ada"]
    loc = localisation_summary(session.cases, answers)
    assert (loc["cases"], loc["marked"], loc["hits"]) == (3, 2, 1)  # no click on a fractured case is a miss
    assert loc["rate"] == pytest.approx(1 / 3)
    with pytest.raises(ReaderStudyError, match="0 to 1"):
        save_answer(session.code, "Ada", boxed[0].case_id, fractured=True, confidence=80, mark=Mark(0, 1.5, 0.5),
                    root=session_root)


def test_hostile_reader_files_never_crash_and_are_reported(monkeypatch, tmp_path, session_root):
    session = _six_case_session(monkeypatch, tmp_path, session_root)
    first = session.cases[0].case_id
    save_answer(session.code, "Ada", first, fractured=True, confidence=70, root=session_root)
    readers = session_root / session.code / "readers"
    (readers / "deep-0000000000.json").write_text("[" * 100_000 + "]" * 100_000)
    (readers / "huge-0000000001.json").write_text(
        json.dumps({"reader": "Huge", "answers": {first: {"fractured": True, "confidence": 50}}}).replace("50", "1e999"))
    (readers / "digits-000000002.json").write_text('{"reader": "Dig", "answers": {}, "x": ' + "9" * 5000 + "}")
    bad_answers = {
        first: {"case_id": first, "fractured": "no", "confidence": 50},
        session.cases[1].case_id: {"case_id": "x", "fractured": False, "confidence": 100000},
        session.cases[2].case_id: {"case_id": "x", "fractured": False, "confidence": 40},
        "case999": {"case_id": "case999", "fractured": True, "confidence": 10},
    }
    (readers / "eve-0000000003.json").write_text(json.dumps({"reader": "Eve", "answers": bad_answers}))
    from fracture.reader_study import load_readers

    found = load_readers(session, session_root)
    assert set(found.readers) == {"Ada", "Eve"}
    assert list(found.readers["Eve"].answers) == [session.cases[2].case_id]  # only the valid answer is kept
    assert len(found.problems) == 3 and all(p.startswith("readers/") for p in found.problems)
    assert any("case999" in n for n in found.notes) and any("true/false" in n for n in found.notes)
    assert any("0 to 100" in n for n in found.notes)
    summary = session_summary(session, session_root)
    assert summary["problems"] == found.problems
    assert str(session_root) not in " ".join(summary["problems"] + summary["notes"])
    export_csv_bytes(session, session_root)  # no crash either
    # a damaged session file: a typed error naming the code, not the server path
    (session_root / session.code / "session.json").write_text("{" * 100_000)
    with pytest.raises(ReaderStudyError, match=f"session {session.code} cannot be read") as caught:
        load_session(session.code, session_root)
    assert str(session_root) not in str(caught.value)


def test_csv_export_is_injection_safe(monkeypatch, tmp_path, session_root):
    import pandas as pd

    session = _six_case_session(monkeypatch, tmp_path, session_root)
    names = ["=cmd|' /C calc'!A0", "@SUM(1+1)", "+HYPERLINK(\"x\")", "-2+3", "Plain, \"quoted\""]
    for name in names:
        for case in session.cases[:2]:
            save_answer(session.code, name, case.case_id, fractured=True, confidence=60, root=session_root)
    data = export_csv_bytes(session, session_root).decode()
    rows = list(csv.DictReader(io.StringIO(data)))
    frame = pd.read_csv(io.StringIO(data))
    assert len(rows) == len(frame) == 2 * len(names)
    readers = {r["reader"] for r in rows}
    assert readers == {"'" + n if n[0] in "=+-@" else n for n in names}
    assert not any(cell.startswith(("=", "+", "@")) for row in rows for cell in row.values() if cell)
