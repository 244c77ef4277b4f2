"""Heatmap selection (fracture.assess.heatmap_select): every candidate scored on validation boxes, the best stored."""
from __future__ import annotations

import json

import pytest


SIZE = 64


def test_explain_select_on_demo_boxes_stores_the_choice(demo_root, tmp_path):
    from fracture.bench.predict_latency import make_bench_checkpoint
    from fracture.checkpoints.format import read_checkpoint_meta
    from fracture.cli import main
    from fracture.data import open_dataset
    from fracture.evaluate.localisation import positives_with_boxes

    if positives_with_boxes(open_dataset(demo_root).subset("val")).empty:
        pytest.skip("the demo set's val split has no positive with a lesion box")
    path = make_bench_checkpoint(tmp_path / "small.safetensors", "small_cnn", SIZE)
    before = read_checkpoint_meta(path)
    out = tmp_path / "ranking.json"
    assert main(["explain-select", "--checkpoint", str(path), "--data", str(demo_root),
                 "--methods", "gradcam", "layercam", "--layers", "final", "stride16", "--json", str(out)]) == 0
    ranking = json.loads(out.read_text())
    assert len(ranking["candidates"]) == 4
    hits = [c["pointing_hit"] for c in ranking["candidates"]]
    assert hits == sorted(hits, reverse=True)
    meta = read_checkpoint_meta(path)
    assert meta["explain"]["chosen_on"] == "val"
    assert meta["explain"]["method"] == ranking["candidates"][0]["method"]
    assert meta["explain"]["val_pointing_hit"] == pytest.approx(hits[0])
    for key in ("threshold", "preprocess", "normalization", "class_names", "notes"):
        assert meta[key] == before[key]


