"""torchrun: two CPU processes (gloo) train one run, as one process would.

Every rank walks the same epoch order and augmentation draws and steps on its
half of each global batch, so the two runs see the same data. They are not
bit-identical: BatchNorm normalises each rank's half-batch with that half's
statistics, and DDP averages the two halves' gradients. The stated tolerance:
per-epoch train and validation loss within 5% (relative) of the single-process
run, and test probabilities within 0.05.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from fracture.train import TrainConfig, read_events, run_status
from fracture.train.trainer import train

REPO = Path(__file__).resolve().parents[2]
FLAGS = dict(model="small_cnn", image_size=32, epochs=2, batch_size=16, scheduler="none", device="cpu")
LOSS_RTOL = 0.05
PROB_ATOL = 0.05


def _epochs(run_dir: Path) -> list[dict]:
    return [e for e in read_events(run_dir) if e["event"] == "epoch_end"]


@pytest.mark.slow
def test_two_gloo_processes_write_one_run_that_matches_one_process(demo_root, tmp_path):
    cache = tmp_path / "cache"
    single = tmp_path / "single"
    # In this process: the single-process reference, which also builds the image cache both runs read.
    train(TrainConfig(data=str(demo_root), cache_dir=str(cache), **FLAGS), single)

    run_dir = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "fracture", "train", "--data", str(demo_root), "--out", str(run_dir), "--cache-dir", str(cache)]
    for key, value in FLAGS.items():
        cmd += ["--" + key.replace("_", "-"), str(value)]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    # One checkpoint, one coherent event log written by rank 0 alone.
    assert sorted(p.name for p in run_dir.glob("*.safetensors")) == ["best.safetensors"]
    kinds = [e["event"] for e in read_events(run_dir)]
    assert kinds.count("run_started") == 1 and kinds.count("finished") == 1 and kinds[-1] == "finished"
    started = next(e for e in read_events(run_dir) if e["event"] == "run_started")
    assert started["world_size"] == 2
    assert [e["epoch"] for e in _epochs(run_dir)] == [0, 1]
    assert run_status(run_dir).state == "finished"
    assert not list(run_dir.glob("*.tmp")) and not list(run_dir.glob(".*.tmp"))

    # The same training, within the stated tolerance.
    for one, two in zip(_epochs(single), _epochs(run_dir)):
        for key in ("train_loss", "val_loss"):
            assert two[key] == pytest.approx(one[key], rel=LOSS_RTOL), (key, one[key], two[key])
    probs_one = pd.read_csv(single / "predictions_test.csv")
    probs_two = pd.read_csv(run_dir / "predictions_test.csv")
    assert list(probs_one["path"]) == list(probs_two["path"])
    assert (probs_one["prob"] - probs_two["prob"]).abs().max() < PROB_ATOL
