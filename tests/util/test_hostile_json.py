"""Hostile JSON everywhere the app reads it: one guarded reader (fracture.util.jsonio) turns deep nesting,
5,000-digit integers, 1e999, NaN and non-UTF-8 bytes into one typed error naming the file, never a
RecursionError/ValueError/OverflowError traceback, in checkpoints, predictions caches, the cached ONNX
file's metadata and run folders."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from fracture.errors import CheckpointError, ConfigError, TrainingError
from fracture.util.jsonio import MAX_JSON_DEPTH, JsonFileError, parse_json, read_json

DEEP = "[" * 100_000 + "]" * 100_000
HUGE_INT = '{"a": ' + "9" * 5000 + "}"


@pytest.mark.parametrize(
    "text, problem",
    [
        (DEEP, "nested 100000 levels deep"),
        (HUGE_INT, "5000-digit number"),
        ('{"confidence": 1e999}', "too large to be finite"),
        ('{"x": NaN}', "NaN, which is not a finite number"),
        ('{"x": -Infinity}', "-Infinity"),
        (b'{"x": "\xff"}', "not UTF-8"),
        ('{"x": ', "not valid JSON"),
    ],
)
def test_every_hostile_text_is_one_typed_error_naming_the_file(text, problem):
    with pytest.raises(JsonFileError, match=problem) as info:
        parse_json(text, source="/x/session.json")
    assert str(info.value).startswith("/x/session.json: ")
    assert info.value.source == "/x/session.json" and problem.split(",")[0] in info.value.problem


def test_the_bounds_and_policies_are_the_callers():
    assert parse_json('{"a": [1, 2.5, "[[[{{"], "b": null}', source="f") == {"a": [1, 2.5, "[[[{{"], "b": None}
    nan, inf = parse_json("[NaN, 1e999]", source="f", nonfinite="allow")
    assert nan != nan and inf == float("inf")
    nested = "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1)
    with pytest.raises(JsonFileError, match="nested 65 levels"):
        parse_json(nested, source="f")
    assert parse_json(nested, source="f", max_depth=100)
    with pytest.raises(JsonFileError, match="is 2 KB, over the 100 bytes limit"):
        parse_json("[" + "1," * 1000 + "1]", source="f", max_bytes=100)
    with pytest.raises(CheckpointError, match="^f: the header is nested"):  # the caller's error type
        parse_json(DEEP, source="f", what="the header", error=CheckpointError)


def test_read_json_reads_regular_files_only(tmp_path):
    good = tmp_path / "good.json"
    good.write_text('{"ok": true}')
    assert read_json(good) == {"ok": True}
    with pytest.raises(FileNotFoundError):
        read_json(tmp_path / "missing.json")
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "fifo.json")
        with pytest.raises(JsonFileError, match="not a regular file"):
            read_json(tmp_path / "fifo.json")  # never blocks
    big = tmp_path / "big.json"
    big.write_text("[" + "0," * 600 + "0]")
    with pytest.raises(ConfigError, match="big.json.*over the"):
        read_json(big, max_bytes=1000, error=ConfigError)


# ------------------------------------------------------------------ checkpoints


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    from checkpoint_support import save_tiny_checkpoint

    return save_tiny_checkpoint(tmp_path_factory.mktemp("good") / "best.safetensors", threshold=0.4)


def _with_meta_text(good: Path, dst: Path, text: str) -> Path:
    from safetensors import safe_open
    from safetensors.torch import save_file

    from fracture.checkpoints.format import META_KEY

    with safe_open(str(good), framework="pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    save_file(tensors, str(dst), metadata={META_KEY: text})
    return dst


def test_a_5000_digit_integer_in_checkpoint_metadata_is_listed_not_raised(good, tmp_path):
    from fracture.checkpoints.format import META_KEY, read_checkpoint_meta
    from fracture.serve.predictor import list_checkpoints

    meta = json.loads(_raw_meta(good, META_KEY))
    text = json.dumps(meta)[:-1] + ', "notes": ' + "7" * 5000 + "}"
    weights, runs = tmp_path / "weights", tmp_path / "runs"
    weights.mkdir()
    (runs / "digits").mkdir(parents=True)
    bad = _with_meta_text(good, runs / "digits" / "best.safetensors", text)
    with pytest.raises(CheckpointError, match="5000-digit number") as info:
        read_checkpoint_meta(bad)
    assert str(bad) in str(info.value)
    (weights / "fine.safetensors").write_bytes(good.read_bytes())
    entries = {entry.name: entry for entry in list_checkpoints(weights, runs)}
    assert entries["fine"].ok and "5000-digit" in entries["digits"].error and entries["digits"].meta == {}


def _raw_meta(path: Path, key: str) -> str:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata()[key]


# ------------------------------------------------------------------ predictions cache, ONNX metadata


def test_a_hostile_predictions_cache_header_is_a_reason_to_rebuild(tmp_path):
    from fracture.assess.compare import read_prediction_cache

    frame = pd.DataFrame({"path": ["/a.png"], "label": [1]})
    for name, head in (("deep", DEEP), ("digits", HUGE_INT), ("inf", '{"format": 1e999}')):
        path = tmp_path / f"{name}.pred"
        path.write_bytes(head.encode() + b"\npath,label,prob\n/a.png,1,0.5\n")
        reason = read_prediction_cache(path, frame)
        assert isinstance(reason, str) and "CacheError" in reason and str(path) in reason


def test_hostile_onnx_metadata_is_a_checkpoint_error_naming_the_file(tmp_path):
    from fracture.serve.onnx_backend import OrtModel

    class Session:  # the metadata is read before the session is used
        def get_inputs(self):
            return []

        def get_outputs(self):
            return []

    cached = tmp_path / "cached.onnx"
    for metadata, problem in (({"fracture": DEEP}, "nested"), ({"tta_hflip": HUGE_INT}, "5000-digit")):
        with pytest.raises(CheckpointError, match=problem) as info:
            OrtModel(Session(), metadata, cached)
        assert str(cached) in str(info.value)
    assert OrtModel(Session(), {"fracture": '{"threshold": 0.5}'}, cached).meta == {"threshold": 0.5}


# ------------------------------------------------------------------ run folders


def test_hostile_run_folder_files_are_typed_errors_or_skipped(tmp_path):
    from fracture.recipes.config import TrainConfig
    from fracture.train.events import EVENTS_FILE, read_events
    from fracture.train.launcher import read_run_config

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(DEEP)
    with pytest.raises(TrainingError, match="config.json.*nested"):
        read_run_config(run)
    with pytest.raises(ConfigError, match="config.json.*nested"):
        TrainConfig.from_json(run / "config.json")
    (run / "config.json").write_text(HUGE_INT)
    with pytest.raises(ConfigError, match="5000-digit"):
        TrainConfig.from_json(run / "config.json")
    (run / "config.json").write_text("[1, 2]")
    with pytest.raises(TrainingError, match="not a JSON object"):
        read_run_config(run)
    good = json.dumps({"event": "run_started", "time": 1.0})
    (run / EVENTS_FILE).write_text("\n".join([good, DEEP, HUGE_INT, '{"event": "step", "loss": 1e999x}', good]) + "\n")
    assert [e["event"] for e in read_events(run)] == ["run_started", "run_started"]


def test_the_job_viewer_reads_a_hostile_config_as_the_default_mode(tmp_path):
    from fracture.ui.job_viewer import _run_mode

    (tmp_path / "config.json").write_text(DEEP)
    assert _run_mode(tmp_path) == "finetune"
    (tmp_path / "config.json").write_text('{"mode": "frozen"}')
    assert _run_mode(tmp_path) == "frozen"



def test_a_hostile_promotion_registry_or_localisation_cache_is_not_a_traceback(tmp_path, caplog):
    from fracture.checkpoints.promote import REGISTRY_NAME, promoted_names
    from fracture.assess.localisation import _read_cache

    (tmp_path / REGISTRY_NAME).write_text(DEEP)
    with caplog.at_level("WARNING"):
        assert promoted_names(tmp_path) == set()
    assert any("nested" in r.getMessage() for r in caplog.records)
    (tmp_path / REGISTRY_NAME).write_text('{"promoted": {"mine": {"source": "x"}}}')
    assert promoted_names(tmp_path) == {"mine"}
    cache = tmp_path / "loc.json"
    for text in (DEEP, HUGE_INT, "not json"):
        cache.write_text(text)
        assert _read_cache(cache) is None  # recomputed, with a warning
