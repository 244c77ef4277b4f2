"""The trainer: sets a run up from its parts and walks its epochs.

One loop serves both modes. In ``finetune`` a step is a batch of cached
images, augmented on the batch's device, through the whole (or partly frozen)
network. In ``frozen`` the backbone's pooled features are computed once and
cached on disk (:mod:`.features`), and a step only trains the heads.

The parts, one job each: :mod:`.data` (splits and image cache),
:mod:`.features`, :mod:`.optim` (trainable parameters, optimiser, schedule),
:mod:`.loop` (steps, epochs, validation), :mod:`.loss`, :mod:`.resume`
(exact continuation), :mod:`.metadata` (checkpoints and the end of a run) and
:mod:`.distributed` (torchrun). Everything a watcher needs goes to
``RUN_DIR/events.jsonl`` (rank 0 only under torchrun).
"""
from __future__ import annotations

import random
import threading
from pathlib import Path

import numpy as np
import torch

from fracture.errors import TrainingError
from fracture.train import box_guidance, distributed, features, metadata, optim, resume
from fracture.train.augment import BatchAugment
from fracture.recipes.config import TrainConfig
from fracture.train.data import SplitData, TrainData, class_balance, load_data  # noqa: F401  (SplitData re-exported)
from fracture.train.distributed import DistContext
from fracture.train.events import CONFIG_FILE, EventCallback, EventLog, record_failure
from fracture.train.loop import TrainLoop
from fracture.train.metadata import BEST_CHECKPOINT  # noqa: F401  (public name)
from fracture.train.resume import RESUME_STATE  # noqa: F401  (public name)
from fracture.train.run_lock import claim_run_dir
from fracture.train.weights import build_ema, init_from_checkpoint


def train(
    config: TrainConfig,
    run_dir: str | Path,
    *,
    callback: EventCallback | None = None,
    stop_event: threading.Event | None = None,
    resume: bool = False,
) -> Path:
    """Train a model as ``config`` says; return the best checkpoint's path.

    Under ``torchrun`` (``WORLD_SIZE > 1``) every rank calls this; rank 0
    writes the events, checkpoints and resume state.

    Raises:
        FractureError: bad data, config or model (a ``failed`` event says so too).
        TrainingError: nothing to train on; another training runs in ``run_dir``; the
            folder already holds a run and ``resume`` is False; the disk is full.
    """
    run_dir = Path(run_dir)
    dist = distributed.from_env()
    # One training per folder (fracture/train/run_lock.py); only rank 0 writes in it.
    claim = claim_run_dir(run_dir, resume=resume) if dist.is_main else None
    try:
        events = EventLog(run_dir, callback) if dist.is_main else distributed.RankLog(dist.rank)
    except BaseException:
        if claim is not None:
            claim.release()
        raise
    try:
        device = distributed.start(dist, config.device)
        return Trainer(config, run_dir, events, stop_event or threading.Event(), resume=resume,
                       dist=dist, device=device).run()
    except Exception as exc:
        failure = record_failure(events, exc)  # a complete `failed` event, even on a full disk
        if failure is exc:
            raise
        raise failure from exc
    finally:
        dist.shutdown()
        if claim is not None:
            events.close()
            claim.release()


class Trainer:
    """One run: :meth:`setup` builds data, model and optimiser into :attr:`loop`; :meth:`run` trains."""

    def __init__(self, config: TrainConfig, run_dir: Path, events, stop: threading.Event, *, resume: bool = False,
                 dist: DistContext | None = None, device: torch.device | None = None) -> None:
        from fracture.serve.inference import resolve_device

        self.config = config.validate()
        self.run_dir = Path(run_dir)
        self.events = events
        self.stop = stop
        self.resume = resume
        self.dist = dist or DistContext()
        self.device = device or resolve_device(config.device)
        self.loop: TrainLoop | None = None

    def emit(self, event: str, **fields) -> None:
        self.events.emit(event, **fields)

    def _progress(self, what: str, done: int, total: int) -> None:
        if done == total or done % max(1, total // 20) == 0:
            self.emit("log", message=f"{what}: {done}/{total}", done=done, total=total)
            self.emit("phase", name=what, done=done, total=total)  # named with its progress on the Train page
        if self.stop.is_set():
            raise TrainingError(f"stopped while {what}")

    def _rank0_first(self, work):
        """``work(is_main)`` on rank 0, then on the other ranks (which find its caches warm)."""
        result = work(True) if self.dist.is_main else None
        self.dist.barrier()
        return result if self.dist.is_main else work(False)

    # ---------------------------------------------------------------- setup
    def setup(self) -> TrainLoop:
        from fracture.models.network import model_normalization
        from fracture.serve.inference import InputSpec
        from fracture.models import create_model

        cfg, device = self.config, self.device
        if not self.resume and self.dist.is_main and not (self.run_dir / CONFIG_FILE).is_file():
            cfg.save(self.run_dir / CONFIG_FILE)  # a launched run's config.json is already written (launcher)
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed % (2**32))
        random.seed(cfg.seed)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick the fastest kernels
        data: TrainData = self._rank0_first(lambda main: load_data(cfg, self.emit, self._progress))
        model = create_model(
            cfg.model, pretrained=cfg.pretrained, in_chans=cfg.in_chans,
            num_body_parts=len(data.body_vocab) if cfg.multitask else 0, weights_path=cfg.weights_path,
        )
        if cfg.init_checkpoint:
            init_from_checkpoint(model, cfg)
            self.emit("log", message=f"initialised from {cfg.init_checkpoint}")
        if cfg.box_loss_weight:
            box_guidance.check_supported(model)
        mean, std = model_normalization(model)
        input_spec = InputSpec(in_chans=cfg.in_chans, mean=mean, std=std)
        model = model.to(device)
        if device.type == "cuda" and cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        feats: dict[str, torch.Tensor] = {}
        if cfg.mode == "frozen":
            forward_model = features.freeze_backbone(model)
            feats = self._rank0_first(lambda main: features.load_or_extract(
                cfg, data, model, input_spec, device, self.emit, self._progress, extract=main))
        else:
            forward_model = model
            if cfg.freeze_stages:
                frozen = optim.freeze_stages(model, cfg.freeze_stages)
                self.emit("log", message=f"froze the first {cfg.freeze_stages} stages ({frozen / 1e6:.2f} M parameters)")
        if self.dist.enabled:
            forward_model = torch.nn.parallel.DistributedDataParallel(
                forward_model, device_ids=[device.index] if device.type == "cuda" else None,
                forward_sync_buffers=cfg.mode != "frozen", find_unused_parameters=bool(cfg.multitask),
            )
        if cfg.compile and cfg.mode == "finetune":
            forward_model = torch.compile(forward_model)
        train_split = data.splits["train"]
        pos_weight, sample_weights = class_balance(train_split.labels, cfg.balancing)
        optimisation = optim.build_optimisation(
            model, cfg, steps_per_epoch=optim.steps_per_epoch(len(train_split), cfg.batch_size),
            monitor=data.monitor, device=device, log=lambda message: self.emit("log", message=message),
        )
        self.loop = TrainLoop(
            config=cfg, device=device, model=model, forward_model=forward_model, input_spec=input_spec, data=data,
            optim=optimisation, augment=BatchAugment(cfg.augment, seed=cfg.seed),
            sampler=torch.Generator().manual_seed(cfg.seed), emit=self.emit, stop=self.stop, dist=self.dist,
            features=feats, pos_weight=None if pos_weight is None else torch.tensor(pos_weight, device=device),
            sample_weights=sample_weights, box_masks=box_guidance.train_masks(train_split, cfg, self.emit),
            ema=build_ema(model, cfg.ema_decay),
        )
        return self.loop

    # ----------------------------------------------------------------- run
    def run(self) -> Path:
        loop = self.setup()
        cfg, data = self.config, loop.data
        start_epoch, best, bad_epochs = 0, None, 0
        if self.resume:
            start_epoch, best, bad_epochs = self._restore(loop)
        self.emit(
            "run_started",
            model=cfg.model, mode=cfg.mode, device=str(self.device),
            device_name=torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu",
            epochs=cfg.epochs, start_epoch=start_epoch, steps_per_epoch=loop.steps_per_epoch,
            batch_size=cfg.batch_size, monitor=data.monitor, resumed=self.resume, world_size=self.dist.world_size,
            n_train=len(data.splits["train"]), n_val=len(data.splits["val"]), n_test=len(data.splits["test"]),
            image_size=cfg.image_size, dataset_fingerprint=data.fingerprint, layout=data.manifest.layout,
        )
        return self._epochs(loop, start_epoch, best, bad_epochs)

    def _epochs(self, loop: TrainLoop, start_epoch: int, best: float | None, bad_epochs: int) -> Path:
        import time

        cfg, monitor = self.config, loop.data.monitor
        best_path = self.run_dir / metadata.BEST_CHECKPOINT
        meta = metadata.base_meta(cfg, loop.data, loop.input_spec, self.run_dir)
        stopped_early = False
        for epoch in range(start_epoch, cfg.epochs):
            epoch_started = time.time()
            train_metrics = loop.train_epoch(epoch)
            if train_metrics is None:
                return self._cancel(best_path)
            val_metrics, val_probs = loop.validate()
            current = val_metrics.get(monitor)
            improved = _is_better(current, best, monitor)
            if improved:
                best, bad_epochs = current, 0
                if self.dist.is_main:
                    threshold = metadata.save_best(
                        best_path, loop.eval_model, meta, cfg, labels=loop.data.splits["val"].labels,
                        val_probs=val_probs, val_metrics=val_metrics, epoch=epoch,
                    )
                    self.emit("checkpoint_saved", path=str(best_path), epoch=epoch, threshold=threshold,
                              **{monitor: current})
            else:
                bad_epochs += 1
            if loop.optim.plateau is not None and current is not None:
                loop.optim.plateau.step(current)
            self.emit(
                "epoch_end", epoch=epoch, epochs=cfg.epochs, **train_metrics, **val_metrics,
                lr=loop.optim.lr, best_metric=best, improved=improved,
                seconds=round(time.time() - epoch_started, 2),
            )
            self._save_resume(loop, epoch, best, bad_epochs)
            if cfg.early_stopping_patience and bad_epochs >= cfg.early_stopping_patience:
                self.emit("log", message=f"early stopping: {monitor} did not improve for {bad_epochs} epochs")
                stopped_early = True
                break
            if self.dist.any(self.stop.is_set(), self.device):
                return self._cancel(best_path)
        if self.dist.is_main:
            def predict(name: str, model):
                self.emit("phase", name=f"evaluating the best checkpoint on the {name} split")
                return loop.predict_split(name, model, shard=False)

            best_path, summary = metadata.finish(
                self.run_dir, cfg, loop.data, predict, self.device, stopped_early=stopped_early,
                on_phase=lambda name: self.emit("phase", name=name),
            )
            self.emit("finished", **summary)
        self.dist.barrier()
        return best_path

    def _cancel(self, best_path: Path) -> Path:
        self.emit("cancelled", best_checkpoint=str(best_path) if best_path.is_file() else None,
                  message="stopped on request; resume with --resume RUN_DIR")
        return best_path

    # -------------------------------------------------------------- resume
    def _save_resume(self, loop: TrainLoop, epoch: int, best: float | None, bad_epochs: int) -> None:
        resume.save_loop_state(self.run_dir, loop, self.dist, epoch=epoch, best=best, bad_epochs=bad_epochs)

    def _restore(self, loop: TrainLoop) -> tuple[int, float | None, int]:
        start, best, bad_epochs, warning = resume.restore_loop_state(self.run_dir, loop, self.dist, self.device)
        if warning:
            self.emit("log", level="warning", message=warning)
        return start, best, bad_epochs


def _is_better(value: float | None, best: float | None, monitor: str) -> bool:
    if monitor == "last":  # every epoch replaces the saved weights
        return True
    if value is None:
        return best is None
    if best is None:
        return True
    return value < best if monitor == "val_loss" else value > best
