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
    ratings = np.array([[0, 0, 0], [1, 1, 1], [0, 0, 1], [1, 0, 1]])
    # P_i: 1, 1, (4+1-3)/6 = 1/3, 1/3 -> P_bar = 2/3; p_j = (6/12, 6/12) -> P_e = 0.5 -> kappa = 1/3
    assert fleiss_kappa(ratings) == pytest.approx(1 / 3)
    assert fleiss_kappa(np.array([[1, 1], [0, 0]])) == pytest.approx(1.0)
    assert fleiss_kappa(np.array([[1, 1], [1, 1]])) is None  # everyone says the same: undefined
    assert fleiss_kappa(np.array([[1], [0]])) is None  # one reader


def test_fleiss_equals_cohen_like_agreement_for_perfect_disagreement():
    assert fleiss_kappa(np.array([[0, 1], [1, 0], [0, 1], [1, 0]])) == pytest.approx(-1.0)


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
    session = create_session(source="gallery", n_cases=4, seed=3, root=session_root)
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
    assert ada["metrics"]["sensitivity"] == 1.0 and ada["metrics"]["kappa_truth"] == pytest.approx(1.0)
    summary = session_summary(session, session_root)
    assert [r["reader"] for r in summary["readers"]] == ["Ada", "Bob"]
    assert summary["fleiss_cases"] == 1  # only the case both answered


def test_bad_inputs_are_typed_errors(monkeypatch, tmp_path, session_root):
    _fake_gallery(monkeypatch, tmp_path)
    session = create_session(source="gallery", n_cases=2, seed=0, root=session_root)
    case_id = session.cases[0].case_id
    with pytest.raises(ReaderStudyError, match="confidence"):
        save_answer(session.code, "Ada", case_id, fractured=True, confidence=101, root=session_root)
    with pytest.raises(ReaderStudyError, match="reader name"):
        save_answer(session.code, "   ", case_id, fractured=True, confidence=50, root=session_root)
    with pytest.raises(ReaderStudyError, match="no case"):
        save_answer(session.code, "Ada", "case999", fractured=True, confidence=50, root=session_root)
    with pytest.raises(ReaderStudyError, match="session code"):
        load_session("../../etc", session_root)
    with pytest.raises(ReaderStudyError, match="no such"):
        load_session("ABCDEF", session_root)
    # a reader name cannot steer the file outside the session folder
    save_answer(session.code, "../../evil", case_id, fractured=True, confidence=50, root=session_root)
    files = list((session_root / session.code / "readers").glob("*.json"))
    assert len(files) == 1 and files[0].parent == session_root / session.code / "readers"


def test_csv_export_rows_and_no_overwrite(monkeypatch, tmp_path, session_root):
    _fake_gallery(monkeypatch, tmp_path)
    session = create_session(source="gallery", n_cases=2, seed=1, root=session_root)
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
    session = create_session(source="gallery", n_cases=2, seed=1, root=session_root)
    save_answer(session.code, "Ada", session.cases[0].case_id, fractured=True, confidence=70, root=session_root)
    assert cli_main(["reader-study", "summary", session.code, "--json", "--dir", str(session_root)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["code"] == session.code and data["readers"][0]["answered"] == 1
    assert cli_main(["reader-study", "summary", "NOPE!!", "--dir", str(session_root)]) == 2
    assert "session code" in capsys.readouterr().err
