"""Benchmark suite: timing helpers, the benchmark subset, the data path it times, a quick run."""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch

from fracture.bench.data import prepare_bench_data
from fracture.bench.timing import interleaved, summarize
from fracture.data import open_dataset
from fracture.serve.inference import normalize_batch, uint8_to_tensor


def test_interleaved_skips_warmup_and_alternates_contenders():
    calls = []
    samples = interleaved(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=2
    )
    assert calls == ["a", "a", "b", "b"] + ["a", "b"] * 3
    assert {name: len(values) for name, values in samples.items()} == {"a": 3, "b": 3}
    assert all(value >= 0 for values in samples.values() for value in values)
    with pytest.raises(ValueError):
        interleaved({"a": lambda: None}, repeats=0)


def test_summarize_reports_the_median_rate():
    summary = summarize([2.0, 1.0, 4.0], items=10)
    assert summary["median_s"] == 2.0
    assert summary["items_per_s"] == pytest.approx(5.0)
    assert summary["seconds"] == [2.0, 1.0, 4.0]


def test_bench_subset_links_images_and_keeps_labels(demo_root, tmp_path):
    data = prepare_bench_data(tmp_path, data=demo_root, max_images=30)
    assert data.source == "demo" and 0 < len(data.paths) <= 32
    for path in data.paths:
        assert os.path.isfile(path) and not os.path.islink(path)
    manifest = open_dataset(data.root)
    assert sorted(manifest.frame["path"]) == sorted(data.paths)
    inode = lambda p: (os.stat(p).st_dev, os.stat(p).st_ino)  # noqa: E731  (a hard link shares its source's)
    source = {inode(p): label for p, label in open_dataset(demo_root).frame[["path", "label"]].itertuples(index=False)}
    for row in manifest.frame.itertuples():
        assert source[inode(row.path)] == row.label
    assert set(manifest.subset("train")["label"]) == {0, 1}
    assert len(manifest.subset("val")) > 0


def test_uint8_to_tensor_converts_a_tensor_like_the_array():
    images = np.random.default_rng(0).integers(0, 256, (3, 9, 7, 1), dtype=np.uint8)
    from_array = uint8_to_tensor(images, 3)
    from_tensor = uint8_to_tensor(torch.from_numpy(images), 3)
    assert from_array.shape == (3, 3, 9, 7) and from_array.dtype == torch.float32
    assert torch.equal(from_array, from_tensor)


def test_normalize_batch_matches_the_formula_for_3_and_1_channels():
    batch = torch.rand(2, 3, 4, 4)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    expected = (batch - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(normalize_batch(batch, mean, std), expected)
    assert torch.allclose(normalize_batch(batch, list(mean), list(std)), expected)  # cached per values
    gray = batch[:, :1]
    expected_gray = (gray - torch.tensor(mean).mean()) / torch.tensor(std).mean()
    assert torch.allclose(normalize_batch(gray, mean, std), expected_gray)


def test_trainer_fetch_reads_cached_pixels_in_the_order_asked(demo_root, tmp_path):
    from fracture.bench.harness import build_trainer, model_inputs
    from fracture.train import TrainConfig

    config = TrainConfig(
        data=str(demo_root), model="small_cnn", image_size=32, batch_size=4, scheduler="none",
        cache_dir=str(tmp_path / "cache"), device="cpu",
    )
    trainer = build_trainer(config, tmp_path / "run")
    split = trainer.data.splits["train"]
    positions = np.array([5, 0, 3, 3, len(split) - 1])
    images, labels, body, guide = trainer.fetch(positions)
    assert guide is None  # no box guidance in this config
    pixels = np.stack([trainer.data.cache[int(split.cache_pos[p])] for p in positions])
    # The prefetch thread only copies uint8 pixels; no torch kernels run there.
    assert images.dtype == torch.uint8
    assert np.array_equal(images.numpy(), pixels)
    assert labels.tolist() == split.labels[positions].tolist()
    assert body.tolist() == split.body[positions].tolist()
    # The loop then converts, augments and normalises them with the run's generator.
    state = trainer.augment.state_dict()
    inputs = model_inputs(trainer, images)
    trainer.augment.load_state_dict(state)
    expected = trainer.prepare_inputs(uint8_to_tensor(pixels, 3))  # same draws, same order
    assert inputs.shape == (5, 3, 32, 32)
    # Augmenting the stored gray channel, then repeating it, gives the same pixels
    # as augmenting three copies.
    assert torch.allclose(inputs, expected, atol=1e-6)


def test_quick_suite_prints_a_table_and_writes_the_four_ratios(demo_root, tmp_path, monkeypatch, capsys):
    from fracture.bench.__main__ import main
    from fracture.bench.suite import HEADLINE_RATIOS

    monkeypatch.setenv("FRACTURE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FRACTURE_CACHE_DIR", str(tmp_path / "outer-cache"))
    out = tmp_path / "bench.json"
    threads = torch.get_num_threads()
    assert main(["--quick", "--data", str(demo_root), "--out", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == str(out)
    assert any(line.startswith("train loop vs model step") for line in lines)
    results = json.loads(out.read_text())
    for name in HEADLINE_RATIOS:
        value = results[name]
        assert isinstance(value, float) and math.isfinite(value) and value > 0, (name, value)
    benchmarks = results["benchmarks"]
    assert len(benchmarks["train_loop"]["loop"]["seconds"]) == results["settings"]["repeats"] == 2
    assert benchmarks["train_loop"]["model"] == "small_cnn"
    assert benchmarks["frozen_epoch"]["warm_setup_s"] > 0
    assert benchmarks["cache_build"]["images"] == results["data"]["images"]
    if not torch.cuda.is_available():
        assert benchmarks["cuda_train"]["skipped"] and "CUDA" in benchmarks["cuda_train"]["reason"]
    # Everything the suite cached went to its own temporary folder, and settings came back.
    assert not (tmp_path / "outer-cache").exists()
    assert os.environ["FRACTURE_CACHE_DIR"] == str(tmp_path / "outer-cache")
    assert torch.get_num_threads() == threads
