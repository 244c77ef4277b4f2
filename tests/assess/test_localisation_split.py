"""A checkpoint's localisation on a split (fracture.assess.localisation): scored through its scorer, cached."""
from __future__ import annotations

import pytest

from fracture.assess.localisation import split_localisation
from fracture.evaluate.localisation import positives_with_boxes


# ---------------------------------------------------------------- end to end on the demo set
@pytest.mark.slow
def test_split_localisation_on_demo_boxes_is_cached(demo_root, tmp_path, monkeypatch):
    from fracture.bench.predict_latency import make_bench_checkpoint
    from fracture.data import open_dataset

    manifest = open_dataset(demo_root)
    positives = positives_with_boxes(manifest.subset("test"))
    if positives.empty:
        pytest.skip("the demo set's test split has no positive with a lesion box")
    checkpoint = make_bench_checkpoint(tmp_path / "small.safetensors", "small_cnn", 64)
    block = split_localisation(checkpoint, demo_root, "test", cache_dir=tmp_path / "cache", device="cpu")
    assert block["n"] == len(positives) and block["n_unreadable"] == 0
    assert 0.0 <= block["pointing_hit"] <= 1.0 and 0.0 <= block["mass_in_box"] <= 1.0
    assert 0.0 < block["box_area"] < 1.0
    assert "Grad-CAM @ final" in block["method"] and "5%" in block["method"]
    # Second call: from the cache, no model loaded.
    import fracture.checkpoints.format as checkpoint_module

    monkeypatch.setattr(checkpoint_module, "load_checkpoint", lambda *a, **k: pytest.fail("not cached"))
    again = split_localisation(checkpoint, demo_root, "test", cache_dir=tmp_path / "cache", device="cpu")
    assert again == block
    # No boxes anywhere -> no block.
    assert split_localisation(checkpoint, demo_root, "test", manifest=_without_boxes(manifest),
                              cache_dir=tmp_path / "cache") is None


def _without_boxes(manifest):
    import dataclasses

    frame = manifest.frame.copy()
    frame["boxes"] = [()] * len(frame)
    return dataclasses.replace(manifest, frame=frame)


