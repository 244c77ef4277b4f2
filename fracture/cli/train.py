"""``python -m fracture train``: the contract the Train page and recipes rely on.

Options are generated from :class:`TrainConfig`'s fields, so the CLI, the page
and the recipe files can never disagree about what a run is. A recipe given
with ``--config`` is the base; explicit flags override it.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import threading
import types
import typing
from pathlib import Path

from fracture.errors import ConfigError
from fracture.recipes.config import AugmentConfig, TrainConfig

log = logging.getLogger(__name__)

_HELP = {
    "data": "dataset root (MURA-v1.1, FracAtlas, class folders or demo)",
    "model": "architecture name (see `python -m fracture models`)",
    "mode": "finetune the network, or train heads on frozen cached features",
    "preprocess": "preset name (none, clahe, ...) or a JSON list of steps",
    "max_train_images": "use a seeded subset of the training split (quick runs)",
    "freeze_stages": "finetune: freeze the first k backbone stages",
    "epochs": "number of epochs",
    "pretrained": "start from ImageNet weights (default: on where offline weights exist, see `models`)",
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_field(parser: argparse.ArgumentParser, field: dataclasses.Field, prefix: str = "") -> None:
    name = prefix + field.name
    hints = typing.get_type_hints(TrainConfig if not prefix else AugmentConfig)
    kind = hints[field.name]
    origin = typing.get_origin(kind)
    args = typing.get_args(kind)
    help_text = _HELP.get(field.name, field.name.replace("_", " "))
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        kind = next(a for a in args if a is not type(None))
    if kind is bool:
        parser.add_argument(_flag(name), dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        return
    if kind in (int, float, str):
        parser.add_argument(_flag(name), dest=name, type=kind, default=None, help=help_text)
    else:  # lists / dicts given as JSON or a preset name
        parser.add_argument(_flag(name), dest=name, type=str, default=None, help=help_text)


def register(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train a model and write a run directory",
                                   description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", required=True, help="run directory to write (config, events, checkpoints)")
    parser.add_argument("--config", help="a recipe / config JSON file; flags override it")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run from its last finished epoch")
    for field in dataclasses.fields(TrainConfig):
        if field.name != "augment":
            _add_field(parser, field)
    group = parser.add_argument_group("augmentation (training split only)")
    for field in dataclasses.fields(AugmentConfig):
        _add_field(group, field, prefix="aug_")
    parser.set_defaults(func=run)


def _parse_preprocess(value: str) -> list:
    from fracture.preprocess.pipeline import PRESETS

    if value in PRESETS:
        return list(PRESETS[value])
    from fracture.util.jsonio import JsonFileError, parse_json

    try:  # the guarded reader: 100,000 brackets on a command line are one line, not a RecursionError
        spec = parse_json(value, source="--preprocess", max_bytes=64 * 1024)
    except JsonFileError as exc:
        raise ConfigError(
            f"--preprocess {value[:80]!r}: neither a preset ({', '.join(PRESETS)}) nor a JSON list of steps "
            f"({exc.problem})"
        ) from None
    if not isinstance(spec, list):
        raise ConfigError("--preprocess: the JSON must be a list of steps")
    return spec


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Recipe (if any) overridden by the flags that were given."""
    values: dict = {}
    if args.config:
        from fracture.train.events import CONFIG_FILE
        from fracture.recipes.catalogue import recipe_ref

        values = TrainConfig.from_json(args.config).to_dict()
        if Path(args.config).name != CONFIG_FILE:  # a run's config.json keeps the recipe it records
            values["recipe"] = recipe_ref(args.config)
    for field in dataclasses.fields(TrainConfig):
        if field.name == "augment":
            continue
        given = getattr(args, field.name, None)
        if given is None:
            continue
        values[field.name] = _parse_preprocess(given) if field.name == "preprocess" else given
    augment = dict(values.get("augment") or {})
    for field in dataclasses.fields(AugmentConfig):
        given = getattr(args, "aug_" + field.name, None)
        if given is not None:
            augment[field.name] = given
    if augment:
        values["augment"] = augment
    return TrainConfig.from_dict(values)


def _install_stop_handlers(stop: threading.Event) -> None:
    def handler(signum, _frame):
        log.warning("signal %s: stopping after the current step", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def run(args: argparse.Namespace) -> int:
    from fracture.util.files import atomic_write_text
    from fracture.util.allocator import keep_freed_memory
    from fracture.train.events import CONFIG_FILE, PID_FILE
    from fracture.train.run_lock import claim_run_dir
    from fracture.train.trainer import train

    keep_freed_memory()  # this process only trains: reuse freed activations (fracture/util/allocator.py)

    out = Path(args.out)
    if args.resume:
        run_dir = Path(args.resume)
        config = TrainConfig.from_json(run_dir / "config.json")
        resume = True
    else:
        run_dir = out
        config = config_from_args(args).validate()  # a bad value is one line before the folder is touched
        resume = False
    stop = threading.Event()
    _install_stop_handlers(stop)

    def echo(event: dict) -> None:
        kind = event["event"]
        if kind == "epoch_end":
            print(
                f"epoch {event['epoch'] + 1}/{event['epochs']}  train_loss {event['train_loss']:.4f}  "
                f"val_loss {event['val_loss']:.4f}  val_auc {_fmt(event.get('val_roc_auc'))}  "
                f"val_acc {event['val_accuracy']:.3f}  ({event['seconds']} s)", flush=True,
            )
        elif kind in ("run_started", "finished", "cancelled", "failed", "checkpoint_saved"):
            details = {k: v for k, v in event.items() if k not in ("event", "time", "unix", "traceback")}
            print(f"{kind}: {json.dumps(details, default=str)}", flush=True)
        elif kind in ("log", "data_problem"):
            print(f"{kind}: {event.get('message') or event.get('path', '') + ' ' + event.get('reason', '')}", flush=True)

    # One training per folder: a second one is refused here, before it writes anything.
    # Under torchrun rank 0 stands for the run (lock, pid, output); the other ranks only train.
    if int(os.environ.get("RANK", "0") or 0) != 0:
        train(config, run_dir, stop_event=stop, resume=resume)
        return 0
    # The launcher writes the run's config.json into the folder and passes it as --config: ours.
    own = {CONFIG_FILE} if args.config and _same_file(Path(args.config), run_dir / CONFIG_FILE) else set()
    with claim_run_dir(run_dir, resume=resume, own_files=own):
        atomic_write_text(run_dir / PID_FILE, str(os.getpid()))
        train(config, run_dir, callback=echo, stop_event=stop, resume=resume)
    return 0  # a stop on request is a clean end: the run's last event says "cancelled"


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except (OSError, RuntimeError):
        return False


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"
