"""The trainer: fine-tuning or frozen-feature training, reported as events.

One loop serves both modes. In ``finetune`` a step is a batch of cached
images, augmented on the batch's device, through the whole (or partly frozen)
network. In ``frozen`` the backbone's pooled features are computed once per
(model, weights, preprocessing, images) and cached on disk, and a step only
trains the heads, so an epoch over thousands of images takes seconds on a CPU.

Everything a watcher needs goes to ``RUN_DIR/events.jsonl``; the best
checkpoint (by the monitored validation metric) is rewritten atomically each
time it improves, and a resume state is kept after every epoch so a stopped
run can continue.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from fracture._json import json_default
from fracture.errors import TrainingError
from fracture.train.augment import BatchAugment
from fracture.train.batches import epoch_indices, iterate_batches, match_channels, normalize_batch, uint8_to_float
from fracture.train.config import TrainConfig
from fracture.train.events import CONFIG_FILE, EventCallback, EventLog
from fracture.train.run_lock import claim_run_dir

log = logging.getLogger(__name__)

BEST_CHECKPOINT = "best.safetensors"
RESUME_STATE = "resume_state.pt"
MAX_PROBLEM_EVENTS = 50
STEP_EVENT_INTERVAL_S = 0.5
BODY_PART_LOSS_WEIGHT = 0.5


@dataclass
class SplitData:
    """One split's rows, their positions in the image cache, labels and body parts."""

    name: str
    frame: pd.DataFrame
    cache_pos: np.ndarray
    labels: np.ndarray
    body: np.ndarray

    def __len__(self) -> int:
        return len(self.frame)


def train(
    config: TrainConfig,
    run_dir: str | Path,
    *,
    callback: EventCallback | None = None,
    stop_event: threading.Event | None = None,
    resume: bool = False,
) -> Path:
    """Train a model as ``config`` says; return the best checkpoint's path.

    Raises:
        FractureError: bad data, config or model (a ``failed`` event says so too).
        TrainingError: nothing to train on; another training runs in ``run_dir``; the
            folder already holds a run and ``resume`` is False; the disk is full.
    """
    run_dir = Path(run_dir)
    with claim_run_dir(run_dir, resume=resume):  # one training per folder (fracture/train/run_lock.py)
        events = EventLog(run_dir, callback)
        try:
            return _Trainer(config, run_dir, events, stop_event or threading.Event(), resume).run()
        except Exception as exc:
            failure = events.record_failure(exc)  # a complete `failed` event, even on a full disk
            if failure is exc:
                raise
            raise failure from exc
        finally:
            events.close()


class _Trainer:
    def __init__(self, config: TrainConfig, run_dir: Path, events: EventLog, stop: threading.Event, resume: bool):
        self.config = config.validate()
        self.run_dir = run_dir
        self.events = events
        self.stop = stop
        self.resume = resume

    # ----------------------------------------------------------------- setup
    def run(self) -> Path:
        from fracture.inference import resolve_device

        cfg = self.config
        if not self.resume:
            cfg.save(self.run_dir / CONFIG_FILE)
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed % (2**32))
        self.device = resolve_device(cfg.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick the fastest kernels
        self._load_data()
        self._build_model()
        self._build_optimisation()
        start_epoch, best, bad_epochs = 0, None, 0
        if self.resume:
            start_epoch, best, bad_epochs = self._load_resume_state()
        self.events.emit(
            "run_started",
            model=cfg.model, mode=cfg.mode, device=str(self.device),
            device_name=torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu",
            epochs=cfg.epochs, start_epoch=start_epoch, steps_per_epoch=self.steps_per_epoch,
            batch_size=cfg.batch_size, monitor=self.monitor, resumed=self.resume,
            n_train=len(self.splits["train"]), n_val=len(self.splits["val"]), n_test=len(self.splits["test"]),
            image_size=cfg.image_size, dataset_fingerprint=self.fingerprint, layout=self.manifest.layout,
        )
        return self._loop(start_epoch, best, bad_epochs)

    def _load_data(self) -> None:
        from fracture.cache import ImageCache
        from fracture.data import open_dataset
        from fracture.preprocess.pipeline import Pipeline
        from fracture.settings import get_settings

        cfg = self.config
        manifest = open_dataset(cfg.data, seed=cfg.split_seed)
        self.manifest = manifest
        self.fingerprint = manifest.fingerprint()
        self._report_problems([(p.path, p.reason) for p in manifest.problems], "dataset")
        self.body_vocab = list(manifest.body_parts)
        pipeline = Pipeline.from_spec(cfg.preprocess).with_resize(cfg.image_size, cfg.resize_mode)
        self.spec = pipeline.to_spec()
        frame = manifest.frame.reset_index(drop=True)
        if cfg.max_train_images:
            train_rows = frame.index[frame["split"] == "train"]
            if len(train_rows) > cfg.max_train_images:
                keep = np.random.default_rng(cfg.seed).choice(train_rows, cfg.max_train_images, replace=False)
                frame = frame[(frame["split"] != "train") | frame.index.isin(keep)].reset_index(drop=True)
        settings = get_settings()
        self.cache_root = Path(cfg.cache_dir) if cfg.cache_dir else settings.cache_dir
        started = time.time()
        cache = ImageCache.open_or_build(
            frame["path"].tolist(), self.spec, self.cache_root / "images",
            workers=cfg.workers or None,
            progress=lambda done, total: self._progress("caching images", done, total),
        )
        self.events.emit("log", message=f"image cache ready ({len(cache)} images, {time.time() - started:.1f} s)", cache_key=cache.key)
        self.cache = cache
        failures = [(f.path, f"{f.reason}: {f.message}") for f in cache.failures]
        self._report_problems(failures, "image")
        valid = np.asarray(cache.valid_mask, dtype=bool)
        positions = np.arange(len(frame))
        from fracture.inference import body_part_indices

        self.splits = {}
        for name in ("train", "val", "test"):
            mask = (frame["split"].to_numpy() == name) & valid
            sub = frame[mask].reset_index(drop=True)
            self.splits[name] = SplitData(
                name=name, frame=sub, cache_pos=positions[mask],
                labels=sub["label"].to_numpy(dtype=np.float32),
                body=body_part_indices(sub["body_part"].tolist(), self.body_vocab),
            )
        train_split, val_split = self.splits["train"], self.splits["val"]
        if len(train_split) == 0 or len(val_split) == 0:
            raise TrainingError(
                f"{cfg.data}: needs images in both the train and val splits "
                f"(found {len(train_split)} train, {len(val_split)} val)"
            )
        if len(np.unique(train_split.labels)) < 2:
            raise TrainingError(f"{cfg.data}: the train split has only one class; both are needed")
        self.monitor = cfg.monitor
        if len(np.unique(val_split.labels)) < 2:
            self.monitor = "val_loss"
            self.events.emit(
                "log", level="warning",
                message=f"the val split ({len(val_split)} images) has only one class: ROC AUC is undefined, so the "
                "best checkpoint is chosen by val_loss and the threshold stays 0.5; use a larger dataset for real results",
            )

    def _report_problems(self, problems: list[tuple[str, str]], kind: str) -> None:
        for path, reason in problems[:MAX_PROBLEM_EVENTS]:
            self.events.emit("data_problem", kind=kind, path=str(path), reason=reason)
        if len(problems) > MAX_PROBLEM_EVENTS:
            self.events.emit(
                "data_problem", kind=kind, path="", reason=f"{len(problems) - MAX_PROBLEM_EVENTS} more {kind} problems not listed",
            )

    def _progress(self, what: str, done: int, total: int) -> None:
        if done == total or done % max(1, total // 20) == 0:
            self.events.emit("log", message=f"{what}: {done}/{total}", done=done, total=total)
        if self.stop.is_set():
            raise TrainingError(f"stopped while {what}")

    def _build_model(self) -> None:
        from fracture.inference import InputSpec, model_normalization
        from fracture.models import create_model

        cfg = self.config
        model = create_model(
            cfg.model, pretrained=cfg.pretrained, in_chans=cfg.in_chans,
            num_body_parts=len(self.body_vocab) if cfg.multitask else 0,
            weights_path=cfg.weights_path,
        )
        mean, std = model_normalization(model)
        self.input_spec = InputSpec(in_chans=cfg.in_chans, mean=mean, std=std)
        self.model = model.to(self.device)
        if self.device.type == "cuda" and cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.forward_model = self.model
        if cfg.compile and cfg.mode == "finetune":
            self.forward_model = torch.compile(self.model)
        self.features: dict[str, torch.Tensor] = {}
        if cfg.mode == "frozen":
            for param in self.model.backbone.parameters():
                param.requires_grad_(False)
            self._compute_features()
        elif cfg.freeze_stages:
            self._freeze_stages(cfg.freeze_stages)

    def _freeze_stages(self, k: int) -> None:
        """Freeze the first ``k`` parameterised top-level stages of the backbone (stem first)."""
        stages = [m for m in self.model.backbone.children() if any(True for _ in m.parameters())]
        blocks = getattr(self.model.backbone, "blocks", None)
        if blocks is not None:  # timm EfficientNet: stem + each block stage
            stem = [m for name, m in self.model.backbone.named_children() if name in ("conv_stem", "bn1")]
            stages = stem + list(blocks)
        for module in stages[:k]:
            for param in module.parameters():
                param.requires_grad_(False)
        frozen = sum(p.numel() for m in stages[:k] for p in m.parameters())
        self.events.emit("log", message=f"froze the first {k} stages ({frozen / 1e6:.2f} M parameters)")

    def _feature_key(self) -> str:
        cfg = self.config
        weights_id = "random-seed-%d" % cfg.seed
        if cfg.pretrained:
            weights_id = "pretrained"
            if cfg.weights_path:
                stat = Path(cfg.weights_path).stat()
                weights_id = f"{Path(cfg.weights_path).resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
        payload = json.dumps(
            {"model": cfg.model, "weights": weights_id, "in_chans": cfg.in_chans, "cache": self.cache.key,
             "tta": cfg.tta_hflip, "version": 1},
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:24]

    def _compute_features(self) -> None:
        """Pooled backbone features for every cached image, from disk when already computed."""
        from fracture.inference import prepare_batch

        cfg = self.config
        path = self.cache_root / "features" / f"{cfg.model}-{self._feature_key()}.npy"
        if path.is_file():
            feats = np.load(path, mmap_mode="r")
            self.events.emit("log", message=f"frozen features from cache {path.name}")
        else:
            if not cfg.pretrained:
                log.warning("frozen mode with random backbone weights: features carry little signal")
            path.parent.mkdir(parents=True, exist_ok=True)
            self.model.eval()
            n = len(self.cache)
            chunks = []
            started = time.time()
            with torch.no_grad():
                order = np.arange(n)
                for i, images in enumerate(iterate_batches(order, 64, lambda p: self.cache.get_batch(p))):
                    batch = prepare_batch(images, self.input_spec, self.device)
                    feats_batch = self.model.forward_features(batch)
                    if cfg.tta_hflip:
                        feats_batch = (feats_batch + self.model.forward_features(torch.flip(batch, dims=[3]))) / 2
                    chunks.append(feats_batch.float().cpu().numpy())
                    self._progress("extracting features", min(n, (i + 1) * 64), n)
            feats = np.concatenate(chunks).astype(np.float32)
            tmp = path.with_suffix(f".tmp-{time.time_ns()}.npy")
            np.save(tmp, feats)
            tmp.replace(path)
            self.events.emit(
                "log", message=f"extracted {n} feature vectors in {time.time() - started:.1f} s",
                images_per_s=n / max(1e-9, time.time() - started),
            )
        all_feats = torch.from_numpy(np.array(feats, dtype=np.float32))  # a writable copy of the memory map
        for name, split in self.splits.items():
            self.features[name] = all_feats[split.cache_pos].to(self.device)

    def _build_optimisation(self) -> None:
        cfg = self.config
        train_split = self.splits["train"]
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise TrainingError("no trainable parameters (all stages frozen?)")
        opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        self.optimizer = opt_cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        n_pos = float(train_split.labels.sum())
        n_neg = float(len(train_split) - n_pos)
        self.pos_weight = None
        self.sample_weights = None
        if cfg.balancing == "class_weights":
            self.pos_weight = torch.tensor(n_neg / max(n_pos, 1.0), device=self.device)
        elif cfg.balancing == "oversample":
            counts = {0: n_neg, 1: n_pos}
            self.sample_weights = np.array([1.0 / counts[int(y)] for y in train_split.labels])
        self.steps_per_epoch = math.ceil(len(train_split) / cfg.batch_size)
        total = self.steps_per_epoch * cfg.epochs
        self.step_scheduler = None
        self.plateau = None
        if cfg.scheduler == "cosine_restarts":
            self.step_scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
                self.optimizer, T_0=max(1, cfg.restart_period * self.steps_per_epoch), eta_min=cfg.lr * 0.01
            )
        elif cfg.scheduler == "onecycle":
            if total < 4:
                self.events.emit("log", message=f"one-cycle schedule needs at least 4 steps, this run has {total}: constant learning rate")
            else:
                # at least two warm-up and two annealing steps, whatever the fraction
                pct = min(max(cfg.warmup_fraction, 2.0 / total), 1.0 - 2.0 / total)
                self.step_scheduler = torch.optim.lr_scheduler.OneCycleLR(
                    self.optimizer, max_lr=cfg.lr, total_steps=total, pct_start=pct
                )
        elif cfg.scheduler == "plateau":
            mode = "min" if self.monitor == "val_loss" else "max"
            self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(self.optimizer, mode=mode, factor=0.3, patience=1)
        self.augment = BatchAugment(cfg.augment, seed=cfg.seed)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        use_cuda = self.device.type == "cuda"
        self.amp_dtype = None
        if use_cuda and cfg.amp:
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

    # ------------------------------------------------------------ resume state
    def _save_resume_state(self, epoch: int, best: float | None, bad_epochs: int) -> None:
        state = {
            "epoch": epoch,
            "best": best,
            "bad_epochs": bad_epochs,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step_scheduler": self.step_scheduler.state_dict() if self.step_scheduler else None,
            "plateau": self.plateau.state_dict() if self.plateau else None,
            "generator": self.generator.get_state(),
            "augment": self.augment.state_dict(),
            "scaler": self.scaler.state_dict(),
        }
        tmp = self.run_dir / (RESUME_STATE + ".tmp")
        torch.save(state, tmp)
        tmp.replace(self.run_dir / RESUME_STATE)

    def _load_resume_state(self) -> tuple[int, float | None, int]:
        path = self.run_dir / RESUME_STATE
        if not path.is_file():
            raise TrainingError(f"{self.run_dir}: no {RESUME_STATE}; the run stopped before its first epoch ended, start it again")
        state = torch.load(path, map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.step_scheduler and state["step_scheduler"]:
            self.step_scheduler.load_state_dict(state["step_scheduler"])
        if self.plateau and state["plateau"]:
            self.plateau.load_state_dict(state["plateau"])
        self.generator.set_state(state["generator"])
        self.augment.load_state_dict(state["augment"])
        self.scaler.load_state_dict(state["scaler"])
        return state["epoch"] + 1, state["best"], state["bad_epochs"]

    # -------------------------------------------------------------- the loop
    def _fetch_train(self, positions: np.ndarray) -> tuple:
        """One training batch as uint8 images, read on the prefetch thread while the model steps.

        Only the memory-map copy happens here (numpy, no torch kernels); the
        conversion, augmentation and normalisation run in the loop on the
        training device. On the CPU that ordering matters: torch kernels on a
        second thread start a second OpenMP team that competes with the
        model step's threads for the same cores, which cost 20% of the loop's
        rate on 2 cores (benchmarked in ``fracture.bench.train_loop``), while
        the same work done in the loop costs ~1-2% of a step. On CUDA the
        batch goes into pinned memory and crosses the bus as uint8.
        """
        split = self.splits["train"]
        labels = torch.from_numpy(split.labels[positions])
        body = torch.from_numpy(split.body[positions])
        if self.config.mode == "frozen":
            return self.features["train"][torch.from_numpy(positions).to(self.device)], labels, body
        # get_batch reads the memory map in file order and returns the order asked.
        images = torch.from_numpy(self.cache.get_batch(split.cache_pos[positions]))
        if self.device.type == "cuda":
            return images.pin_memory(), labels.pin_memory(), body.pin_memory()
        return images, labels, body

    def _to_device(self, inputs: torch.Tensor) -> torch.Tensor:
        """A fetched batch on the training device; uint8 images become float in [0, 1] there,
        still with the cache's channels (see :meth:`_prepare_inputs`)."""
        inputs = inputs.to(self.device, non_blocking=True)
        if inputs.dtype == torch.uint8:
            inputs = uint8_to_float(inputs)
        return inputs

    def _prepare_inputs(self, inputs: torch.Tensor, train: bool) -> torch.Tensor:
        """Float images in [0, 1] -> network input: augmented (training), channels matched to
        the model, normalised, channels_last on CUDA.

        Augmenting before a gray image is repeated into three channels does a
        third of the work for identical pixels.
        """
        if train:
            inputs = self.augment(inputs)
        inputs = match_channels(inputs, self.config.in_chans)
        inputs = normalize_batch(inputs, self.input_spec.mean, self.input_spec.std)
        if self.device.type == "cuda" and self.config.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        return inputs

    def _forward(self, inputs: torch.Tensor, body: torch.Tensor, train: bool):
        if self.config.mode == "frozen":
            return self.model.forward_head(inputs, body_part=body)
        return self.forward_model(self._prepare_inputs(inputs, train), body_part=body)

    def _loss(self, logit, body_logits, labels, body) -> torch.Tensor:
        loss = F.binary_cross_entropy_with_logits(logit.float(), labels, pos_weight=self.pos_weight)
        if body_logits is not None and bool((body >= 0).any()):
            loss = loss + BODY_PART_LOSS_WEIGHT * F.cross_entropy(body_logits.float(), body, ignore_index=-1)
        return loss

    def _train_epoch(self, epoch: int) -> dict[str, float] | None:
        cfg = self.config
        model = self.model
        model.train()
        if cfg.mode == "frozen":
            model.backbone.eval()
        split = self.splits["train"]
        order = epoch_indices(len(split), shuffle=True, generator=self.generator, sample_weights=self.sample_weights)
        total_loss, total_correct, total_seen = 0.0, 0, 0
        last_event = 0.0
        ema_rate = None
        step_start = time.perf_counter()
        for step, (inputs, labels, body) in enumerate(iterate_batches(order, cfg.batch_size, self._fetch_train), start=1):
            if self.stop.is_set():
                return None
            inputs = self._to_device(inputs)
            labels = labels.to(self.device, non_blocking=True)
            body = body.to(self.device, non_blocking=True)
            with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
                logit, body_logits = self._forward(inputs, body, train=True)
                loss = self._loss(logit, body_logits, labels, body)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.step_scheduler is not None:
                self.step_scheduler.step()
            n = labels.shape[0]
            loss_value = float(loss.detach())
            total_loss += loss_value * n
            total_correct += int(((logit.detach() > 0).float() == labels).sum())
            total_seen += n
            now = time.perf_counter()
            rate = n / max(1e-9, now - step_start)
            step_start = now
            ema_rate = rate if ema_rate is None else 0.8 * ema_rate + 0.2 * rate
            if now - last_event >= STEP_EVENT_INTERVAL_S or step == self.steps_per_epoch:
                last_event = now
                steps_left = (cfg.epochs - epoch) * self.steps_per_epoch - step
                self.events.emit(
                    "step", epoch=epoch, step=step, steps_per_epoch=self.steps_per_epoch, loss=loss_value,
                    images_per_s=round(ema_rate, 2), eta_s=round(steps_left * cfg.batch_size / max(ema_rate, 1e-9), 1),
                    lr=self.optimizer.param_groups[0]["lr"],
                )
        return {"train_loss": total_loss / max(1, total_seen), "train_accuracy": total_correct / max(1, total_seen)}

    def predict_split(self, name: str, model: torch.nn.Module | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities for one split with the current (or given) weights."""
        from fracture.inference import predict_batches

        model = model or self.model
        split = self.splits[name]
        body = split.body if getattr(model, "num_body_parts", 0) else None
        if len(split) == 0:
            return np.zeros(0), None
        if self.config.mode == "frozen":
            was_training = model.training
            model.eval()
            with torch.no_grad():
                body_t = torch.from_numpy(body).to(self.device) if body is not None else None
                logit, body_logits = model.forward_head(self.features[name], body_part=body_t)
            model.train(was_training)
            probs = torch.sigmoid(logit.float()).cpu().numpy().astype(np.float64)
            body_probs = torch.softmax(body_logits.float(), 1).cpu().numpy() if body_logits is not None else None
            return probs, body_probs
        return predict_batches(
            model, lambda p: self.cache.get_batch(split.cache_pos[p]), len(split), self.input_spec,
            device=self.device, batch_size=max(self.config.batch_size, 32), body_parts=body,
            tta_hflip=self.config.tta_hflip, amp=self.config.amp,
        )

    def _validate(self) -> tuple[dict[str, float], np.ndarray]:
        from fracture.evaluate.metrics import binary_metrics

        split = self.splits["val"]
        probs, _ = self.predict_split("val")
        eps = 1e-7
        clipped = np.clip(probs, eps, 1 - eps)
        loss = float(-np.mean(split.labels * np.log(clipped) + (1 - split.labels) * np.log(1 - clipped)))
        metrics = binary_metrics(split.labels.astype(int), probs, threshold=0.5)
        return {
            "val_loss": loss,
            "val_accuracy": metrics["accuracy"],
            "val_roc_auc": metrics["roc_auc"],  # None when val has one class
            "val_kappa": metrics["cohen_kappa"],
        }, probs

    def _is_better(self, value: float | None, best: float | None) -> bool:
        if value is None:
            return best is None
        if best is None:
            return True
        return value < best if self.monitor == "val_loss" else value > best

    def _loop(self, start_epoch: int, best: float | None, bad_epochs: int) -> Path:
        cfg = self.config
        best_path = self.run_dir / BEST_CHECKPOINT
        stopped_early = False
        for epoch in range(start_epoch, cfg.epochs):
            epoch_started = time.time()
            train_metrics = self._train_epoch(epoch)
            if train_metrics is None:
                return self._cancel(best_path)
            val_metrics, val_probs = self._validate()
            current = val_metrics.get(self.monitor)
            improved = self._is_better(current, best)
            if improved:
                best, bad_epochs = current, 0
                self._save_best(best_path, epoch, val_probs, val_metrics)
            else:
                bad_epochs += 1
            if self.plateau is not None and current is not None:
                self.plateau.step(current)
            self.events.emit(
                "epoch_end", epoch=epoch, epochs=cfg.epochs, **train_metrics, **val_metrics,
                lr=self.optimizer.param_groups[0]["lr"], best_metric=best, improved=improved,
                seconds=round(time.time() - epoch_started, 2),
            )
            self._save_resume_state(epoch, best, bad_epochs)
            if cfg.early_stopping_patience and bad_epochs >= cfg.early_stopping_patience:
                self.events.emit("log", message=f"early stopping: {self.monitor} did not improve for {bad_epochs} epochs")
                stopped_early = True
                break
            if self.stop.is_set():
                return self._cancel(best_path)
        return self._finish(best_path, stopped_early)

    def _cancel(self, best_path: Path) -> Path:
        self.events.emit(
            "cancelled", best_checkpoint=str(best_path) if best_path.is_file() else None,
            message="stopped on request; resume with --resume RUN_DIR",
        )
        return best_path

    # ----------------------------------------------------------- checkpoints
    def _base_meta(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "architecture": cfg.model,
            "in_chans": cfg.in_chans,
            "image_size": cfg.image_size,
            "preprocess": self.spec,
            "normalization": {"mean": list(self.input_spec.mean), "std": list(self.input_spec.std)},
            "class_names": list(self.manifest.class_names),
            "body_parts": self.body_vocab,
            "multitask": bool(cfg.multitask),
            "train_config": cfg.to_dict(),
            "dataset_fingerprint": self.fingerprint,
            "dataset_layout": self.manifest.layout,
            "tta_hflip": bool(cfg.tta_hflip),
            "run_dir": str(self.run_dir),
            "split_sizes": {
                name: {"images": len(split), "positives": int(split.labels.sum()),
                       "studies": int(split.frame["study_id"].nunique())}
                for name, split in self.splits.items()
            },
        }

    def _save_best(self, path: Path, epoch: int, val_probs: np.ndarray, val_metrics: dict) -> None:
        from fracture.checkpoint import save_checkpoint
        from fracture.evaluate.metrics import choose_threshold

        cfg = self.config
        labels = self.splits["val"].labels.astype(int)
        if len(np.unique(labels)) < 2:
            threshold = 0.5
        else:
            threshold = float(choose_threshold(labels, val_probs, rule=cfg.threshold_rule, target=cfg.target_sensitivity))
        meta = self._base_meta()
        meta.update(
            threshold=threshold, threshold_rule=cfg.threshold_rule, epoch=epoch,
            metrics={"val": {"split": "val", "level": "image", **val_metrics}},
        )
        save_checkpoint(path, self.model, meta, half=cfg.checkpoint_half)
        self.best_threshold = threshold
        self.events.emit("checkpoint_saved", path=str(path), epoch=epoch, threshold=threshold, **{self.monitor: val_metrics.get(self.monitor)})

    def _finish(self, best_path: Path, stopped_early: bool) -> Path:
        from fracture.checkpoint import load_checkpoint, save_checkpoint
        from fracture.evaluate.report import evaluate_frame

        cfg = self.config
        if not best_path.is_file():
            raise TrainingError("no checkpoint was saved (validation metric never defined)")
        best_model, meta = load_checkpoint(best_path, map_location=self.device)
        if self.device.type == "cuda" and cfg.channels_last:
            best_model = best_model.to(memory_format=torch.channels_last)
        threshold = meta["threshold"]
        metrics = {}
        for name in ("val", "test"):
            if name == "test" and not cfg.eval_test:
                continue
            split = self.splits[name]
            if len(split) == 0:
                continue
            probs, _ = self.predict_split(name, best_model)
            frame = split.frame[["path", "label", "body_part", "patient_id", "study_id"]].copy()
            frame["prob"] = probs
            frame.to_csv(self.run_dir / f"predictions_{name}.csv", index=False)
            report = evaluate_frame(frame, threshold, seed=cfg.seed)
            report["split"] = name
            metrics[name] = report
        meta["metrics"] = metrics
        meta["stopped_early"] = stopped_early
        save_checkpoint(best_path, best_model, meta, half=cfg.checkpoint_half)
        (self.run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=json_default))
        summary = {
            f"{name}_{level}_roc_auc": metrics[name][level]["overall"].get("roc_auc")
            for name in metrics for level in ("image", "study")
        }
        self.events.emit("finished", best_checkpoint=str(best_path), threshold=threshold, **summary)
        return best_path


