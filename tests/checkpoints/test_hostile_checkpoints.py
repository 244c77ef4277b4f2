"""Hostile checkpoints and promotions: every bad file or name is a typed error naming the file and the
field, nothing is overwritten without an explicit overwrite, one broken checkpoint never breaks a listing."""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from checkpoint_support import tiny_meta
from fracture.checkpoints.format import (
    MAX_HEADER_BYTES,
    MAX_JSON_DEPTH,
    META_KEY,
    json_depth,
    load_checkpoint,
    read_checkpoint_meta,
    save_checkpoint,
)
from fracture.cli import main
from fracture.errors import CheckpointError
from fracture.models import create_model
from fracture.serve.predictor import list_checkpoints
from fracture.checkpoints.promote import (
    REGISTRY_NAME,
    card_path,
    promote_checkpoint,
    promoted_names,
    shipped_names,
    validate_checkpoint_name,
)


def _meta(**overrides) -> dict:
    return tiny_meta(**{"threshold": 0.4, "threshold_rule": "youden", **overrides})


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = create_model("small_cnn", in_chans=1)
    return save_checkpoint(tmp_path_factory.mktemp("good") / "best.safetensors", model, _meta())


def _with_meta(good: Path, dst: Path, text: str | None = None, **updates) -> Path:
    """A copy of ``good`` whose metadata is ``text`` (raw) or the good metadata with ``updates``."""
    with safe_open(str(good), framework="pt") as handle:
        meta = json.loads(handle.metadata()[META_KEY])
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    meta.update(updates)
    save_file(tensors, str(dst), metadata={META_KEY: text if text is not None else json.dumps(meta)})
    return dst


def _raw_safetensors(dst: Path, header: bytes, body: bytes = b"") -> Path:
    dst.write_bytes(struct.pack("<Q", len(header)) + header + body)
    return dst


# ------------------------------------------------------------------ metadata fields

BAD_FIELDS = [
    ("format_version", "x"),
    ("format_version", 1.5),
    ("format_version", 0),
    ("threshold", float("nan")),
    ("threshold", float("inf")),
    ("threshold", 1.5),
    ("threshold", -0.1),
    ("threshold", "0.5"),
    ("threshold", None),
    ("image_size", 8),
    ("image_size", 5000),
    ("image_size", 224.5),
    ("image_size", True),
    ("in_chans", 2),
    ("class_names", ["only one"]),
    ("class_names", [0, 1]),
    ("body_parts", "hand"),
    ("body_parts", [1, 2]),
    ("multitask", "yes"),
    ("preprocess", "clahe"),
    ("preprocess", [{"op": "no_such_op"}]),
    ("preprocess", [{"op": "resize", "size": -3}]),
    ("preprocess", []),  # no resize: prediction would feed full-size images to the network
    ("preprocess", [{"op": "resize", "size": 4096, "mode": "letterbox"}]),  # past the largest input
    ("image_size", 64),  # an older header's second copy of the input size, disagreeing with the resize (32)
    ("architecture", 7),
    ("metrics", []),
    ("train_config", "lr=1"),
]


@pytest.mark.parametrize(("field", "value"), BAD_FIELDS, ids=[f"{f}={v!r}" for f, v in BAD_FIELDS])
def test_every_bad_field_is_named_with_the_file(good, tmp_path, field, value):
    path = _with_meta(good, tmp_path / "bad.safetensors", **{field: value})
    with pytest.raises(CheckpointError) as info:
        read_checkpoint_meta(path)
    message = str(info.value)
    assert str(path) in message and field in message


@pytest.mark.parametrize(
    ("normalization", "field"),
    [
        ({"mean": [0.5], "std": [0.0]}, "normalization.std"),
        ({"mean": [0.5], "std": [-1.0]}, "normalization.std"),
        ({"mean": [0.5], "std": [float("nan")]}, "normalization.std"),
        ({"mean": [float("inf")], "std": [0.5]}, "normalization.mean"),
        ({"mean": [0.5, 0.5], "std": [0.5]}, "normalization.mean"),
        ({"mean": "0.5", "std": [0.5]}, "normalization.mean"),
        ({"std": [0.5]}, "normalization"),
        ([0.5, 0.5], "normalization"),
    ],
)
def test_normalisation_must_be_finite_with_positive_std(good, tmp_path, normalization, field):
    path = _with_meta(good, tmp_path / "norm.safetensors", normalization=normalization)
    with pytest.raises(CheckpointError, match=field.replace(".", r"\.")):
        read_checkpoint_meta(path)


def test_a_nan_threshold_is_refused_on_save_too(tmp_path):
    model = create_model("small_cnn", in_chans=1)
    for value in (float("nan"), 2.0):
        with pytest.raises(CheckpointError, match="threshold"):
            save_checkpoint(tmp_path / "x.safetensors", model, _meta(threshold=value))
    with pytest.raises(CheckpointError, match="normalization.std"):
        save_checkpoint(tmp_path / "x.safetensors", model, _meta(normalization={"mean": [0.5], "std": [0]}))
    assert not list(tmp_path.iterdir())


def test_a_good_checkpoint_still_loads(good):
    model, meta = load_checkpoint(good)
    assert meta["threshold"] == 0.4 and model.in_chans == 1


# ------------------------------------------------------------------ size and depth


def test_deeply_nested_metadata_is_refused_before_parsing(good, tmp_path):
    deep = "[" * 200_000 + "]" * 200_000
    path = _with_meta(good, tmp_path / "deep.safetensors", text=deep)
    with pytest.raises(CheckpointError, match=r"nested 200000 levels deep"):
        read_checkpoint_meta(path)
    inside = json.dumps({**_meta(), "train_config": {"x": json.loads("[" * 100 + "]" * 100)}})
    with pytest.raises(CheckpointError, match="nested"):
        read_checkpoint_meta(_with_meta(good, tmp_path / "deep2.safetensors", text=inside))


def test_deep_outer_header_is_refused(tmp_path):
    header = ('{"__metadata__": {"fracture": "{}"}, "x": ' + "[" * 50_000 + "]" * 50_000 + "}").encode()
    with pytest.raises(CheckpointError, match="safetensors header is nested"):
        read_checkpoint_meta(_raw_safetensors(tmp_path / "outer.safetensors", header))


def test_json_depth_ignores_brackets_in_strings():
    assert json_depth('{"a": "[[[[{{", "b": [[1], [2, [3]]]}') == 4
    assert json_depth(r'{"a": "\"[[["}') == 1
    assert json_depth("[]") == 1 and json_depth("1") == 0


def test_oversized_metadata_is_refused(good, tmp_path):
    big = json.dumps({**_meta(), "train_config": {"notes": "x" * 3_000_000}})
    path = _with_meta(good, tmp_path / "big.safetensors", text=big)
    with pytest.raises(CheckpointError, match="over the 2 MB limit"):
        read_checkpoint_meta(path)


def test_a_header_claiming_gigabytes_is_refused_without_reading_it(tmp_path):
    path = tmp_path / "claims.safetensors"
    path.write_bytes(struct.pack("<Q", 90 * 1024 * 1024) + b"{" + b" " * 100)
    with pytest.raises(CheckpointError, match="over the 4 MB limit"):
        read_checkpoint_meta(path)
    assert MAX_HEADER_BYTES == 4 * 1024 * 1024 and MAX_JSON_DEPTH < 1000


@pytest.mark.parametrize(
    "content",
    [b"", b"\x05\x00", struct.pack("<Q", 500) + b"{}", struct.pack("<Q", 4) + b"\xff\xfe\xfd\xfc",
     struct.pack("<Q", 2) + b"[]", struct.pack("<Q", 9) + b'{"a": 1,,'],
    ids=["empty", "short", "truncated", "not-utf8", "list-header", "bad-json"],
)
def test_garbage_files_are_checkpoint_errors(tmp_path, content):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="junk.safetensors"):
        read_checkpoint_meta(path)


def test_metadata_that_is_not_a_string_or_object(tmp_path, good):
    header = json.dumps({"__metadata__": {"fracture": {"a": 1}}}).encode()
    with pytest.raises(CheckpointError, match="not a JSON string"):
        read_checkpoint_meta(_raw_safetensors(tmp_path / "obj.safetensors", header))
    with pytest.raises(CheckpointError, match="not a JSON object"):
        read_checkpoint_meta(_with_meta(good, tmp_path / "list.safetensors", text="[1, 2]"))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_special_files_are_refused_without_hanging(tmp_path):
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    with pytest.raises(CheckpointError, match="not a regular file"):
        read_checkpoint_meta(fifo)
    if Path("/dev/zero").exists():
        link = tmp_path / "zero.safetensors"
        link.symlink_to("/dev/zero")
        with pytest.raises(CheckpointError, match="not a regular file"):
            read_checkpoint_meta(link)
    with pytest.raises(CheckpointError, match="directory"):
        read_checkpoint_meta(tmp_path)


# ------------------------------------------------------------------ listing


def test_one_broken_checkpoint_is_listed_with_its_error(good, tmp_path):
    weights, runs = tmp_path / "weights", tmp_path / "runs"
    weights.mkdir()
    for name in ("ok-run", "deep-run", "nan-run"):
        (runs / name).mkdir(parents=True)
    (runs / "ok-run" / "best.safetensors").write_bytes(good.read_bytes())
    _with_meta(good, runs / "deep-run" / "best.safetensors", text="[" * 200_000 + "]" * 200_000)
    _with_meta(good, runs / "nan-run" / "best.safetensors", threshold=float("nan"))
    _with_meta(good, weights / "shipped.safetensors")
    (weights / "broken.safetensors").write_bytes(b"not a checkpoint")
    if hasattr(os, "mkfifo"):
        os.mkfifo(weights / "fifo.safetensors")
    entries = {entry.name: entry for entry in list_checkpoints(weights, runs)}
    assert entries["ok-run"].ok and entries["shipped"].ok and entries["shipped"].source == "shipped"
    assert entries["deep-run"].error and "nested" in entries["deep-run"].error
    assert "threshold" in entries["nan-run"].error and entries["nan-run"].meta == {}
    assert "broken.safetensors" in entries["broken"].error
    if hasattr(os, "mkfifo"):
        assert "not a regular file" in entries["fifo"].error


def test_default_pointer_must_name_a_file_in_weights(good, tmp_path):
    from fracture.serve.predictor import default_checkpoint

    weights = tmp_path / "w"
    weights.mkdir()
    (weights / "a.safetensors").write_bytes(good.read_bytes())
    (tmp_path / "outside.safetensors").write_bytes(good.read_bytes())
    (weights / "default.txt").write_text("../outside.safetensors\n")
    assert default_checkpoint(weights) == weights / "a.safetensors"
    (weights / "default.txt").unlink()
    if hasattr(os, "mkfifo"):
        os.mkfifo(weights / "default.txt")  # never opened for a blocking read
        assert default_checkpoint(weights) == weights / "a.safetensors"


# ------------------------------------------------------------------ promotion


@pytest.mark.parametrize(
    "name",
    ["default", "DEFAULT", "CON", "con.v2", "nul", "Com1", "lpt9", "README", "promoted", ".hidden", "a/b",
     "../escape", "x" * 65, "", "  ", "name.", "ünïcode", "sp ace", "tab\t", "a\\b"],
)
def test_bad_and_reserved_names_are_refused(name):
    with pytest.raises(CheckpointError):
        validate_checkpoint_name(name)


def test_good_names_pass():
    assert validate_checkpoint_name("fracatlas_b3-v2.1") == "fracatlas_b3-v2.1"
    assert validate_checkpoint_name("mine.safetensors") == "mine"
    assert validate_checkpoint_name("x" * 64) == "x" * 64


@pytest.fixture
def weights(good, tmp_path) -> Path:
    """A weights folder with a 'shipped' checkpoint, its README.md card and default.txt."""
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "shipped.safetensors").write_bytes(good.read_bytes())
    (folder / "README.md").write_text("# Model card: `shipped.safetensors`\n\nthe shipped model\n")
    (folder / "default.txt").write_text("shipped.safetensors\n")
    return folder


def _other(good, tmp_path) -> Path:
    run = tmp_path / "run2"
    run.mkdir(exist_ok=True)
    return _with_meta(good, run / "best.safetensors", threshold=0.9)


def test_promotion_never_overwrites_without_overwrite(good, weights, tmp_path):
    shipped = (weights / "shipped.safetensors").read_bytes()
    readme = (weights / "README.md").read_text()
    other = _other(good, tmp_path)
    with pytest.raises(CheckpointError, match="shipped checkpoint named 'shipped' already exists"):
        promote_checkpoint(other.parent, "shipped", weights, make_default=True)
    with pytest.raises(CheckpointError, match="already exists"):
        promote_checkpoint(other.parent, "SHIPPED", weights)  # one file on case-insensitive disks
    assert (weights / "shipped.safetensors").read_bytes() == shipped
    assert (weights / "README.md").read_text() == readme
    assert (weights / "default.txt").read_text() == "shipped.safetensors\n"

    mine = promote_checkpoint(good.parent, "mine", weights)
    with pytest.raises(CheckpointError, match="promoted checkpoint named 'mine' already exists"):
        promote_checkpoint(other.parent, "mine", weights)
    assert read_checkpoint_meta(mine)["threshold"] == 0.4
    promote_checkpoint(other.parent, "mine", weights, overwrite=True)
    assert read_checkpoint_meta(mine)["threshold"] == 0.9
    assert sorted(p.name for p in weights.iterdir() if not p.name.startswith(".")) == [
        "README.md", "default.txt", "mine.md", "mine.safetensors", REGISTRY_NAME, "shipped.safetensors",
    ]


def test_the_web_ui_can_never_replace_a_shipped_checkpoint(good, weights, tmp_path):
    other = _other(good, tmp_path)
    with pytest.raises(CheckpointError, match="shipped checkpoint, which cannot be replaced"):
        promote_checkpoint(other.parent, "shipped", weights, overwrite=True, protect_shipped=True)
    assert read_checkpoint_meta(weights / "shipped.safetensors")["threshold"] == 0.4


def test_make_default_of_a_new_name_keeps_the_shipped_file_and_card(good, weights, tmp_path):
    shipped = (weights / "shipped.safetensors").read_bytes()
    other = _other(good, tmp_path)
    target = promote_checkpoint(other.parent, "newer", weights, make_default=True)
    assert (weights / "default.txt").read_text().strip() == "newer.safetensors"
    assert (weights / "shipped.safetensors").read_bytes() == shipped
    assert (weights / "README.md").read_text().startswith("# Model card: `shipped.safetensors`")
    card = (weights / "newer.md").read_text()
    assert card.startswith("# Model card: `newer.safetensors`") and "No test metrics" in card
    assert card_path(weights, "newer") == weights / "newer.md"
    assert card_path(weights, "shipped") == weights / "README.md"
    assert shipped_names(weights) == {"shipped"} and promoted_names(weights) == {"newer"}
    assert {e.name: e.source for e in list_checkpoints(weights, tmp_path / "no-runs")} == {
        "newer": "promoted", "shipped": "shipped"}
    assert target == weights / "newer.safetensors"


def test_cli_promote_needs_overwrite_and_rewrites_only_that_checkpoints_card(good, weights, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FRACTURE_WEIGHTS_DIR", str(weights))
    other = _other(good, tmp_path)
    assert main(["promote", str(other.parent), "--name", "shipped"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "shipped.safetensors" in err[0]
    assert "--overwrite" in err[0]
    assert main(["promote", str(other.parent), "--name", "shipped", "--overwrite"]) == 0
    assert read_checkpoint_meta(weights / "shipped.safetensors")["threshold"] == 0.9
    # the card that described the old file now describes the new one; no other card was touched
    assert (weights / "README.md").read_text().startswith("# Model card: `shipped.safetensors`")
    assert "No test metrics" in (weights / "README.md").read_text()
    assert main(["promote", str(other.parent), "--name", "CON"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "reserved" in err[0]


def test_promotion_refuses_a_bad_source_and_leaves_nothing_behind(good, weights, tmp_path):
    broken = tmp_path / "broken-run"
    broken.mkdir()
    _with_meta(good, broken / "best.safetensors", threshold=float("nan"))
    before = sorted(p.name for p in weights.iterdir())
    with pytest.raises(CheckpointError, match="threshold"):
        promote_checkpoint(broken, "fresh", weights)
    if hasattr(os, "mkfifo"):
        fifo_run = tmp_path / "fifo-run"
        fifo_run.mkdir()
        os.mkfifo(fifo_run / "best.safetensors")
        with pytest.raises(CheckpointError, match="not a regular file"):
            promote_checkpoint(fifo_run, "fresh", weights)
    assert sorted(p.name for p in weights.iterdir()) == before


def test_an_unrelated_card_is_never_replaced(good, weights, tmp_path):
    (weights / "notes.md").write_text("my notes\n")
    with pytest.raises(CheckpointError, match="model card of that name already exists"):
        promote_checkpoint(good.parent, "notes", weights)
    assert (weights / "notes.md").read_text() == "my notes\n"
    assert not (weights / "notes.safetensors").exists()


# ------------------------------------------------------------------ CLI one-line errors


def test_cli_predict_with_a_broken_checkpoint_is_one_error_line(good, tmp_path, capsys):
    import cv2
    import numpy as np

    image = tmp_path / "x.png"
    cv2.imwrite(str(image), np.full((40, 40), 128, np.uint8))
    bad = _with_meta(good, tmp_path / "bad.safetensors", format_version="x")
    assert main(["predict", str(image), "--checkpoint", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert "bad.safetensors" in err[0] and "format_version" in err[0]
    deep = _with_meta(good, tmp_path / "deep.safetensors", text="{" * 100_000)
    assert main(["predict", str(image), "--checkpoint", str(deep)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "deep.safetensors" in err[0] and "nested" in err[0]


# ------------------------------------------------------------------ pages

from app_support import (  # noqa: E402,F401  (fixtures)
    app_home,
    assert_no_exception,
    demo_template,
    fresh_app_home,
    run_page,
    switch_to,
    write_tiny_run,
)


def test_pages_survive_a_broken_checkpoint_and_the_web_ui_never_overwrites(app_home, good):
    runs, weights = app_home / "runs", app_home / "weights"
    run_dir = write_tiny_run(runs, "20260101-000000-small_cnn")
    (runs / "20260102-000000-broken").mkdir()
    _with_meta(good, runs / "20260102-000000-broken" / "best.safetensors", text="[" * 200_000 + "]" * 200_000)
    (weights / "shipped.safetensors").write_bytes(good.read_bytes())
    at = run_page("pages/3_Train.py")
    assert_no_exception(at)
    assert any("nested" in c.value for c in at.caption)  # the broken one is listed with its error
    assert all("broken" not in label for label in at.sidebar.selectbox(key="sidebar_model").options)

    at.selectbox(key="promote-run").set_value(run_dir.name)
    at.text_input(key="promote-name").set_value("shipped")
    at.checkbox(key="promote-overwrite").check()
    at.button(key="promote-submit").click().run()
    assert any("cannot be replaced" in e.value for e in at.error), [e.value for e in at.error] + [s.value for s in at.success]
    assert read_checkpoint_meta(weights / "shipped.safetensors")["threshold"] == 0.4

    at.checkbox(key="promote-overwrite").uncheck()
    at.text_input(key="promote-name").set_value("tiny")
    at.button(key="promote-submit").click().run()
    assert (weights / "tiny.safetensors").is_file() and (weights / "tiny.md").is_file()
    at.button(key="promote-submit").click().run()
    assert any("already exists" in e.value for e in at.error)
    at.checkbox(key="promote-overwrite").check()
    at.button(key="promote-submit").click().run()
    assert not at.error and any("Promoted" in s.value for s in at.success)

    for page in ("pages/5_Compare.py", "pages/4_Predict.py"):
        switch_to(at, page).run()
        assert_no_exception(at)
