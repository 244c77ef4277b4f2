"""A class's model work computed once and taken in turns (fracture.ui.shared_results, loaders.predict_study).

No timings: threads are held on events and the tests count what ran.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from fracture.ui.shared_results import ModelBusyError, ModelQueue, SharedResults

WAIT_S = 20  # an upper bound for a thread to reach a state, never a measured duration


def _until(condition) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "a thread never got there"
        time.sleep(0.005)


def _threads(n, target):
    threads = [threading.Thread(target=target, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    return threads


def test_five_sessions_asking_for_one_key_compute_it_once():
    shared = SharedResults(10_000)
    release, runs, got = threading.Event(), [], {}

    def compute():
        runs.append(1)
        release.wait(WAIT_S)
        return np.arange(10)

    threads = _threads(5, lambda i: got.__setitem__(i, shared.get_or_compute("k", compute, lambda v: v.nbytes)))
    _until(lambda: shared.joined == 4)  # four wait for the first one's computation
    release.set()
    for t in threads:
        t.join(WAIT_S)
    assert runs == [1] and shared.computed == 1 and len(got) == 5
    assert all(v is got[0] for v in got.values())
    assert shared.get_or_compute("k", compute, lambda v: v.nbytes) is got[0] and shared.hits == 1
    assert shared.in_flight() == 0 and len(shared) == 1 and shared.nbytes == got[0].nbytes


def test_a_failed_computation_reaches_every_waiter_and_is_not_kept():
    shared = SharedResults(10_000)
    release, errors = threading.Event(), []

    def compute():
        release.wait(WAIT_S)
        raise ValueError("model broke")

    def ask(i):
        try:
            shared.get_or_compute("k", compute, lambda v: 1)
        except ValueError as exc:
            errors.append(str(exc))

    threads = _threads(3, ask)
    _until(lambda: shared.joined == 2)
    release.set()
    for t in threads:
        t.join(WAIT_S)
    assert errors == ["model broke"] * 3 and len(shared) == 0 and shared.in_flight() == 0
    assert shared.get_or_compute("k", lambda: "fine", lambda v: 1) == "fine" and shared.computed == 2


def test_results_over_the_byte_budget_go_least_recently_used_first():
    shared = SharedResults(100)
    for key in "abc":
        shared.get_or_compute(key, lambda: key, lambda v: 40)
    assert len(shared) == 2 and shared.get("a") is None and shared.nbytes == 80
    assert shared.get_or_compute("big", lambda: "B", lambda v: 101) == "B" and shared.get("big") is None


def test_model_queue_serves_in_order_and_refuses_past_its_line():
    queue = ModelQueue(slots=1, max_waiting=2)
    hold, order, refused = threading.Event(), [], []

    def work(i):
        try:
            with queue.turn():
                order.append(i)
                if i == 0:
                    hold.wait(WAIT_S)
        except ModelBusyError as exc:
            refused.append(str(exc))

    first = _threads(1, work)
    _until(lambda: order == [0])
    second = _threads(1, lambda _: work(1))
    _until(lambda: queue.waiting == 1)
    third = _threads(1, lambda _: work(2))
    _until(lambda: queue.waiting == 2)
    work(3)  # the line is full: refused at once, said plainly
    assert refused and "the model is busy: 2 predictions are already waiting" in refused[0]
    hold.set()
    for t in first + second + third:
        t.join(WAIT_S)
    assert order == [0, 1, 2] and queue.ran == 3 and queue.refused == 1
    assert queue.peak_running == 1 and queue.peak_waiting == 2 and queue.waiting == 0


def test_model_queue_lets_the_next_go_when_a_waiter_leaves():
    queue = ModelQueue(slots=1, max_waiting=4)
    with queue.turn():
        pass
    with pytest.raises(RuntimeError):
        with queue.turn():
            raise RuntimeError("a forward failed")
    with queue.turn():  # the slot came back after the failure
        pass
    assert queue.ran == 3 and queue.waiting == 0


def _fake_prediction(images, names):
    from fracture.serve.predictor import ImagePrediction, StudyPrediction

    items = [ImagePrediction(name=n, prob=0.7, label="fractured", positive=True, body_part=None, body_part_prob=None,
                             image=img, heatmap=np.zeros(img.shape, np.float32)) for img, n in zip(images, names)]
    return StudyPrediction(images=items, study_prob=0.7, study_label="fractured", positive=True, threshold=0.5,
                           class_names=("not fractured", "fractured"), body_part=None, body_part_prob=None,
                           body_part_source="none", checkpoint="ckpt", preprocess=[])


def test_predict_study_runs_the_model_once_for_five_sessions_and_keeps_their_names(monkeypatch, tmp_path):
    from fracture.ui import loaders

    ckpt = tmp_path / "model.safetensors"
    ckpt.write_bytes(b"weights")
    release, calls = threading.Event(), []

    class FakePredictor:
        def predict(self, images, *, names, **options):
            calls.append(options)
            release.wait(WAIT_S)
            return _fake_prediction(images, names)

    monkeypatch.setattr(loaders, "_predictor", lambda path, signature: FakePredictor())
    loaders._prediction_cache.clear()
    loaders.model_queue.clear()
    image = np.full((40, 30), 7, np.uint8)
    got = {}
    try:
        threads = _threads(5, lambda i: got.__setitem__(
            i, loaders.predict_study(ckpt, [image.copy()], [f"student {i}.png"], with_cam=True)))
        shared = loaders.shared_predictions()
        _until(lambda: shared.joined == 4)
        release.set()
        for t in threads:
            t.join(WAIT_S)
        assert len(calls) == 1 and loaders.model_queue().ran == 1  # the model ran once for five sessions
        assert sorted(p.images[0].name for p in got.values()) == [f"student {i}.png" for i in range(5)]
        assert all(p.images[0].heatmap is got[0].images[0].heatmap for p in got.values())  # one shared map
        assert not got[0].images[0].heatmap.flags.writeable
        other = loaders.predict_study(ckpt, [image], ["x"], with_cam=True, cam_method="gradcam")
        assert len(calls) == 2 and calls[-1]["cam_method"] == "gradcam" and other.images[0].name == "x"
        ckpt.write_bytes(b"other weights")  # another checkpoint version: computed again
        loaders.predict_study(ckpt, [image], ["x"], with_cam=True, cam_method="gradcam")
        assert len(calls) == 3
    finally:
        release.set()
        loaders._prediction_cache.clear()
        loaders.model_queue.clear()


def test_background_work_waits_until_nobody_is_in_line():
    queue = ModelQueue(slots=1, max_waiting=4)
    hold, order = threading.Event(), []

    def person(i):
        with queue.turn():
            order.append(f"person {i}")
            if i == 0:
                hold.wait(WAIT_S)

    def background(_):
        with queue.idle_turn() as took:
            order.append(f"background {took}")

    people = _threads(1, person)
    _until(lambda: order == ["person 0"])
    later = _threads(1, background) + _threads(1, lambda _: person(1))
    _until(lambda: queue.waiting == 1)  # person 1 in line; the background work waits for an empty line
    hold.set()
    for t in people + later:
        t.join(WAIT_S)
    assert order == ["person 0", "person 1", "background True"] and queue.ran == 3
    stop = threading.Event()
    stop.set()
    with queue.turn(), queue.idle_turn(stop) as took:  # asked to stop while the model is busy: no turn
        assert took is False


def test_the_gallery_is_warmed_once_in_the_background_and_predict_then_needs_no_model(monkeypatch, tmp_path):
    from dataclasses import replace

    from PIL import Image

    from fracture.data import gallery as gallery_mod
    from fracture.data.gallery import GalleryItem
    from fracture.settings import get_settings
    from fracture.ui import loaders

    weights = tmp_path / "weights"
    weights.mkdir()
    ckpt = weights / "shipped.safetensors"
    ckpt.write_bytes(b"shipped weights")
    items = []
    for i in range(3):
        path = tmp_path / f"g{i}.png"
        Image.fromarray(np.full((20, 16), 40 * i, np.uint8)).save(path)
        items.append(GalleryItem(path=path, label=i % 2, body_part="hand", boxes=(), source_id=f"IMG{i}.jpg"))
    monkeypatch.setattr(gallery_mod, "load_gallery", lambda folder=None: items)
    settings = replace(get_settings(), weights_dir=weights)
    monkeypatch.setattr("fracture.settings.get_settings", lambda **_: settings)
    calls = []

    class FakePredictor:
        def predict(self, images, *, names, **options):
            calls.append(names[0])
            return _fake_prediction(images, names)

    loaders._prediction_cache.clear()
    loaders.model_queue.clear()
    loaders._warmups.clear()
    try:
        assert loaders.start_gallery_warmup(tmp_path / "runs-model.safetensors", FakePredictor()) is None  # a run
        thread = loaders.start_gallery_warmup(ckpt, FakePredictor())
        assert thread is not None and loaders.start_gallery_warmup(ckpt, FakePredictor()) is None  # once
        thread.join(WAIT_S)
        assert sorted(calls) == ["IMG0.jpg", "IMG1.jpg", "IMG2.jpg"] and len(loaders.shared_predictions()) == 3
        monkeypatch.setattr(loaders, "_predictor", lambda *a: pytest.fail("the model ran for a warmed X-ray"))
        image = np.asarray(Image.open(items[1].path))
        prediction = loaders.predict_study(ckpt, [image], ["IMG1.jpg"])  # as Predict asks for it
        assert prediction.images[0].name == "IMG1.jpg" and len(calls) == 3
    finally:
        loaders._prediction_cache.clear()
        loaders.model_queue.clear()
        loaders._warmups.clear()


def test_the_first_model_load_freezes_the_long_lived_objects_once(monkeypatch, tmp_path):
    import gc

    from fracture.ui import loaders
    from tests.app_support import write_tiny_run

    frozen = []
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(1))  # the real one would outlive this test
    monkeypatch.setattr(loaders, "_frozen_for", set())
    run = write_tiny_run(tmp_path / "runs", "tiny")
    loaders._predictor.clear()
    try:
        loaders.load_predictor(run / "best.safetensors")
        loaders.load_predictor(run / "best.safetensors")  # cached: no second load, no second freeze
        assert frozen == [1]
        assert loaders.freeze_long_lived("model") is False and frozen == [1]  # once per reason
        assert loaders.freeze_long_lived("reader") is True and loaders.freeze_long_lived("reader") is False
        assert loaders.freeze_long_lived() is True and frozen == [1, 1, 1]
    finally:
        loaders._predictor.clear()
