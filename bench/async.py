#!/usr/bin/env python3
"""Async task benchmark: ``POST /ocr/async`` with signed callbacks, embedded and on Celery.

    python bench/async.py                         # 500 tasks, embedded then celery
    python bench/async.py --tasks 20              # a quick check that everything runs
    python bench/async.py --modes celery --submitters 16
    python bench/async.py --write-results         # also update bench/RESULTS.md

What is measured is the task machinery (submit, store, queue, run, signed callback), not OCR:
every task is one of a few of the smallest images of ``shared/eval/speed``, cycled, sent as
``image_base64`` with a ``callback_url`` pointing at a receiver inside this process (a threaded
HTTP server on 127.0.0.1 that verifies every signature with ``ocrserve.webhooks.verify`` and
records each arrival by ``webhook-id``).

Each mode starts its own fresh processes, all on 127.0.0.1:

- embedded: one ``ocrserve serve`` (task table in SQLite under a fresh data folder, tasks run
  by the server's own workers through its batcher);
- celery: ``ocrserve serve`` as the API node plus one ``ocrserve worker``, with PostgreSQL
  (``postgresql://postgres@127.0.0.1:5432/test``, table ``ocr_tasks`` dropped first) and
  RabbitMQ (``amqp://guest:guest@127.0.0.1:5672//``, a queue of its own per run).

A few untimed warm-up tasks go first (their callbacks prove the worker is up and the models
loaded); then ``--tasks`` tasks are submitted by ``--submitters`` concurrent httpx clients as
fast as the API accepts them, and the script waits for every callback (a generous deadline).
Per mode: submit throughput and 202 latency, end-to-end throughput (tasks over first submit to
last callback), submit-to-callback p50/p99, lost (accepted, never called back), duplicate
deliveries (one ``webhook-id`` delivered more than once) and failed tasks (status not
``succeeded``). Task timestamps read back from ``GET /task/{id}`` afterwards split the time
into queue wait, run and callback delay. Raw data (every task) lands in ``bench/out/``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy

# bench/ is not a package: running this file puts bench/ first on sys.path, so the harness
# and the tables import as top-level modules and all reports share one machine line.
from harness import (
    DEFAULT_EVAL_DIR,
    HOST,
    ROOT,
    Proc,
    Receiver,
    env_overrides,
    free_port,
    machine_busy_s,
    machine_header,
    machine_info,
    new_run,
    ocrserve_cmd,
    percentile,
    pkg,
    wait_ready,
)
from tables import (
    RESULTS_MD,
    comma_list,
    fmt,
    positive,
    publish,
    raw_args,
    table_head,
    table_row,
)

from ocrserve.jobs.store import TABLE, make_engine
from ocrserve.webhooks import generate_secret

MODES = ("embedded", "celery")
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"
SPEED = "speed"
#: Four of the five smallest speed images (14-43 KB, at most 476x368): a task's OCR stays
#: short, so the numbers are about the task machinery. zh_scene_gate_1.jpg (312 KB,
#: 720x1150) is not small and is left out on purpose.
IMAGES = (
    "en_line_long_text.jpg",
    "de_scene_sign_ger_1.jpg",
    "zh_doc_certificate.jpeg",
    "zh_label_clothing_00009282.jpg",
)
WARMUP_TASKS = 2  # one per default lane on 2 cores: both lanes have run once before timing

READY_TIMEOUT_S = 600.0  # spawn to /ready, and warm-up callbacks (model loading included)
SUBMIT_TIMEOUT_S = 60.0  # one POST; longer means the API is stuck, not busy
SUBMIT_TRIES = 20  # per task, on 429/503 or a transport error (Idempotency-Key makes it safe)
REJECT_BACKOFF_S = (0.5, 5.0)  # default and cap of the wait after a 429/503
#: No new callback for this long while tasks are outstanding: the service is stuck. The
#: longest legitimate gap is a task's run plus the callback schedule (1 + 5 + 15 s) plus the
#: Celery sweeper's 60 s for a lost message, far below this.
STALL_S = 300.0
#: Kept listening after the last first delivery, so that late duplicates are counted too.
SETTLE_S = 5.0
VIEW_TIMEOUT_S = 300.0  # reading every task back after the run, all of it
POLL_S = 0.2
PROGRESS_EVERY_S = 10.0


def default_timeout(tasks: int) -> float:
    # Generous: ~4 s a task is several times what 2 shared cores need for these images.
    return 300.0 + 4.0 * tasks


# --------------------------------------------------------------------------- the processes


#: Non-JSON output lines worth reporting; the rest is Celery's start banner.
RAW_NOTABLE = ("error", "exception", "traceback", "warning", "critical", "killed")


def drop_task_table(url: str) -> None:
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text(f"DROP TABLE IF EXISTS {TABLE}"))
    finally:
        engine.dispose()


def read_runs(url: str, ids: set[str]) -> dict[str, int]:
    """How many times each of our tasks was started, straight from the task table."""
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            rows = conn.execute(sqlalchemy.text(f"SELECT id, runs FROM {TABLE}")).all()
    finally:
        engine.dispose()
    return {str(i): int(r) for i, r in rows if str(i) in ids}


def drain_queue(broker: str, queue: str) -> int | None:
    """Messages left in this run's queue (then deleted, so runs leave nothing behind)."""
    from kombu.connection import Connection

    with Connection(broker, connect_timeout=10) as conn:  # type: ignore[no-untyped-call]
        channel = conn.channel()
        try:
            _, left, _ = channel.queue_declare(queue=queue, passive=True)
        except Exception:  # never declared: no task reached the broker
            return None
        channel.queue_delete(queue=queue)
        return int(left)


class QueueProbe:
    """Samples the ready messages in the run's Celery queue once a second, on its own thread.

    More ready messages than tasks still waiting for their callback means the broker carries
    duplicates (a sweeper re-sending queued tasks, retries): a cost the task table hides.
    """

    def __init__(self, broker: str, queue: str, waiting: Callable[[], int], t0: float) -> None:
        self.broker, self.queue, self.waiting, self.t0 = broker, queue, waiting, t0
        self.samples: list[tuple[float, int, int]] = []  # (s after t0, ready, waiting)
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="queue-probe", daemon=True)

    def __enter__(self) -> QueueProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)

    def _main(self) -> None:
        from kombu.connection import Connection

        try:
            with Connection(self.broker, connect_timeout=10) as conn:  # type: ignore[no-untyped-call]
                channel = conn.channel()
                while not self._stop.wait(1.0):
                    _, ready, _ = channel.queue_declare(queue=self.queue, passive=True)
                    at = time.perf_counter() - self.t0
                    self.samples.append((at, int(ready), self.waiting()))
        except Exception as e:  # evidence only: the benchmark goes on without it
            self.error = f"{type(e).__name__}: {e}"


# --------------------------------------------------------------------------- the clients


@dataclass(frozen=True)
class Image:
    name: str
    b64: str


def submit_body(image: Image, callback: str, tag: str, index: int) -> bytes:
    body = {
        "image_base64": image.b64,
        "callback_url": callback,
        "metadata": {"bench": tag, "index": index, "image": image.name},
    }
    return json.dumps(body).encode()


async def submit_all(
    base_url: str, bodies: Sequence[tuple[str, bytes]], submitters: int, t0: float, key: str
) -> list[dict[str, Any]]:
    """POST every body; ``submitters`` clients each take the next one as soon as they are free.

    Times are seconds after ``t0`` (perf_counter). A 429/503 or a transport error is retried
    with the same ``Idempotency-Key``, so a timed-out POST that did create its task cannot
    create a second one.
    """
    limits = httpx.Limits(max_connections=submitters, max_keepalive_connections=submitters)
    timeout = httpx.Timeout(SUBMIT_TIMEOUT_S, connect=10.0)
    records: list[dict[str, Any]] = [{} for _ in bodies]
    todo = iter(range(len(bodies)))  # shared: one event loop, so no lock is needed

    async def submitter(client: httpx.AsyncClient) -> None:
        for i in todo:
            image, body = bodies[i]
            rec: dict[str, Any] = {"index": i, "image": image, "tries": 0, "rejected": 0}
            records[i] = rec
            headers = {"content-type": "application/json", "idempotency-key": f"{key}-{i}"}
            for _ in range(SUBMIT_TRIES):
                rec["tries"] += 1
                sent = time.perf_counter()
                rec.setdefault("first_sent", sent - t0)
                try:
                    r = await client.post("/ocr/async", content=body, headers=headers)
                except httpx.TransportError as e:
                    rec["exception"] = f"{type(e).__name__}: {e}"
                    continue
                rec.update(sent=sent - t0, done=time.perf_counter() - t0, status=r.status_code)
                if r.status_code in (429, 503):
                    rec["rejected"] += 1
                    await asyncio.sleep(retry_after(r))
                    continue
                if r.status_code == 202:
                    rec["task_id"] = r.json()["task_id"]
                    rec["replayed"] = r.headers.get("idempotent-replayed") == "true"
                else:
                    rec["body"] = r.text[:300]
                break

    async with httpx.AsyncClient(
        base_url=base_url, trust_env=False, timeout=timeout, limits=limits
    ) as client:
        await asyncio.gather(*(submitter(client) for _ in range(submitters)))
    return records


def retry_after(r: httpx.Response) -> float:
    default, cap = REJECT_BACKOFF_S
    try:
        return min(float(r.headers.get("retry-after", default)), cap)
    except ValueError:
        return default


async def read_tasks(base_url: str, ids: Sequence[str], concurrency: int) -> dict[str, Any]:
    """``GET /task/{id}`` for every task, keeping timestamps and callback state, not text."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    out: dict[str, Any] = {}
    todo = iter(ids)

    async def reader(client: httpx.AsyncClient) -> None:
        for task_id in todo:
            try:
                r = await client.get(f"/task/{task_id}")
            except httpx.HTTPError as e:
                out[task_id] = {"view_error": f"{type(e).__name__}: {e}"}
                continue
            if r.status_code != 200:
                out[task_id] = {"view_error": f"HTTP {r.status_code}: {r.text[:200]}"}
                continue
            t = r.json()
            cb = t.get("callback") or {}
            out[task_id] = {
                "status": t["status"],
                **{k: _ts(t.get(k)) for k in ("created_at", "started_at", "finished_at")},
                "error": t.get("error"),
                "callback_state": cb.get("state"),
                "callback_attempts": len(cb.get("attempts") or []),
                "callback_last_error": cb.get("last_error"),
            }

    async with httpx.AsyncClient(
        base_url=base_url, trust_env=False, timeout=30.0, limits=limits
    ) as client:
        await asyncio.wait_for(
            asyncio.gather(*(reader(client) for _ in range(concurrency))), VIEW_TIMEOUT_S
        )
    return out


def _ts(value: str | None) -> float | None:
    return datetime.fromisoformat(value).timestamp() if value else None


# --------------------------------------------------------------------------- one mode


def mode_env(mode: str, data_dir: Path, secret: str, queue: str, db: str) -> dict[str, str]:
    env = {
        **os.environ,
        "OCRSERVE_DATA_DIR": str(data_dir),
        "OCRSERVE_ALLOW_PRIVATE_URLS": "1",  # the receiver is on loopback, over plain http
        "OCRSERVE_LOG_LEVEL": "warning",
        "OCRSERVE_WEBHOOK_SECRET": secret,
        # The services' own httpx clients honour proxy variables; loopback must stay loopback.
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    if mode == "celery":
        env.update(
            OCRSERVE_DATABASE_URL=db,
            OCRSERVE_BROKER_URL=AMQP_URL,
            OCRSERVE_TASK_QUEUE=queue,
        )
    return env


def wait_callbacks(
    receiver: Receiver, ids: set[str], procs: Sequence[Proc], timeout: float, label: str
) -> str:
    """Until every task in ``ids`` was called back; returns why the wait ended."""
    t_start = time.monotonic()
    deadline = t_start + timeout
    last_count, last_change, last_print = -1, t_start, t_start
    while True:
        got = ids & receiver.first_arrivals().keys()
        now = time.monotonic()
        if len(got) != last_count:
            last_count, last_change = len(got), now
        if len(got) == len(ids):
            return "all called back"
        if any(not p.alive() for p in procs):
            dead = ", ".join(f"{p.name} ({p.proc.returncode})" for p in procs if not p.alive())
            return f"process exited: {dead}"
        if now > deadline:
            return f"timeout after {timeout:.0f} s"
        if now - last_change > STALL_S:
            return f"stalled: no callback for {STALL_S:.0f} s"
        if now - last_print > PROGRESS_EVERY_S:
            last_print = now
            print(
                f"[async] {label}: {len(got)}/{len(ids)} called back", file=sys.stderr, flush=True
            )
        time.sleep(POLL_S)


def warm_up(
    base_url: str, receiver: Receiver, image: Image, procs: Sequence[Proc], key: str
) -> list[str]:
    bodies = [
        (image.name, submit_body(image, receiver.url, "warmup", i)) for i in range(WARMUP_TASKS)
    ]
    recs = asyncio.run(submit_all(base_url, bodies, WARMUP_TASKS, time.perf_counter(), key))
    ids = [r["task_id"] for r in recs if "task_id" in r]
    if len(ids) != WARMUP_TASKS:
        raise RuntimeError(f"warm-up submit failed: {recs}")
    why = wait_callbacks(receiver, set(ids), procs, READY_TIMEOUT_S, "warm-up")
    if why != "all called back":
        raise RuntimeError(f"warm-up: {why}: {procs[-1].tail()}")
    return ids


def run_mode(
    mode: str, args: argparse.Namespace, images: Sequence[Image], run: Path
) -> dict[str, Any]:
    secret = generate_secret()
    queue = f"ocrserve-bench-{uuid.uuid4().hex[:8]}"
    res: dict[str, Any] = {"mode": mode, "tasks_requested": args.tasks}
    if mode == "celery":
        res.update(database=args.database_url, broker=AMQP_URL, queue=queue)
    with contextlib.ExitStack() as stack:
        data_dir = Path(tempfile.mkdtemp(prefix=f"ocrserve-async-{mode}-"))
        stack.callback(shutil.rmtree, data_dir, ignore_errors=True)
        receiver = stack.enter_context(Receiver.running(secret))
        procs: list[Proc] = []
        db_url = args.database_url if mode == "celery" else f"sqlite:///{data_dir / 'tasks.db'}"
        try:
            env = mode_env(mode, data_dir, secret, queue, args.database_url)
            if mode == "celery":
                drop_task_table(db_url)  # counts and runs below are this run's only
            port = free_port()
            base_url = f"http://{HOST}:{port}"
            serve = ocrserve_cmd("serve", "--host", HOST, "--port", str(port))
            name = "api" if mode == "celery" else "server"
            log = run / f"{mode}-serve.log"
            procs.append(Proc(name, serve, env, log, raw_notable=RAW_NOTABLE))
            stack.callback(procs[-1].stop)
            if mode == "celery":
                # Drained and deleted after the worker stopped (callbacks run LIFO).
                stack.callback(_drain_into, res, queue)
                log = run / f"{mode}-worker.log"
                procs.append(
                    Proc("worker", ocrserve_cmd("worker"), env, log, raw_notable=RAW_NOTABLE)
                )
                stack.callback(procs[-1].stop)
            t_wait = time.perf_counter()
            ready = wait_ready(base_url, procs, timeout_s=READY_TIMEOUT_S, poll_s=POLL_S)
            res["ready_s"] = ready - t_wait
            t_warm = time.perf_counter()
            warm_ids = warm_up(base_url, receiver, images[0], procs, f"{queue}-warm")
            res["warmup_s"] = time.perf_counter() - t_warm
            res["warmup_ids"] = warm_ids
            print(
                f"[async] {mode}: ready in {res['ready_s']:.1f} s, warm-up {res['warmup_s']:.1f} s",
                file=sys.stderr,
                flush=True,
            )
            measure(mode, args, images, base_url, receiver, procs, queue, res)
            res["runs"] = read_runs(
                db_url, {r["task_id"] for r in res["submits"] if "task_id" in r}
            )
        except Exception as e:  # the other mode still runs; the report says what broke
            res["error"] = f"{type(e).__name__}: {e}"
            print(f"[async] {mode}: FAILED {res['error']}", file=sys.stderr, flush=True)
        finally:
            res["invalid_signatures"] = list(receiver.invalid)
            res["stops"] = [p.stop() for p in reversed(procs)]
    return res


def _drain_into(res: dict[str, Any], queue: str) -> None:
    try:
        res["queue_left"] = drain_queue(AMQP_URL, queue)
    except Exception as e:  # cleanup only: report it, keep the results
        res["queue_left_error"] = f"{type(e).__name__}: {e}"


def measure(
    mode: str,
    args: argparse.Namespace,
    images: Sequence[Image],
    base_url: str,
    receiver: Receiver,
    procs: Sequence[Proc],
    queue: str,
    res: dict[str, Any],
) -> None:
    bodies = [
        (images[i % len(images)].name, submit_body(images[i % len(images)], receiver.url, mode, i))
        for i in range(args.tasks)
    ]
    cpu0 = cpu_snapshot(procs)
    t0 = time.perf_counter()
    wall0 = time.time()
    warm = set(res.get("warmup_ids", []))

    def waiting() -> int:
        return int(args.tasks) - len(receiver.first_arrivals().keys() - warm)

    probe = QueueProbe(AMQP_URL, queue, waiting, t0) if mode == "celery" else None
    with probe or contextlib.nullcontext():
        submits = asyncio.run(submit_all(base_url, bodies, args.submitters, t0, f"{queue}-task"))
        res["submit_wall_s"] = time.perf_counter() - t0
        res["submits"] = submits  # kept even if the wait below breaks
        ids = {r["task_id"] for r in submits if "task_id" in r}
        print(
            f"[async] {mode}: {len(ids)}/{args.tasks} accepted in {res['submit_wall_s']:.1f} s",
            file=sys.stderr,
            flush=True,
        )
        timeout = args.timeout if args.timeout is not None else default_timeout(args.tasks)
        res["wait_ended"] = wait_callbacks(receiver, ids, procs, timeout, mode)
        t_end = time.perf_counter()
        time.sleep(SETTLE_S)
    if probe is not None:
        res["queue_samples"] = probe.samples
        res["queue_probe_error"] = probe.error
    cpu1 = cpu_snapshot(procs)
    res["cpu"] = cpu_usage(cpu0, cpu1, t_end + SETTLE_S - t0, [p.name for p in procs])
    res["rss_mb"] = {p.name: p.rss_mb() for p in procs}
    res["arrivals"] = [{**a._asdict(), "at": a.at - t0} for a in receiver.snapshot()]
    res["t0_wall"] = wall0
    # Read back after the clock stopped: these GETs are not part of what is measured.
    try:
        res["tasks"] = asyncio.run(read_tasks(base_url, sorted(ids), args.submitters))
    except Exception as e:
        res["tasks"] = {}
        res["tasks_error"] = f"{type(e).__name__}: {e}"


def cpu_snapshot(procs: Sequence[Proc]) -> dict[str, float]:
    own = os.times()
    snap = {"machine": machine_busy_s(), "bench": own.user + own.system}
    snap.update({p.name: p.cpu_s() for p in procs})
    return snap


def cpu_usage(
    before: dict[str, float], after: dict[str, float], wall: float, names: Sequence[str]
) -> dict[str, float]:
    """CPU % of one core for each process over the window, and what other processes took."""
    delta = {k: after[k] - before[k] for k in before}
    ours = sum(delta[k] for k in ("bench", *names))
    out = {f"{k}_pct": 100 * delta[k] / wall for k in ("bench", *names)}
    cores = len(os.sched_getaffinity(0)) or 1
    out["other_pct_of_machine"] = 100 * max(0.0, delta["machine"] - ours) / (cores * wall)
    out["wall_s"] = wall
    return out


# --------------------------------------------------------------------------- summary


def summarise(res: dict[str, Any]) -> dict[str, Any]:
    submits: list[dict[str, Any]] = res.get("submits", [])
    accepted = [r for r in submits if "task_id" in r]
    if not accepted:
        return {"accepted": 0}
    ids = {r["task_id"] for r in accepted}
    arrivals = [a for a in res["arrivals"] if a["task_id"] in ids]
    first: dict[str, dict[str, Any]] = {}
    for a in arrivals:
        first.setdefault(a["task_id"], a)
    by_id = Counter(a["webhook_id"] for a in arrivals)
    ids_per_task: dict[str, set[str]] = {}
    for a in arrivals:
        ids_per_task.setdefault(a["task_id"], set()).add(a["webhook_id"])
    warm = set(res.get("warmup_ids", []))
    foreign = [a for a in res["arrivals"] if a["task_id"] not in ids | warm]

    t_first = min(r["first_sent"] for r in accepted)
    t_last_202 = max(r["done"] for r in accepted)
    lat_202 = [r["done"] - r["sent"] for r in accepted]
    to_cb = [first[r["task_id"]]["at"] - r["first_sent"] for r in accepted if r["task_id"] in first]
    out: dict[str, Any] = {
        "accepted": len(accepted),
        "submit_errors": Counter(
            str(r.get("status") or r.get("exception", "no answer").split(":")[0])
            for r in submits
            if "task_id" not in r
        ),
        "rejections": sum(r["rejected"] for r in submits),
        "retried_submits": sum(1 for r in submits if r["tries"] > 1),
        "submit_per_s": len(accepted) / (t_last_202 - t_first),
        "accept_p50_ms": 1000 * percentile(lat_202, 0.50),
        "accept_p99_ms": 1000 * percentile(lat_202, 0.99),
        "delivered": len(first),
        "lost": len(ids - first.keys()),
        "lost_ids": sorted(ids - first.keys()),
        "duplicates": sum(n - 1 for n in by_id.values()),
        "duplicate_ids": sorted(k for k, n in by_id.items() if n > 1),
        # A second, different event for one task (e.g. a second terminal status) is not a
        # duplicate of a webhook-id, but a receiver would still see two outcomes.
        "multi_event_tasks": sum(1 for hooks in ids_per_task.values() if len(hooks) > 1),
        "statuses": Counter(a["status"] for a in first.values()),
        "failed": sum(1 for a in first.values() if a["status"] != "succeeded"),
        "foreign_callbacks": len(foreign),
        "invalid_signatures": len(res.get("invalid_signatures", [])),
    }
    if first:
        t_last_cb = max(a["at"] for a in first.values())
        out.update(
            e2e_per_s=len(first) / (t_last_cb - t_first),
            e2e_wall_s=t_last_cb - t_first,
            to_callback_p50_s=percentile(to_cb, 0.50),
            to_callback_p99_s=percentile(to_cb, 0.99),
        )
    out.update(server_split(res, first))
    if "runs" in res:
        out["rows"] = len(res["runs"])
        out["runs"] = Counter(str(n) for n in res["runs"].values())
    samples = res.get("queue_samples")
    if samples:
        out["queue_peak_ready"] = max(ready for _, ready, _ in samples)
        out["queue_peak_excess"] = max(0, *(ready - waiting for _, ready, waiting in samples))
    return out


def server_split(res: dict[str, Any], first: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Queue wait, run time and callback delay from the server's own task timestamps."""
    views = {k: v for k, v in res.get("tasks", {}).items() if "view_error" not in v}
    wait = [v["started_at"] - v["created_at"] for v in views.values() if v.get("started_at")]
    work = [
        v["finished_at"] - v["started_at"]
        for v in views.values()
        if v.get("started_at") and v.get("finished_at")
    ]
    # Both clocks are time.time() on this machine: the receiver's and the server's.
    delay = [
        first[k]["wall"] - v["finished_at"]
        for k, v in views.items()
        if v.get("finished_at") and k in first
    ]
    out: dict[str, Any] = {
        "views": len(views),
        "view_errors": len(res.get("tasks", {})) - len(views),
        "callback_retried": sum(1 for v in views.values() if v["callback_attempts"] > 1),
        "callback_states": Counter(str(v["callback_state"]) for v in views.values()),
    }
    for name, vals in (("queue_wait", wait), ("run", work), ("callback_delay", delay)):
        if vals:
            out[f"{name}_p50_s"] = percentile(vals, 0.50)
            out[f"{name}_p99_s"] = percentile(vals, 0.99)
    return out


# --------------------------------------------------------------------------- report

TITLES = {
    "embedded": "embedded (one `ocrserve serve`, SQLite)",
    "celery": "celery (API node + 1 `ocrserve worker`, PostgreSQL + RabbitMQ)",
}


def render(
    modes: Sequence[str],
    results: dict[str, dict[str, Any]],
    summaries: dict[str, dict[str, Any]],
    machine: dict[str, Any],
    run_line: str,
    notes: list[str],
) -> str:
    lines = [
        "## Async tasks: submit, run, signed callback",
        "",
        machine_header(machine, ("ocrserve", "celery")),
        "",
        run_line,
        "",
    ]
    head = [
        "mode",
        "tasks",
        "submit tasks/s",
        "202 p50 ms",
        "202 p99 ms",
        "end-to-end tasks/s",
        "to callback p50 s",
        "to callback p99 s",
        "lost",
        "duplicates",
        "failed",
    ]
    lines += table_head(head)
    for mode in modes:
        s, res = summaries[mode], results[mode]
        name = TITLES[mode] + (" (FAILED, see notes)" if "error" in res else "")
        if not s.get("accepted"):
            lines.append(table_row([name, "0", *["-"] * (len(head) - 2)]))
            continue
        lines.append(
            table_row(
                [
                    name,
                    str(s["accepted"]),
                    fmt(s.get("submit_per_s"), ".1f"),
                    fmt(s.get("accept_p50_ms"), ".0f"),
                    fmt(s.get("accept_p99_ms"), ".0f"),
                    fmt(s.get("e2e_per_s"), ".2f"),
                    fmt(s.get("to_callback_p50_s"), ".1f"),
                    fmt(s.get("to_callback_p99_s"), ".1f"),
                    str(s["lost"]),
                    str(s["duplicates"]),
                    str(s["failed"]),
                ]
            )
        )
    lines += ["", "Where the time goes (the server's task timestamps, read back afterwards):", ""]
    head2 = [
        "mode",
        "queue wait p50 / p99 s",
        "run p50 / p99 s",
        "finished to callback p50 / p99 s",
        "callbacks retried",
        "tasks run twice",
        "CPU % (one core = 100)",
        "other processes % of machine",
    ]
    lines += table_head(head2)
    for mode in modes:
        s, cpu = summaries[mode], results[mode].get("cpu", {})
        if not s.get("accepted"):
            continue
        runs = s.get("runs", {})
        twice = sum(n for k, n in runs.items() if int(k) > 1) if runs else None
        procs = ", ".join(
            f"{k.removesuffix('_pct')} {v:.0f}"
            for k, v in cpu.items()
            if k.endswith("_pct") and k != "other_pct_of_machine"
        )
        lines.append(
            table_row(
                [
                    mode,
                    pair(s, "queue_wait"),
                    pair(s, "run"),
                    pair(s, "callback_delay"),
                    str(s["callback_retried"]),
                    "-" if twice is None else str(twice),
                    procs or "-",
                    fmt(cpu.get("other_pct_of_machine"), ".0f"),
                ]
            )
        )
    lines += ["", *(f"- {n}" for n in notes)]
    return "\n".join(lines) + "\n"


def pair(s: dict[str, Any], name: str) -> str:
    return f"{fmt(s.get(f'{name}_p50_s'), '.2f')} / {fmt(s.get(f'{name}_p99_s'), '.2f')}"


def build_notes(
    args: argparse.Namespace,
    modes: Sequence[str],
    results: dict[str, dict[str, Any]],
    summaries: dict[str, dict[str, Any]],
) -> list[str]:
    notes = [
        f"What is measured is the task machinery, not OCR: every task is one small image "
        f"({', '.join(IMAGES)}; 14-43 KB, cycled) sent as image_base64 with a callback_url. "
        "For OCR speed see the engine and load sections.",
        f"Submit: {args.submitters} concurrent httpx clients, each POSTing the next task as soon "
        "as its previous one was answered, with an Idempotency-Key per task (a 429/503 or a "
        "transport error is retried with it). submit tasks/s = accepted tasks over first POST "
        "to last 202; 202 latency is per accepted POST.",
        "End-to-end tasks/s = tasks called back over first POST to last first-callback; to "
        "callback = a task's first POST to its first verified callback at the receiver. lost = "
        "accepted without a verified callback when the wait ended; duplicates = deliveries of "
        "a webhook-id already delivered; failed = first callback's status not succeeded.",
        "Receiver: a threaded http.server on 127.0.0.1 in the bench process; every callback "
        "checked with ocrserve.webhooks.verify against the secret given to the services "
        "(OCRSERVE_WEBHOOK_SECRET), answered 200 (400 if the signature is bad). Callback "
        "retry schedule at its default (1 s, 5 s, 15 s).",
        f"Each mode: fresh processes, a fresh OCRSERVE_DATA_DIR, {WARMUP_TASKS} untimed warm-up "
        "tasks first (their callbacks show the worker is up and its models are loaded), "
        f"services at their defaults otherwise (OCRSERVE_LOG_LEVEL=warning). The celery mode "
        "drops ocr_tasks in PostgreSQL first and uses a queue of its own, deleted at the end; "
        "its API node and worker share the machine with the bench.",
        "Queue wait = started_at - created_at, run = finished_at - started_at (of the last run), "
        "finished to callback = receiver's arrival - finished_at (same machine, same clock). "
        "Tasks run twice: the runs column of the task table. CPU %: each process's CPU time "
        "over first POST to the end of the wait (+5 s settle); 200 = both cores of 2.",
    ]
    if args.tasks < 100:
        notes.append(
            f"SHORT RUN (--tasks {args.tasks}): p99 is about the slowest task; not comparable "
            "with full runs."
        )
    overrides = env_overrides()
    if overrides:
        notes.append(f"Environment overrides inherited: {', '.join(overrides)}.")
    for mode in modes:
        res, s = results[mode], summaries[mode]
        if "error" in res:
            notes.append(f"{mode}: FAILED {res['error']}")
        if "ready_s" in res:
            notes.append(
                f"{mode}: spawn to /ready {res['ready_s']:.1f} s, warm-up tasks called back "
                f"after {fmt(res.get('warmup_s'), '.1f')} s; wait ended: "
                f"{res.get('wait_ended', '-')}."
            )
        if not s.get("accepted"):
            continue
        notes.extend(f"{mode}: WARNING {w}" for w in warnings(mode, res, s))
        if s.get("statuses"):
            notes.append(f"{mode}: callback statuses {dict(s['statuses'])}.")
        if "queue_peak_ready" in s:
            notes.append(
                f"{mode}: broker queue (sampled once a second): at most {s['queue_peak_ready']} "
                f"ready messages; at most {s['queue_peak_excess']} more ready messages than "
                "tasks still waiting for their callback (above 0: duplicate messages)."
            )
        if res.get("queue_probe_error"):
            notes.append(f"{mode}: queue probe failed: {res['queue_probe_error']}")
        if res.get("queue_left") is not None:
            notes.append(
                f"{mode}: {res['queue_left']} messages were left in the run's queue after the "
                "worker stopped."
            )
        cpu = res.get("cpu", {})
        if cpu.get("other_pct_of_machine", 0.0) >= 10:
            notes.append(
                f"{mode}: WARNING other processes used {cpu['other_pct_of_machine']:.0f}% of "
                "the machine's CPU during the run: results are disturbed."
            )
        for stop in res.get("stops", []):
            how = (
                "SIGKILL after the stop timeout"
                if stop.get("killed")
                else "had died before the stop"
                if stop.get("died_before_stop")
                else f"exit code {stop['returncode']} after SIGTERM"
            )
            notes.append(
                f"{mode} {stop['name']}: stopped in {fmt(stop.get('stop_s'), '.1f')} s, {how}."
            )
            for line in stop["log_notes"][:10]:
                notes.append(f"{mode} {stop['name']} log: {line}")
    return notes


def warnings(mode: str, res: dict[str, Any], s: dict[str, Any]) -> list[str]:
    out = []
    if s["submit_errors"]:
        sample = next((r.get("body") or r.get("exception") for r in res["submits"]
                       if "task_id" not in r), "")  # fmt: skip
        out.append(f"submits not accepted {dict(s['submit_errors'])}: {sample}")
    if s["rejections"] or s["retried_submits"]:
        out.append(
            f"{s['rejections']} submits answered 429/503, {s['retried_submits']} tasks needed "
            "more than one POST."
        )
    if s["lost"]:
        views = res.get("tasks", {})
        out.append(
            f"{s['lost']} tasks LOST: " + "; ".join(lost_view(i, views) for i in s["lost_ids"][:5])
        )
    vanished = s["accepted"] - s.get("rows", s["accepted"])
    if vanished:
        out.append(
            f"{vanished} of this run's rows were missing from the task table at the end: "
            "something else dropped or emptied it during the run (another process on the same "
            "database?)."
        )
    if s["duplicates"]:
        out.append(f"{s['duplicates']} duplicate deliveries, e.g. {s['duplicate_ids'][:3]}.")
    if s["multi_event_tasks"]:
        out.append(f"{s['multi_event_tasks']} tasks were called back with two different events.")
    if s["failed"]:
        errors = Counter(
            str((v.get("error") or {}).get("code"))
            for v in res.get("tasks", {}).values()
            if v.get("status") not in (None, "succeeded")
        )
        out.append(f"{s['failed']} tasks did not succeed: error codes {dict(errors)}.")
    if s["invalid_signatures"]:
        out.append(
            f"{s['invalid_signatures']} callbacks failed verification: "
            f"{res['invalid_signatures'][:3]}"
        )
    if s["foreign_callbacks"]:
        out.append(f"{s['foreign_callbacks']} callbacks for tasks this run did not submit.")
    if s["view_errors"] or res.get("tasks_error"):
        out.append(
            f"reading tasks back: {s['view_errors']} errors {res.get('tasks_error', '')}".strip()
        )
    if s["callback_retried"]:
        out.append(f"{s['callback_retried']} callbacks needed more than one attempt.")
    runs = s.get("runs", {})
    if any(int(k) != 1 for k in runs):
        out.append(f"task runs per task {dict(runs)} (1 expected for every task).")
    return out


def lost_view(task_id: str, views: dict[str, Any]) -> str:
    v = views.get(task_id, {})
    if "status" not in v:
        return f"{task_id}: {v.get('view_error', 'not read back')}"
    return (
        f"{task_id}: {v['status']}, callback {v['callback_state']} after "
        f"{v['callback_attempts']} attempts, last error {v['callback_last_error']}"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--tasks", type=positive, default=500, help="tasks per mode (default 500)")
    ap.add_argument(
        "--modes",
        default=",".join(MODES),
        type=lambda v: comma_list(v, MODES, "mode"),
        help=f"comma list, default {','.join(MODES)}",
    )
    ap.add_argument(
        "--submitters", type=positive, default=8, help="concurrent submitting clients (default 8)"
    )
    ap.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds to wait for the callbacks after the last submit "
        "(default 300 + 4 per task; the wait also ends after 300 s without a callback)",
    )
    ap.add_argument(
        "--database-url",
        default=PG_URL,
        help=f"the celery mode's task store (default {PG_URL}); its {TABLE} table is dropped "
        "first, so nothing else may use it during the run; a URL ending in "
        "?options=-csearch_path%%3D<schema> keeps it in an existing schema of its own",
    )
    ap.add_argument("--eval-dir", type=Path, default=DEFAULT_EVAL_DIR)
    ap.add_argument(
        "--write-results",
        action="store_true",
        help=f"replace the async section of {RESULTS_MD.relative_to(ROOT)}",
    )
    return ap.parse_args(argv)


def load_images(eval_dir: Path) -> list[Image]:
    paths = [eval_dir / SPEED / name for name in IMAGES]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise SystemExit(f"missing input images: {', '.join(missing)}")
    return [Image(p.name, base64.b64encode(p.read_bytes()).decode()) for p in paths]


def _terminate(signum: int, frame: object) -> None:
    # SIGTERM to the bench unwinds like Ctrl-C: every ExitStack stops what it started.
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    images = load_images(args.eval_dir.resolve())
    modes: list[str] = args.modes
    run = new_run("async")
    machine = machine_info()
    machine.update(ocrserve=pkg("ocrserve"), celery=pkg("celery"), httpx=pkg("httpx"))

    results: dict[str, dict[str, Any]] = {}
    for mode in modes:
        results[mode] = run_mode(mode, args, images, run)
    machine["loadavg_end"] = os.getloadavg()[0]

    summaries = {mode: summarise(results[mode]) for mode in modes}
    run_line = (
        f"Run: {args.tasks} tasks per mode, {args.submitters} submitters, modes "
        f"{', '.join(modes)} in that order; raw data `{run.relative_to(ROOT)}.json`, logs in "
        f"`{run.relative_to(ROOT)}/`."
    )
    report = render(modes, results, summaries, machine, run_line, build_notes(
        args, modes, results, summaries))  # fmt: skip
    raw = {
        "args": raw_args(args),
        "machine": machine,
        "summaries": summaries,
        "results": results,
        "markdown": report,
    }
    publish("async", run, raw, report, to_results=args.write_results)
    bad = any("error" in r for r in results.values()) or any(
        not s.get("accepted")
        or s["lost"]
        or s["failed"]
        or s["submit_errors"]
        or s["invalid_signatures"]
        for s in summaries.values()
    )
    return 1 if bad else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("[async] interrupted; the processes it started were stopped", file=sys.stderr)
        sys.exit(130)
