"""Writers never destroy what they did not create: ``train --out`` refuses a folder holding files from
elsewhere (digests unchanged), an existing file as ``--out`` is one typed line, the launcher's own
config.json is still accepted."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from fracture.cli import main
from fracture.errors import TrainingError
from fracture.train.run_lock import LOCK_FILE, START_FILES, claim_run_dir


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _train_args(out: Path, tmp_path: Path) -> list[str]:
    return ["train", "--out", str(out), "--data", str(tmp_path / "no-data"), "--model", "small_cnn", "--epochs", "1"]


def test_train_out_refuses_a_folder_with_files_it_did_not_write(tmp_path, capsys):
    out = tmp_path / "project"
    out.mkdir()
    (out / "config.json").write_text('{"mine": "an unrelated experiment"}')
    (out / "metrics.json").write_text('{"auc": 0.91}')
    (out / "predictions_test.csv").write_text("path,prob\na.png,0.3\n")
    before = _digests(out)
    assert main(_train_args(out, tmp_path)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    assert "did not write (config.json, metrics.json, predictions_test.csv)" in err[0] and str(out) in err[0]
    assert _digests(out) == before and sorted(os.listdir(out)) == sorted(before)  # no lock or pid left


@pytest.mark.parametrize("kind", ["file", "below_a_file"])
def test_train_out_on_a_file_is_one_typed_line(tmp_path, capsys, kind):
    existing = tmp_path / "notes.txt"
    existing.write_text("keep me")
    out = existing if kind == "file" else existing / "run"
    assert main(_train_args(out, tmp_path)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0] and str(out) in err[0]
    assert ("not a folder" if kind == "file" else "cannot create the run folder") in err[0]
    assert existing.read_text() == "keep me"


def test_claim_accepts_what_the_launcher_wrote_and_nothing_else(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for name in START_FILES - {LOCK_FILE}:
        (run / name).write_text("launcher")
    (run / "config.json").write_text("{}")
    with pytest.raises(TrainingError, match=r"did not write \(config.json\)"):
        claim_run_dir(run)
    with claim_run_dir(run, own_files={"config.json"}):  # the launcher's config, passed as --config
        with claim_run_dir(run):  # train() claims again inside: not re-checked
            (run / "events.jsonl").write_text("")
    (tmp_path / "empty").mkdir()
    claim_run_dir(tmp_path / "empty").release()
    claim_run_dir(tmp_path / "new" / "deeper").release()  # created
    assert not (tmp_path / "empty" / LOCK_FILE).exists()


def test_the_launcher_files_are_the_ones_start_files_names():
    from fracture.train.events import PID_FILE
    from fracture.train.launcher import STDOUT_FILE

    assert {STDOUT_FILE, PID_FILE, LOCK_FILE} == set(START_FILES)
