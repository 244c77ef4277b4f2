"""Trainer: events, checkpoints, frozen features, cancel/resume, CLI, recipes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fracture.checkpoints.format import load_checkpoint, read_checkpoint_meta
from fracture.errors import ConfigError
from fracture.train import TrainConfig, read_events, run_status
from fracture.train.trainer import train

REPO = Path(__file__).resolve().parents[2]


def tiny_config(data: Path, tmp_path: Path, **overrides) -> TrainConfig:
    values = dict(
        data=str(data), model="small_cnn", image_size=64, epochs=2, batch_size=16, lr=3e-3,
        scheduler="none", cache_dir=str(tmp_path / "cache"), seed=0,
    )
    values.update(overrides)
    return TrainConfig(**values)


@pytest.mark.slow
def test_finetune_run_writes_events_config_and_a_loadable_checkpoint(demo_root, tmp_path):
    run_dir = tmp_path / "run"
    seen = []
    best = train(tiny_config(demo_root, tmp_path), run_dir, callback=seen.append)
    events = read_events(run_dir)
    kinds = [e["event"] for e in events]
    assert kinds[0] in ("log", "data_problem", "run_started")
    assert "run_started" in kinds and kinds[-1] == "finished"
    assert kinds.count("epoch_end") == 2
    assert "step" in kinds and "checkpoint_saved" in kinds
    assert [e["event"] for e in seen] == kinds  # the callback saw the same stream
    epoch_end = [e for e in events if e["event"] == "epoch_end"]
    for record in epoch_end:
        for key in ("train_loss", "val_loss", "val_accuracy", "val_roc_auc", "lr", "train_accuracy"):
            assert key in record
    step = next(e for e in events if e["event"] == "step")
    assert step["images_per_s"] > 0 and step["steps_per_epoch"] >= 1
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model"] == "small_cnn" and config["image_size"] == 64
    model, meta = load_checkpoint(best)
    assert meta["architecture"] == "small_cnn"
    assert 0.0 <= meta["threshold"] <= 1.0
    assert meta["preprocess"][-1]["op"] == "resize" and meta["preprocess"][-1]["size"] == 64
    assert set(meta["metrics"]) == {"val", "test"}
    assert meta["metrics"]["test"]["image"]["overall"]["n"] == meta["split_sizes"]["test"]["images"]
    assert (run_dir / "predictions_test.csv").is_file()
    assert run_status(run_dir).state == "finished"


@pytest.mark.slow
def test_frozen_mode_caches_features_between_runs(demo_root, tmp_path):
    # pretrained left unset: on, since EfficientNet-Lite0's ImageNet weights are installed offline
    config = tiny_config(demo_root, tmp_path, model="efficientnet_lite0", mode="frozen", epochs=3, lr=1e-2)
    train(config, tmp_path / "a")
    train(config, tmp_path / "b")
    first = [e.get("message", "") for e in read_events(tmp_path / "a") if e["event"] == "log"]
    second = [e.get("message", "") for e in read_events(tmp_path / "b") if e["event"] == "log"]
    assert any("extracted" in m for m in first)
    assert any("frozen features from cache" in m for m in second)
    assert not any("extracted" in m for m in second)


@pytest.mark.slow
def test_multitask_checkpoint_predicts_body_parts(demo_root, tmp_path):
    best = train(tiny_config(demo_root, tmp_path, multitask=True, epochs=1), tmp_path / "mt")
    model, meta = load_checkpoint(best)
    assert meta["multitask"] is True
    assert model.num_body_parts == len(meta["body_parts"]) == 7


@pytest.mark.slow
def test_stop_then_resume_finishes_the_run(demo_root, tmp_path):
    stop = threading.Event()
    run_dir = tmp_path / "stop"

    def stop_after_first_epoch(event):
        if event["event"] == "epoch_end":
            stop.set()

    config = tiny_config(demo_root, tmp_path, epochs=3)
    train(config, run_dir, callback=stop_after_first_epoch, stop_event=stop)
    assert run_status(run_dir).state == "cancelled"
    assert (run_dir / "best.safetensors").is_file()
    train(TrainConfig.from_json(run_dir / "config.json"), run_dir, resume=True)
    events = read_events(run_dir)
    assert [e["epoch"] for e in events if e["event"] == "epoch_end"] == [0, 1, 2]
    assert events[-1]["event"] == "finished"


def _final_weights(run_dir: Path) -> dict:
    import torch

    return torch.load(run_dir / "resume_state.pt", weights_only=True)["model"]


@pytest.mark.slow
def test_resume_reproduces_an_uninterrupted_run_exactly(demo_root, tmp_path):
    """Stop after epoch 1 of 3 and resume: the same weights and metrics, bit for bit (CPU).

    Dropout (torch RNG), augmentation, the epoch order and a per-step
    schedule all draw random numbers or keep state across epochs; every one
    of them is in the resume state.
    """
    import torch

    config = tiny_config(demo_root, tmp_path, image_size=32, epochs=3, scheduler="cosine_restarts",
                         restart_period=1, device="cpu", eval_test=False)
    train(config, tmp_path / "whole")
    stop = threading.Event()
    run_dir = tmp_path / "resumed"
    train(config, run_dir, stop_event=stop,
          callback=lambda e: stop.set() if e["event"] == "epoch_end" else None)
    assert run_status(run_dir).state == "cancelled"
    train(TrainConfig.from_json(run_dir / "config.json"), run_dir, resume=True)

    whole, resumed = _final_weights(tmp_path / "whole"), _final_weights(run_dir)
    assert whole.keys() == resumed.keys()
    for name in whole:
        assert torch.equal(whole[name], resumed[name]), name
    keys = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_roc_auc", "lr")
    epochs = lambda d: [{k: e[k] for k in keys} for e in read_events(d) if e["event"] == "epoch_end"]  # noqa: E731
    assert epochs(run_dir) == epochs(tmp_path / "whole")
    assert len(epochs(run_dir)) == 3
    assert not list(run_dir.glob("*.tmp")) and not list(run_dir.glob(".*.tmp"))


def test_pretrained_defaults_on_where_offline_weights_exist_and_frozen_random_weights_are_refused():
    assert TrainConfig(data="x", model="efficientnet_lite0").validate().pretrained is True
    assert TrainConfig(data="x", model="small_cnn").validate().pretrained is False
    with pytest.raises(ConfigError, match="mode=frozen with random small_cnn weights.*--mode finetune"):
        TrainConfig(data="x", model="small_cnn", mode="frozen").validate()
    with pytest.raises(ConfigError, match="--pretrained"):
        TrainConfig(data="x", model="efficientnet_lite0", mode="frozen", pretrained=False).validate()


def test_runs_record_the_recipe_they_came_from_and_the_card_reruns_it(tmp_path):
    """A shipped recipe is recorded by name, a run's config.json keeps the recipe it records
    (the Train page launches with one), and the card's command reruns recipe plus changes."""
    from fracture.cli import build_parser
    from fracture.cli.train import config_from_args
    from fracture.recipes.catalogue import reproduce_command

    parse = lambda *argv: build_parser().parse_args(["train", "--out", str(tmp_path / "r"), *argv])  # noqa: E731
    recipe = REPO / "fracture" / "recipes" / "fracatlas_lite0_cpu.json"
    config = config_from_args(parse("--config", str(recipe), "--epochs", "3"))
    assert config.recipe == "fracatlas_lite0_cpu.json" and config.epochs == 3
    config.save(tmp_path / "config.json")
    assert config_from_args(parse("--config", str(tmp_path / "config.json"))).recipe == "fracatlas_lite0_cpu.json"
    assert reproduce_command(config.to_dict()) == (
        "python -m fracture train --config fracture/recipes/fracatlas_lite0_cpu.json --epochs 3 --out RUN_DIR"
    )
    plain = TrainConfig(data="somewhere", model="small_cnn", epochs=2, notes="x")
    assert reproduce_command(plain.to_dict()) == "python -m fracture train --data DATA --epochs 2 --out RUN_DIR"
    with pytest.raises(ConfigError, match="config.json is not a recipe"):
        TrainConfig(data="x", recipe="config.json").validate()


def test_invalid_config_names_the_field():
    with pytest.raises(ConfigError, match="scheduler"):
        TrainConfig(data="x", scheduler="sometimes").validate()
    with pytest.raises(ConfigError, match="unknown training option"):
        TrainConfig.from_dict({"data": "x", "learning_rate": 1})


def test_failed_run_is_recorded(tmp_path):
    run_dir = tmp_path / "bad"
    with pytest.raises(Exception):
        train(TrainConfig(data=str(tmp_path / "nowhere"), cache_dir=str(tmp_path / "c")), run_dir)
    last = read_events(run_dir)[-1]
    assert last["event"] == "failed" and "nowhere" in last["error"]


@pytest.mark.parametrize("recipe", sorted((REPO / "fracture" / "recipes").glob("*.json")), ids=lambda p: p.stem)
def test_recipes_are_valid_configs(recipe):
    config = TrainConfig.from_json(recipe)
    config.data = config.data or "DATA"  # a recipe may leave the dataset to --data
    config.validate()
    assert config.model and config.epochs >= 1


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["mura_b0_multitask.json", "mura_densenet169_320.json"])
def test_mura_recipes_run_on_the_demo_set(recipe, demo_root, tmp_path):
    config = TrainConfig.from_json(REPO / "fracture" / "recipes" / recipe)
    config.data = str(demo_root)
    config.epochs = 1
    config.pretrained = False  # no offline ImageNet weights for these in CI
    if config.mode == "frozen":  # frozen mode refuses random weights: give it a weights file (random, saved)
        import torch

        from fracture.models import create_model

        config.weights_path = str(tmp_path / "backbone.pth")
        torch.save(create_model(config.model).backbone.state_dict(), config.weights_path)
    config.image_size = 32
    config.batch_size = 16
    config.max_train_images = 24
    config.cache_dir = str(tmp_path / "cache")
    best = train(config, tmp_path / "run")
    meta = read_checkpoint_meta(best)
    assert meta["architecture"] == config.model
    assert meta["metrics"]["test"]["study"]["overall"]["n"] > 0


@pytest.mark.slow
def test_cli_train_and_sigterm_stop(demo_root, tmp_path):
    """The Train page's contract: a separate process, stopped by a signal, best checkpoint intact."""
    run_dir = tmp_path / "cli"
    env = dict(os.environ, FRACTURE_CACHE_DIR=str(tmp_path / "cache"), PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "fracture", "train", "--data", str(demo_root), "--out", str(run_dir),
           "--model", "small_cnn", "--image-size", "64", "--epochs", "50", "--batch-size", "8"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            if any(e["event"] == "epoch_end" for e in read_events(run_dir)):
                break
            assert proc.poll() is None, proc.stdout.read().decode()
            time.sleep(0.3)
        proc.terminate()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    events = read_events(run_dir)
    assert events[-1]["event"] == "cancelled"
    assert (run_dir / "best.safetensors").is_file()
    assert (run_dir / "resume_state.pt").is_file()


def test_one_class_val_split_and_tiny_onecycle_run_still_train(demo_root, tmp_path):
    """Tiny data: val with one class falls back to val_loss; one-cycle with few steps does not crash."""
    import pandas as pd

    from fracture.data import open_dataset

    manifest = open_dataset(demo_root)
    frame = manifest.frame
    # Keep one class in val: the one the demo draw put most images of there (a tiny carve can be all positive).
    kept_label = int(frame.loc[frame["split"] == "val", "label"].mode().iloc[0])
    keep = frame[(frame["split"] != "val") | (frame["label"] == kept_label)]
    folders = tmp_path / "folders"
    for split, sub in keep.groupby("split"):
        for _, row in sub.iterrows():
            target = folders / split / ("fractured" if row["label"] else "normal") / f"{Path(row['path']).parent.parent.name}_{Path(row['path']).parent.name}_{Path(row['path']).name}"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(Path(row["path"]).read_bytes())
    config = tiny_config(folders, tmp_path, epochs=1, scheduler="onecycle", batch_size=64)
    best = train(config, tmp_path / "run")
    messages = " ".join(e.get("message", "") for e in read_events(tmp_path / "run") if e["event"] == "log")
    assert "only one class" in messages
    assert read_checkpoint_meta(best)["threshold"] == 0.5
