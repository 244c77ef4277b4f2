"""Hostile use of runs and caches: two trainings in one folder, simultaneous launches beyond
the job limit, a full disk, damaged prediction and image caches (issue 13, items 7 and 8)."""
from __future__ import annotations

import errno
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from fracture.errors import FractureError, TrainingError
from fracture.train import TrainConfig, read_events, run_status
from fracture.train import append_log as append_log_module
from fracture.train.events import EVENTS_FILE, PID_FILE, EventLog, record_failure
from fracture.train.run_lock import LOCK_FILE, claim_run_dir

REPO = Path(__file__).resolve().parents[2]


def tiny_config(data: Path, tmp_path: Path, **overrides) -> TrainConfig:
    values = dict(
        data=str(data), model="small_cnn", image_size=32, epochs=1, batch_size=16, lr=3e-3,
        scheduler="none", cache_dir=str(tmp_path / "cache"), seed=0, workers=0,
    )
    values.update(overrides)
    return TrainConfig(**values)


def snapshot(folder: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file's size, mtime and bytes: proof that nothing was touched."""
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.iterdir()) if p.is_file()}


def no_temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith((".tmp", ".part"))]


@pytest.fixture()
def lock_holder():
    """Start a separate process that claims a run folder (as a running training does)."""
    procs: list[subprocess.Popen] = []

    def start(run_dir: Path) -> subprocess.Popen:
        code = ("import sys; from fracture.train.run_lock import claim_run_dir; "
                "c = claim_run_dir(sys.argv[1], resume=True); print('locked', flush=True); sys.stdin.read()")
        proc = subprocess.Popen([sys.executable, "-c", code, str(run_dir)], cwd=REPO, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "locked"
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


# --------------------------------------------------------------------------
# One training per folder.


@pytest.mark.slow
def test_second_training_into_a_locked_folder_fails_at_once_and_touches_nothing(demo_root, tmp_path, lock_holder):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text("{}")
    holder = lock_holder(run_dir)
    before = snapshot(run_dir)
    assert (run_dir / LOCK_FILE).read_text().strip() == str(holder.pid)

    from fracture.train.trainer import train

    with pytest.raises(TrainingError) as caught:
        train(tiny_config(demo_root, tmp_path), run_dir)
    message = str(caught.value)
    assert str(run_dir) in message and str(holder.pid) in message and "already running" in message
    assert snapshot(run_dir) == before  # no events, no pid file, no config rewrite

    # the CLI refuses the same way, as one error line, before writing its pid file
    from fracture.cli import main

    code = main(["train", "--data", str(demo_root), "--out", str(run_dir), "--model", "small_cnn"])
    assert code == 2 and snapshot(run_dir) == before


def test_a_dead_holders_lock_is_taken_over(demo_root, tmp_path, lock_holder):
    run_dir = tmp_path / "run"
    holder = lock_holder(run_dir)
    holder.kill()
    holder.wait()
    assert (run_dir / LOCK_FILE).read_text().strip() == str(holder.pid)  # left behind by the kill
    with claim_run_dir(run_dir) as claim:
        assert (run_dir / LOCK_FILE).read_text().strip() == str(os.getpid())
        assert claim.path == run_dir / LOCK_FILE
    assert not (run_dir / LOCK_FILE).exists()


def test_claims_nest_in_one_thread_but_not_across_threads(tmp_path):
    run_dir = tmp_path / "run"
    with claim_run_dir(run_dir):
        with claim_run_dir(run_dir):  # the CLI claims, then train() does
            pass
        assert (run_dir / LOCK_FILE).exists()  # still held by the outer claim
        errors = []

        def other_thread():
            try:
                claim_run_dir(run_dir)
            except TrainingError as exc:
                errors.append(str(exc))

        worker = threading.Thread(target=other_thread)
        worker.start()
        worker.join()
        assert errors and "another thread" in errors[0]
    assert not (run_dir / LOCK_FILE).exists()


def _fake_run(run_dir: Path, final: str) -> None:
    log = EventLog(run_dir)
    log.emit("run_started", model="small_cnn", epochs=1, steps_per_epoch=1, monitor="val_roc_auc")
    log.emit(final, best_checkpoint=str(run_dir / "best.safetensors"))
    log.close()
    (run_dir / "config.json").write_text("{}")
    (run_dir / "best.safetensors").write_bytes(b"the first run's model")


@pytest.mark.parametrize("final", ["finished", "cancelled", "failed"])
def test_a_folder_holding_a_run_is_refused_unless_resuming(demo_root, tmp_path, final):
    run_dir = tmp_path / "done"
    _fake_run(run_dir, final)
    before = snapshot(run_dir)
    from fracture.train.trainer import train

    with pytest.raises(TrainingError, match=f"already holds a {final} run") as caught:
        train(tiny_config(demo_root, tmp_path), run_dir)
    assert str(run_dir) in str(caught.value)
    assert snapshot(run_dir) == before
    assert not (run_dir / LOCK_FILE).exists()
    claim_run_dir(run_dir, resume=True).release()  # --resume may go on


@pytest.mark.slow
def test_two_cli_trainings_into_one_out(demo_root, tmp_path, capsys):
    """The reported case: the second `fracture train --out X` must not run beside the first."""
    run_dir = tmp_path / "cli"
    env = dict(os.environ, FRACTURE_CACHE_DIR=str(tmp_path / "cache"), PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "fracture", "train", "--data", str(demo_root), "--out", str(run_dir),
           "--model", "small_cnn", "--image-size", "32", "--epochs", "50", "--batch-size", "8", "--workers", "0"]
    first = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120
        while not any(e["event"] == "run_started" for e in read_events(run_dir)):
            assert first.poll() is None, first.stdout.read().decode()
            assert time.time() < deadline, "the first training did not start"
            time.sleep(0.2)
        config_before = (run_dir / "config.json").read_bytes()
        from fracture.cli import main

        assert main(cmd[3:]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and str(run_dir) in err and f"process {first.pid}" in err
        assert (run_dir / PID_FILE).read_text().strip() == str(first.pid)
        assert (run_dir / "config.json").read_bytes() == config_before
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    kinds = [e["event"] for e in read_events(run_dir)]
    assert kinds.count("run_started") == 1 and "failed" not in kinds and kinds[-1] == "cancelled"
    assert not (run_dir / LOCK_FILE).exists()


# --------------------------------------------------------------------------
# Launches: the job limit holds under simultaneous launches; run folders are unique.


def test_new_run_dirs_are_unique_and_created(tmp_path):
    from fracture.train.launcher import new_run_dir

    made: list[Path] = []
    barrier = threading.Barrier(8)

    def make():
        barrier.wait()
        made.extend(new_run_dir(tmp_path, "small_cnn") for _ in range(10))

    threads = [threading.Thread(target=make) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 80 and len(set(made)) == 80 and all(p.is_dir() for p in made)


def test_simultaneous_launches_cannot_beat_the_job_limit(demo_root, tmp_path, monkeypatch):
    from fracture.train import launcher

    runs = tmp_path / "runs"
    real_popen = subprocess.Popen
    inside = threading.Barrier(3)  # passes only if all three launches are in the spawn at once
    started: list[subprocess.Popen] = []

    def slow_popen(cmd, **kwargs):
        try:
            inside.wait(timeout=1.0)  # without the launch lock all three would meet here
        except threading.BrokenBarrierError:
            pass
        kwargs.pop("cwd", None)
        proc = real_popen([sys.executable, "-c", "import time; time.sleep(120)"], **kwargs)
        started.append(proc)
        return proc

    monkeypatch.setattr(launcher.subprocess, "Popen", slow_popen)
    config = tiny_config(demo_root, tmp_path)
    outcomes: list[str] = []
    go = threading.Barrier(3)

    def launch():
        go.wait()
        run_dir = launcher.new_run_dir(runs, config.model)
        try:
            launcher.launch_training(config, run_dir, max_jobs=1, runs_root=runs)
            outcomes.append("started")
        except TrainingError as exc:
            outcomes.append(str(exc))

    try:
        threads = [threading.Thread(target=launch) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert outcomes.count("started") == 1 and len(started) == 1
        refusals = [o for o in outcomes if o != "started"]
        assert all("already running" in o and "FRACTURE_MAX_TRAINING_JOBS" in o for o in refusals)
        [active] = launcher.active_runs(runs)
        assert (active.run_dir / PID_FILE).read_text().strip() == str(started[0].pid)
        # the child holds the folder's lock: a launch into it is refused
        with pytest.raises(TrainingError, match=f"process {started[0].pid}"):
            launcher.launch_training(config, active.run_dir, runs_root=runs, resume=True)
        # refused launches leave no empty folders behind
        assert sorted(p.name for p in runs.iterdir() if p.is_dir()) == [active.run_dir.name]
    finally:
        for proc in started:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------
# A full disk: the `failed` event still lands whole, and no temporary file is left.


class FullDisk:
    """Makes the event log of ``run_dir`` behave as on a full disk once :meth:`fill` is called.

    ``fallocate`` is the real one until then (so what the log set aside is
    real); afterwards it fails with ENOSPC, and a write to the log that goes
    past the blocks set aside writes what fits and then fails with ENOSPC, as
    the kernel does. With ``tail=False`` fallocate is unsupported (the spare-file
    path): a write to the log fails until the spare file is deleted.
    """

    def __init__(self, monkeypatch, run_dir: Path, *, tail: bool = True) -> None:
        self.run_dir = run_dir
        self.tail = tail
        self.full = False
        self.reserved: dict[int, int] = {}  # inode -> end of the blocks set aside
        self.refusals = 0
        real_fallocate = append_log_module.fallocate
        real_write = os.write

        def fallocate(fd, mode, offset, length):
            if not self.tail:
                raise OSError(errno.EOPNOTSUPP, "not supported here")
            if mode & 0x02:  # punching a hole frees space: always possible
                return real_fallocate(fd, mode, offset, length)
            if self.full:
                self.refusals += 1
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real_fallocate(fd, mode, offset, length)
            ino = os.fstat(fd).st_ino
            self.reserved[ino] = max(self.reserved.get(ino, 0), offset + length)

        def write(fd, data):
            if not self.full or not self._is_log(fd):
                return real_write(fd, data)
            if not self.tail:
                if (self.run_dir / f".{EVENTS_FILE}.reserve").exists():
                    self.refusals += 1
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                return real_write(fd, data)
            room = self.reserved.get(os.fstat(fd).st_ino, 0) - os.fstat(fd).st_size
            if room <= 0:
                self.refusals += 1
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_write(fd, bytes(data[:room]))

        monkeypatch.setattr(append_log_module, "fallocate", fallocate)
        monkeypatch.setattr(os, "write", write)

    def _is_log(self, fd: int) -> bool:
        try:
            return os.path.samestat(os.fstat(fd), os.stat(self.run_dir / EVENTS_FILE))
        except OSError:
            return False

    def fill(self) -> None:
        self.full = True


def parse_all_lines(run_dir: Path) -> list[dict]:
    raw = (run_dir / EVENTS_FILE).read_bytes()
    assert raw.endswith(b"\n")
    return [json.loads(line) for line in raw.decode().splitlines()]  # every line whole


@pytest.mark.parametrize("tail", [True, False], ids=["fallocate-tail", "spare-file"])
def test_full_disk_still_records_a_complete_failed_event(tmp_path, monkeypatch, tail):
    run_dir = tmp_path / "run"
    disk = FullDisk(monkeypatch, run_dir, tail=tail)
    log = EventLog(run_dir)
    log.emit("run_started", model="small_cnn", epochs=3, steps_per_epoch=10, monitor="val_roc_auc")
    log.emit("step", epoch=0, step=1, steps_per_epoch=10, loss=0.7)
    if not tail:
        assert (run_dir / f".{EVENTS_FILE}.reserve").stat().st_size == append_log_module.RESERVE_BYTES
    disk.fill()
    size_before = (run_dir / EVENTS_FILE).stat().st_size
    with pytest.raises(OSError) as caught:  # an ordinary event does not eat the reserve
        log.emit("step", epoch=0, step=2, steps_per_epoch=10, loss=0.6, note="x" * 1000)
    assert caught.value.errno == errno.ENOSPC
    assert (run_dir / EVENTS_FILE).stat().st_size == size_before  # nothing half-written
    failure = record_failure(log, OSError(errno.ENOSPC, "No space left on device"))
    log.close()
    assert isinstance(failure, TrainingError) and "disk is full" in str(failure)
    events = parse_all_lines(run_dir)
    assert [e["event"] for e in events] == ["run_started", "step", "failed"]
    assert events[-1]["error_type"] == "DiskFull" and str(run_dir) in events[-1]["error"]
    status = run_status(run_dir)
    assert status.state == "failed" and "disk is full" in status.error
    assert disk.refusals >= 1
    assert no_temp_files(run_dir) == [] and not (run_dir / f".{EVENTS_FILE}.reserve").exists()


def test_a_short_write_never_leaves_half_a_line(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    disk = FullDisk(monkeypatch, run_dir)
    log = EventLog(run_dir)
    log.emit("run_started", model="m", epochs=1, steps_per_epoch=1, monitor="val_loss")
    disk.fill()
    ino = (run_dir / EVENTS_FILE).stat().st_ino
    disk.reserved[ino] = (run_dir / EVENTS_FILE).stat().st_size + 40  # room for 40 bytes only
    with pytest.raises(OSError):
        log.emit("cancelled", message="y" * 500)  # short write, then ENOSPC
    assert [e["event"] for e in parse_all_lines(run_dir)] == ["run_started"]
    log.close()


def test_a_huge_failure_message_is_cut_to_fit_the_reserve(tmp_path):
    log = EventLog(tmp_path / "run")
    log.emit("failed", error="boom", traceback="frame\n" * 200_000)
    log.close()
    [event] = parse_all_lines(tmp_path / "run")
    assert event["error"] == "boom" and "characters cut" in event["traceback"]
    assert len(json.dumps(event)) < append_log_module.RESERVE_BYTES


@pytest.mark.slow
@pytest.mark.parametrize("error", ["oserror", "safetensors"])
def test_training_on_a_full_disk_ends_with_a_failed_event_and_no_temp_files(demo_root, tmp_path, monkeypatch, error):
    """End to end: the best checkpoint's write hits ENOSPC mid-file; the run says so.
    (safetensors reports it as its own error naming "os error 28", seen on a real full tmpfs.)"""
    import safetensors.torch

    from fracture.train.trainer import train

    run_dir = tmp_path / "run"
    disk = FullDisk(monkeypatch, run_dir)

    def save_file_on_a_full_disk(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a checkpoint")
        disk.fill()
        if error == "safetensors":
            raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)

    monkeypatch.setattr(safetensors.torch, "save_file", save_file_on_a_full_disk)
    with pytest.raises(TrainingError, match="disk is full"):
        train(tiny_config(demo_root, tmp_path), run_dir)
    events = parse_all_lines(run_dir)
    assert events[-1]["event"] == "failed" and events[-1]["error_type"] == "DiskFull"
    assert run_status(run_dir).state == "failed"
    assert no_temp_files(run_dir) == []
    assert not (run_dir / "best.safetensors").exists() and not (run_dir / LOCK_FILE).exists()


# --------------------------------------------------------------------------
# The predictions cache: checked against the manifest, rebuilt on any mismatch.


@pytest.fixture(scope="module")
def checkpoint(demo_root, tmp_path_factory) -> Path:
    from fracture.train.trainer import train

    tmp = tmp_path_factory.mktemp("ckpt")
    return train(tiny_config(demo_root, tmp), tmp / "run")


def _rewrite(path: Path, header: dict, body: bytes) -> None:
    import hashlib

    header = dict(header, sha256=hashlib.sha256(body).hexdigest())
    path.write_bytes(json.dumps(header).encode() + b"\n" + body)


DAMAGE = ["cut_at_a_line", "garbage", "empty", "short_but_self_consistent", "fewer_positions", "bad_probability"]


@pytest.mark.slow
@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_predictions_cache_is_detected_and_rebuilt(checkpoint, demo_root, tmp_path, caplog, damage):
    from fracture.assess.compare import predict_split

    cache_dir = tmp_path / "c"
    first, _, problems = predict_split(checkpoint, demo_root, "test", cache_dir=cache_dir, device="cpu")
    [pred] = (cache_dir / "predictions").glob("*.pred")
    raw = pred.read_bytes()
    head, _, body = raw.partition(b"\n")
    header = json.loads(head)
    lines = body.splitlines(keepends=True)
    assert header["rows"] == len(first) == len(lines) - 1 > 4
    if damage == "cut_at_a_line":
        pred.write_bytes(head + b"\n" + b"".join(lines[: len(lines) // 2]))
    elif damage == "garbage":
        pred.write_bytes(os.urandom(len(raw)))
    elif damage == "empty":
        pred.write_bytes(b"")
    elif damage == "short_but_self_consistent":  # checksum and row count agree, the manifest does not
        _rewrite(pred, dict(header, rows=len(lines) - 3), b"".join(lines[:-2]))
    elif damage == "fewer_positions":
        _rewrite(pred, dict(header, rows=len(lines) - 3, positions=header["positions"][:-2]), b"".join(lines[:-2]))
    else:  # a probability of 7
        row = lines[1].rstrip(b"\n").rsplit(b",", 1)[0] + b",7.0\n"
        _rewrite(pred, header, lines[0] + row + b"".join(lines[2:]))
    caplog.set_level(logging.WARNING, logger="fracture.assess.compare")
    again, _, again_problems = predict_split(checkpoint, demo_root, "test", cache_dir=cache_dir, device="cpu")
    assert any("predictions cache" in r.getMessage() and "unusable" in r.getMessage() for r in caplog.records)
    assert len(again) == len(first) and again_problems == problems
    np.testing.assert_allclose(again["prob"].to_numpy(), first["prob"].to_numpy(), atol=1e-6)
    assert again["path"].tolist() == first["path"].tolist()
    assert pred.read_bytes().partition(b"\n")[2] and json.loads(pred.read_bytes().partition(b"\n")[0])["rows"] == len(first)
    caplog.clear()  # the rebuilt cache is used without a warning
    predict_split(checkpoint, demo_root, "test", cache_dir=cache_dir, device="cpu")
    assert not [r for r in caplog.records if "unusable" in r.getMessage()]
    assert no_temp_files(cache_dir / "predictions") == []


# --------------------------------------------------------------------------
# The image cache: same-size garbage in the pixel file is found and rebuilt.


def test_same_size_garbage_in_the_image_cache_is_rebuilt(tmp_path, caplog):
    from PIL import Image

    from fracture.cache import ImageCache
    from fracture.cache import images as cache_images

    paths = []
    for i in range(40):
        img = (np.arange(48 * 40).reshape(48, 40) * (i + 3)) % 256
        paths.append(tmp_path / f"img{i}.png")
        Image.fromarray(img.astype(np.uint8)).save(paths[-1])
    spec = [{"op": "resize", "size": 16, "mode": "letterbox"}]
    root = tmp_path / "cache"
    cache = ImageCache.open_or_build(paths, spec, root, workers=0)
    good = np.array(cache.images)
    array_path = cache.directory / cache_images.ARRAY_NAME
    header_len = array_path.stat().st_size - good.nbytes
    del cache
    size = array_path.stat().st_size
    with open(array_path, "r+b") as fh:  # keep the .npy header, replace every pixel
        fh.seek(header_len)
        fh.write(np.random.default_rng(1).integers(0, 256, good.nbytes, dtype=np.uint8).tobytes())
    assert array_path.stat().st_size == size
    caplog.set_level(logging.WARNING, logger="fracture.cache.images")
    rebuilt = ImageCache.open_or_build(paths, spec, root, workers=0)
    assert rebuilt.built
    assert any("do not match their digest" in r.getMessage() for r in caplog.records)
    np.testing.assert_array_equal(np.asarray(rebuilt.images), good)
    assert rebuilt.verify() == []


# --------------------------------------------------------------------------
# Hostile run folders never hang or break the readers (runs list, Train page).


def test_garbage_and_special_files_in_a_run_folder_are_read_safely(tmp_path):
    run_dir = tmp_path / "run"
    log = EventLog(run_dir)
    log.emit("run_started", model="m", epochs=2, steps_per_epoch=3, monitor="val_loss")
    log.close()
    with open(run_dir / EVENTS_FILE, "ab") as fh:
        fh.write(b"\xff\xfe not utf-8\n")
        fh.write(b"5\n[1, 2]\n{\"event\": \"no_such_event\"}\n")
        fh.write(b"[" * 100_000 + b"\n")  # too deep for json
        fh.write(b"x" * (3 << 20) + b"\n")  # longer than any event
        fh.write(json.dumps({"event": "finished", "best_checkpoint": "b"}).encode() + b"\n")
    assert [e["event"] for e in read_events(run_dir)] == ["run_started", "finished"]
    assert run_status(run_dir).state == "finished"
    fifo_dir = tmp_path / "fifo"
    fifo_dir.mkdir()
    os.mkfifo(fifo_dir / EVENTS_FILE)
    os.mkfifo(fifo_dir / PID_FILE)
    assert read_events(fifo_dir) == [] and run_status(fifo_dir).state == "not_started"
    from fracture.util.files import read_pid

    assert read_pid(fifo_dir / PID_FILE) is None


def test_a_fifo_named_events_jsonl_is_refused_not_waited_on(demo_root, tmp_path):
    from fracture.util.files import NotRegularFileError
    from fracture.train.trainer import train

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    os.mkfifo(run_dir / EVENTS_FILE)
    with pytest.raises(NotRegularFileError, match="FIFO"):
        EventLog(run_dir)
    with pytest.raises(FractureError, match="events.jsonl"):  # a typed error, the CLI's one line
        train(tiny_config(demo_root, tmp_path), run_dir)  # (refused as a file this run did not write)
    assert not (run_dir / LOCK_FILE).exists()


def test_run_names_become_safe_folder_names(tmp_path):
    from fracture.train.launcher import new_run_dir, run_name_slug

    assert run_name_slug("My Baseline / CLAHE!") == "my-baseline-clahe"
    assert run_name_slug("../../etc") == "etc"
    assert run_name_slug("") == "" and run_name_slug(None) == ""
    named = new_run_dir(tmp_path, "small_cnn", "../../My run")
    assert named.parent == tmp_path and "-my-run-small_cnn-" in named.name
    assert new_run_dir(tmp_path, "small_cnn").parent == tmp_path


def test_the_rate_follows_the_mode_when_only_the_mode_changes():
    from fracture.recipes.config import TrainConfig
    from fracture.train.form import MODE_LR, config_from_form

    base = TrainConfig(data="x", mode="frozen", lr=1e-2)
    assert config_from_form(base, {"mode": "finetune", "lr": 1e-2}).lr == MODE_LR["finetune"]
    assert config_from_form(base, {"mode": "finetune", "lr": 5e-4}).lr == 5e-4  # a rate the person chose stays
    assert config_from_form(base, {"mode": "frozen", "lr": 1e-2}).lr == 1e-2
