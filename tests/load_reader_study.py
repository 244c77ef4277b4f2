"""Classroom load test: N students answer a reader study and run Predict against ONE app server.

    nice -n 19 .venv/bin/python tests/load_reader_study.py --sessions 30 --duration 150 --out /tmp/load.json

Not a test (pytest does not collect it). It starts ``streamlit run app.py`` on
a free loopback port with a fresh FRACTURE_HOME, creates a reader study from
the built-in gallery with the shipped model (its heatmaps stored with it, as
the instructor's *Create session* does), builds the demo set as any machine
that ran the app once has it (``--first-start``: leave it to the server, which
builds it in the background during the test), then runs ``--sessions``
simulated browsers at once for ``--duration`` seconds. Each one speaks
Streamlit's own websocket protocol (the messages a browser sends: a script
run with the URL's query string, widget states, button triggers), so one
process can play 30 students without 30 Chromiums competing with the server
for the CPU. Half the students alternate Predict on a random gallery image
(``/Predict?input=Sample&xray=ID``) with their reading; every student reads.

A student's answer is three clicks: F or N, a confidence key, *Answer*;
then *Next*. Before each click a student looks for ``--think`` seconds on
average (default 0: clicks at once, a stress test). The latency of an answer
is from pressing *Answer* to the end of the script run that shows the reveal;
of a prediction, from opening the Predict URL to the end of its run (split
into the first request of an X-ray by any student and X-rays asked before).
At the end it prints (and writes as JSON) the server's peak RSS (the server
process and its children, sampled every 0.25 s from /proc), its CPU seconds,
the machine's load average, p50/p95/max latency per answer and per
prediction, and checks that every answer a student got a reveal for is in
their reader file on disk.

Only loopback traffic; bounded in time (``--duration``, then each student
finishes its current step) and count (``--sessions`` <= 60).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from browser_support import app_server  # noqa: E402

logger = logging.getLogger("load_reader_study")
PIN = "2468"
MAX_SESSIONS = 60
RUN_TIMEOUT_S = 300  # a fresh server under a busy CPU takes minutes for its first Predict


def _rss_kb(pid: int) -> int:
    """Resident memory of ``pid`` and all its descendants, from /proc (kB)."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        stack.extend(int(c) for c in children)
    return total


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak_kb, self._halt = pid, 0, threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.peak_kb = max(self.peak_kb, _rss_kb(self.pid))
            self._halt.wait(0.25)

    def stop(self) -> None:
        self._halt.set()


@dataclass
class Student:
    """One simulated browser tab: its websocket, the URL's query string, the widgets of the last run."""

    url: str
    name: str
    ws: object = None
    query: str = ""
    widgets: dict[str, str] = field(default_factory=dict)  # user key -> widget id
    texts: list[str] = field(default_factory=list)  # markdown/alert texts of the last run
    answered: list[str] = field(default_factory=list)
    token: str = ""  # the reader's key from the Reader Study's URL (rs-key), kept across a visit to Predict

    async def connect(self) -> None:
        import websockets

        self.ws = await websockets.connect(self.url.replace("http", "ws") + "/_stcore/stream",
                                           subprotocols=["streamlit"], max_size=None, open_timeout=60)

    async def run(self, page: str, query: str | None = None, triggers: tuple[str, ...] = ()) -> float:
        """One script run (or a run and the reruns it asks for); returns its seconds."""
        from streamlit.proto.BackMsg_pb2 import BackMsg
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        if query is not None:
            self.query = query
        msg = BackMsg()
        msg.rerun_script.query_string = self.query
        msg.rerun_script.page_name = page
        for key in triggers:
            state = msg.rerun_script.widget_states.widgets.add()
            state.id = self.widgets[key]
            state.trigger_value = True
        started = time.perf_counter()
        await self.ws.send(msg.SerializeToString())
        self.widgets, self.texts = {}, []
        while True:
            data = await asyncio.wait_for(self.ws.recv(), RUN_TIMEOUT_S)
            fwd = ForwardMsg()
            fwd.ParseFromString(data)
            kind = fwd.WhichOneof("type")
            if kind == "page_info_changed":
                self.query = fwd.page_info_changed.query_string
            elif kind == "delta" and fwd.delta.WhichOneof("type") == "new_element":
                self._note(fwd.delta.new_element)
            elif kind == "script_finished":
                if fwd.script_finished == ForwardMsg.FINISHED_EARLY_FOR_RERUN:
                    self.widgets, self.texts = {}, []
                    continue  # st.rerun(): the server starts the next run itself
                if fwd.script_finished == ForwardMsg.FINISHED_WITH_COMPILE_ERROR:
                    raise RuntimeError(f"{self.name}: the page failed to compile")
                return time.perf_counter() - started

    def _note(self, element) -> None:
        kind = element.WhichOneof("type")
        if kind == "exception":
            raise RuntimeError(f"{self.name}: the page raised {element.exception.message}")
        if kind in ("button", "text_input", "radio", "selectbox", "segmented_control", "button_group"):
            widget_id = getattr(element, kind).id
            self.widgets[widget_id.rsplit("-", 1)[-1] if "$$ID" not in widget_id else
                         widget_id.split("-", 2)[-1]] = widget_id
        elif kind == "markdown":
            self.texts.append(element.markdown.body)
        elif kind == "heading":
            self.texts.append(element.heading.body)
        elif kind == "alert":
            self.texts.append(element.alert.body)


async def student_loop(student: Student, code: str, gallery: list[str], predicts: bool, until: float,
                       answer_s: list[float], predict_s: list[float], errors: list[str], asked: set[str],
                       first_s: list[float], repeat_s: list[float], think_s: float = 0.0) -> None:
    """One student: join, then (Predict a random gallery X-ray, when ``predicts``) and answer a case, until
    ``until``. ``asked`` holds the X-rays any student asked the server for already: a prediction of one of
    those goes to ``repeat_s`` (the server may answer it from its shared results), else to ``first_s``.
    Before each click the student looks for ``think_s`` seconds on average (0.5-1.5 times it, seeded)."""
    rng = random.Random(student.name)

    async def look() -> None:
        if think_s > 0:
            await asyncio.sleep(think_s * rng.uniform(0.5, 1.5))
    try:
        await student.connect()
        joined = await student.run("Reader_Study", urlencode({"rs-code": code, "rs-name": student.name}))
        student.token = _token(student.query)  # Predict's URL replaces the query: keep the reader's key
        logger.info("%s joined in %.2f s", student.name, joined)
        while time.monotonic() < until:
            if predicts:
                xray = rng.choice(gallery)
                repeat = xray in asked
                asked.add(xray)
                predict_s.append(await student.run("Predict", urlencode({"input": "Sample", "xray": xray})))
                (repeat_s if repeat else first_s).append(predict_s[-1])
                logger.info("%s predicted %s in %.2f s%s", student.name, xray, predict_s[-1],
                            " (asked before)" if repeat else "")
                await student.run("Reader_Study", urlencode({"rs-code": code, "rs-name": student.name,
                                                             "rs-key": student.token}))
            if "rs-answer" not in student.widgets:
                if not any("Your results" in t for t in student.texts):
                    errors.append(f"{student.name}: no case and no results page: {student.texts[-3:]}")
                break  # every case read: the results page
            call = rng.choice(["rs-f", "rs-n"])
            await look()
            await student.run("Reader_Study", triggers=(call,))
            await look()
            await student.run("Reader_Study", triggers=(f"rs-level-{rng.randint(1, 5)}",))
            await look()
            answer_s.append(await student.run("Reader_Study", triggers=("rs-answer",)))
            logger.info("%s answered in %.2f s", student.name, answer_s[-1])
            if not any("Truth:" in t for t in student.texts):
                errors.append(f"{student.name}: no reveal after Answer")
                break
            student.answered.append(time.time())
            await look()
            await student.run("Reader_Study", triggers=("rs-next",))
    except Exception as exc:  # noqa: BLE001 - a load test reports every failure and goes on with the others
        errors.append(f"{student.name}: {type(exc).__name__}: {exc}")
    finally:
        if student.ws is not None:
            await student.ws.close()


def _token(query: str) -> str:
    from urllib.parse import parse_qs

    return (parse_qs(query).get("rs-key") or [""])[0]


def _percentiles(values: list[float]) -> dict[str, float | int | None]:
    import numpy as np

    if not values:
        return {"n": 0, "p50_s": None, "p95_s": None, "max_s": None}
    arr = np.asarray(values)
    return {"n": int(arr.size), "p50_s": round(float(np.percentile(arr, 50)), 3),
            "p95_s": round(float(np.percentile(arr, 95)), 3), "max_s": round(float(arr.max()), 3)}


async def _drive(url: str, code: str, n: int, duration: float, gallery: list[str], think_s: float = 0.0) -> dict:
    answer_s: list[float] = []
    predict_s: list[float] = []
    first_s: list[float] = []
    repeat_s: list[float] = []
    errors: list[str] = []
    asked: set[str] = {gallery[0]}  # the warm-up predicts it
    warm = Student(url=url, name="warm-up")  # a fresh server imports torch on its first runs: not timed
    await warm.connect()
    await warm.run("Reader_Study", urlencode({"rs-code": code}))
    await warm.run("Predict", urlencode({"input": "Sample", "xray": gallery[0]}))
    await warm.ws.close()
    logger.info("server warm; students start")
    students = [Student(url=url, name=f"Student {i + 1:02d}") for i in range(n)]
    until = time.monotonic() + duration
    try:  # bounded: the answering time, then at most RUN_TIMEOUT_S for the steps under way
        await asyncio.wait_for(asyncio.gather(*(
            student_loop(s, code, gallery, i % 2 == 0, until, answer_s, predict_s, errors, asked, first_s, repeat_s,
                         think_s)
            for i, s in enumerate(students))), duration + RUN_TIMEOUT_S)
    except asyncio.TimeoutError:
        errors.append(f"students still busy {RUN_TIMEOUT_S} s after the end: stopped")
    return {"students": students, "answer_s": answer_s, "predict_s": predict_s, "errors": errors,
            "predict_first_s": first_s, "predict_repeat_s": repeat_s}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=30, help=f"simulated students (1-{MAX_SESSIONS})")
    parser.add_argument("--duration", type=float, default=180.0, help="seconds of answering (default 180)")
    parser.add_argument("--cases", type=int, default=20, help="cases in the study (default 20)")
    parser.add_argument("--think", type=float, default=0.0,
                        help="seconds a student looks before each click, on average (default 0: click at once)")
    parser.add_argument("--first-start", action="store_true",
                        help="leave the demo set to the server, which builds it in the background while the class "
                             "works (a machine's very first start); default: built before the server starts, as on "
                             "any machine that ran the app once")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if not 1 <= args.sessions <= MAX_SESSIONS:
        parser.error(f"--sessions: 1 to {MAX_SESSIONS}")
    home = Path(tempfile.mkdtemp(prefix="classroom-load-"))
    os.environ["FRACTURE_HOME"] = str(home)
    from fracture.data.gallery import load_gallery
    from fracture.reader_study import create_session, load_readers
    from fracture.serve.predictor import default_checkpoint

    session = create_session(pin=PIN, source="gallery", n_cases=args.cases, seed=0, checkpoint=default_checkpoint())
    if not args.first_start:
        from fracture.settings import get_settings
        from fracture.ui.demo import demo_studies, ensure_demo_dataset

        started = time.perf_counter()
        ensure_demo_dataset(get_settings().demo_dir, studies=demo_studies())
        logger.info("demo set built before the server starts (%.0f s)", time.perf_counter() - started)
    gallery = [item.key for item in load_gallery()]
    logger.info("session %s (%d cases); %d students for %.0f s", session.code, len(session.cases), args.sessions,
                args.duration)
    extra = {"STREAMLIT_SERVER_ENABLE_XSRF_PROTECTION": "false"}  # the test client sends no cookie
    with app_server(home, extra_env=extra) as url:
        pid = _server_pid(url)
        sampler = RssSampler(pid)
        sampler.start()
        load_before = os.getloadavg()
        cpu_before = _cpu_s(pid)
        started = time.perf_counter()
        result = asyncio.run(_drive(url, session.code, args.sessions, args.duration, gallery, args.think))
        wall = time.perf_counter() - started
        server_cpu = _cpu_s(pid) - cpu_before
        load_after = os.getloadavg()
        sampler.stop()
        sampler.join()
    on_disk = load_readers(session)
    given = {s.name: len(s.answered) for s in result["students"]}
    stored = {name: len(reader.answers) for name, reader in on_disk.readers.items()}
    lost = {name: given[name] - stored.get(name, 0) for name in given if stored.get(name, 0) < given[name]}
    report = {
        "sessions": args.sessions, "duration_s": round(wall, 1), "cases": len(session.cases),
        "think_s": args.think, "first_start": args.first_start,
        "server_peak_rss_mb": round(sampler.peak_kb / 1024, 1),
        "answer": _percentiles(result["answer_s"]), "predict": _percentiles(result["predict_s"]),
        "predict_first_of_its_image": _percentiles(result["predict_first_s"]),
        "predict_image_asked_before": _percentiles(result["predict_repeat_s"]),
        "server_cpu_s": round(server_cpu, 1),
        "machine": {"cpus": os.cpu_count(), "loadavg_1min_before": round(load_before[0], 2),
                    "loadavg_1min_after": round(load_after[0], 2)},
        "answers_given": sum(given.values()), "answers_on_disk": sum(stored.values()), "answers_lost": lost,
        "damaged_reader_files": on_disk.problems, "errors": result["errors"],
    }
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    return 0 if not lost and not result["errors"] and not on_disk.problems else 1


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) the server process has used, its threads included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _server_pid(url: str) -> int:
    """The pid listening on the server's port (the `streamlit run` child of this process)."""
    port = url.rsplit(":", 1)[-1]
    me = os.getpid()
    for child in Path(f"/proc/{me}/task/{me}/children").read_text().split():
        cmdline = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        if "streamlit" in cmdline and port in cmdline:
            return int(child)
    raise RuntimeError(f"no streamlit child serving {url}")


if __name__ == "__main__":
    raise SystemExit(main())
