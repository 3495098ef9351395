"""Dashboards and alerts: the rules pass promtool's check and unit tests, and every metric the
dashboard and the rules name is one a real server exports (a renamed metric would otherwise
leave an empty panel and an alert that never fires, silently)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Update, update

from ocrserve import Engine
from ocrserve.api.metrics import Metrics, TaskCollector
from ocrserve.batcher import Batcher
from ocrserve.decode import DecodeLimits
from ocrserve.errors import StorageUnavailableError
from ocrserve.jobs.delivery import CallbackPolicy
from ocrserve.jobs.embedded import EmbeddedWorkers
from ocrserve.jobs.runner import RunnerConfig
from ocrserve.jobs.store import TaskRow, TaskStore
from ocrserve.jobs.task import DEAD, NewTask

from .conftest import FIXTURES, SECRET, Receiver, client_for
from .test_task_lifecycle import (  # any_store: a fixture, SQLite then PostgreSQL
    FaultyEngine,
    any_store,  # noqa: F401
    new_task,
    poison_png,
)
from .test_tasks import b64, callback_settled, task_settings, wait_for

ROOT = Path(__file__).resolve().parents[1]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERTS_TEST = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "ocrserve.json"
#: On the PATH (Debian's prometheus package), or where `make prometheus-deps` puts it.
PROMTOOL = shutil.which("promtool") or shutil.which(
    "promtool", path=str(Path(sys.executable).parent)
)
LONG_LINE = (FIXTURES / "en_line_long_text.jpg").read_bytes()

needs_promtool = pytest.mark.skipif(
    PROMTOOL is None and not os.environ.get("CI"), reason="needs promtool: make prometheus-deps"
)

#: PromQL words that look like metric names: aggregations (also when written without a
#: parenthesis right after them, `sum by (x) (...)`), set operators and modifiers.
PROMQL_WORDS = frozenset({
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk",
    "topk", "quantile", "limitk", "by", "without", "on", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "bool", "offset", "atan2", "inf", "nan",
})  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
#: An identifier not inside a number (1e9) or a Grafana variable ($__rate_interval), and
#: whether a call's parenthesis follows it (a function).
_IDENT = re.compile(r"(?<![\w$:.])([a-zA-Z_:][\w:]*)(\s*\()?")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads.

    >>> sorted(metric_names('sum by (le) (rate(a_bucket{x="y"}[5m])) / on(i) b > 1e9'))
    ['a_bucket', 'b']
    """
    expr = _STRING.sub('""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges and subqueries
    expr = _LABEL_LIST.sub("", expr)
    return {
        m.group(1)
        for m in _IDENT.finditer(expr)
        if m.group(2) is None and m.group(1) not in PROMQL_WORDS
    }


def dashboard_exprs() -> list[str]:
    model = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in model["panels"] for t in p.get("targets", [])]


def rule_exprs() -> list[str]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [r["expr"] for g in rules["groups"] for r in g["rules"]]


def recorded_names() -> set[str]:
    """The series the recording rules write (``level:metric:operations``), which the alerts
    read: Prometheus's, not the server's."""
    rules = yaml.safe_load(ALERTS.read_text())
    return {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}


def test_metric_names_reads_promql() -> None:
    assert metric_names(
        'histogram_quantile(0.99, sum by (le, route) (rate(x_bucket{route=~"(/v1)?/ocr"}'
        "[$__rate_interval]))) > 10"
    ) == {"x_bucket"}
    assert metric_names(
        'max(a) > 300 unless on() time() - max(b{loop=~"w-.*"}) < 120 and on(i, j) c'
    ) == {"a", "b", "c"}
    assert metric_names("deriv(m[30m]) > 1048576 / 60 or vector(1.5e9)") == {"m"}


@needs_promtool
def test_alert_rules_pass_promtool_check() -> None:
    out = subprocess.run(
        [PROMTOOL or "promtool", "check", "rules", str(ALERTS)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 15 rules found" in out.stdout  # 12 alerts, 3 recording rules


@needs_promtool
def test_alert_rules_pass_their_unit_tests() -> None:
    """alerts_test.yml: series that fire each alert and series that must not."""
    out = subprocess.run(
        [PROMTOOL or "promtool", "test", "rules", ALERTS_TEST.name],
        capture_output=True, text=True, timeout=120, cwd=ALERTS_TEST.parent,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    tested = {
        t["alertname"]
        for case in yaml.safe_load(ALERTS_TEST.read_text())["tests"]
        for t in case["alert_rule_test"]
    }
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    alerts = {r["alert"] for g in groups for r in g["rules"] if "alert" in r}
    assert tested == alerts  # every alert has its unit test


def test_dashboard_is_a_grafana_model_with_the_panels_asked_for() -> None:
    model = json.loads(DASHBOARD.read_text())
    (variable,) = model["templating"]["list"]
    assert variable["type"] == "datasource" and variable["query"] == "prometheus"
    panels = [p for p in model["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in model["panels"]}) == len(model["panels"])
    for p in panels:
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"] and all(t["expr"].strip() for t in p["targets"]), p["title"]
    titles = " | ".join(p["title"].lower() for p in panels)
    for wanted in ("requests/s", "error rate", "p50 / p99", "pages/s", "queue depth",
                   "batch size", "cache hit rate", "tasks by status", "queue wait",
                   "callback", "dead letters", "loop restarts", "memory", "page seconds",
                   "line confidence", "empty-page rate", "engine errors", "fallback pages",
                   "breaker"):  # fmt: skip
        assert wanted in titles, wanted


def scrape(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name -> [(labels, value)] of a /metrics body."""
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    return samples


def value(samples: dict[str, list[tuple[dict[str, str], float]]], name: str,
          **labels: str) -> float:  # fmt: skip
    (v,) = [v for lab, v in samples[name] if labels.items() <= lab.items()]
    return v


@pytest.mark.anyio
async def test_every_metric_the_dashboard_and_the_alerts_use_is_exported(
    engine: Engine, tmp_path: Path, receiver: Receiver
) -> None:
    """A real app (in-process) after one /ocr (twice: a cache miss, then a hit), one /ocr of a
    page PP-OCR fails on (read by Tesseract, its fallback) and one async task whose callback is
    retried once, then delivered: its /metrics has a sample of every name the dashboard and the
    rules read, and the new metrics count what happened."""
    receiver.script = [(503, {})]
    faulty = FaultyEngine(engine)
    async for client in client_for(task_settings(tmp_path), faulty):  # type: ignore[arg-type]
        for _ in range(2):
            r = await client.post("/ocr", files={"image": ("line.jpg", LONG_LINE)})
            assert r.status_code == 200, r.text
        r = await client.post(
            "/ocr", files={"image": ("poison.png", poison_png())}, data={"lang": "en"}
        )
        assert r.status_code == 200, r.text
        assert [p["engine"] for p in r.json()["pages"]] == ["tesseract"]
        r = await client.post(
            "/ocr/async", json={"image_base64": b64(LONG_LINE), "callback_url": receiver.url}
        )
        assert r.status_code == 202, r.text
        task_id = r.json()["task_id"]
        assert (await wait_for(client, task_id))["status"] == "succeeded"
        await callback_settled(client, task_id, "delivered")
        r = await client.get("/metrics")
        assert r.status_code == 200
        samples = scrape(r.text)

    used = set().union(*(metric_names(e) for e in dashboard_exprs() + rule_exprs()))
    used -= recorded_names()
    # The extractor found the names, not PromQL's words or label names.
    assert all(n.startswith(("ocrserve_", "process_")) for n in used), used
    assert {"ocrserve_requests_total", "process_resident_memory_bytes"} <= used
    assert sorted(used - set(samples)) == []

    assert value(samples, "ocrserve_tasks", status="succeeded") == 1
    assert value(samples, "ocrserve_tasks", status="queued") == 0
    assert value(samples, "ocrserve_task_store_up") == 1
    assert value(samples, "ocrserve_dead_letters") == 0
    assert value(samples, "ocrserve_task_oldest_waiting_seconds") == 0
    assert value(samples, "ocrserve_task_heartbeat_timestamp_seconds") == 0  # none runs
    assert value(samples, "ocrserve_task_queue_wait_seconds_count") == 1
    assert value(samples, "ocrserve_task_retries_total") == 0
    assert value(samples, "ocrserve_callback_attempts_total", outcome="retry") == 1
    assert value(samples, "ocrserve_callback_attempts_total", outcome="delivered") == 1
    assert value(samples, "ocrserve_callback_attempts_total", outcome="dead") == 0
    assert value(samples, "ocrserve_queue_max_pages") == 256
    assert value(samples, "ocrserve_cache_total", result="hit") == 1
    assert value(samples, "process_resident_memory_bytes") > 50e6
    now = time.time()
    for loop in ("worker-0", "worker-1", "dispatcher"):
        beat = value(samples, "ocrserve_worker_last_heartbeat_timestamp_seconds", loop=loop)
        assert now - 60 < beat <= now, loop
    assert value(samples, "ocrserve_loop_restarts_total", loop="heartbeat") == 0
    assert value(samples, "ocrserve_engine_errors_total", engine="ppocr") == 1
    assert value(samples, "ocrserve_fallback_pages_total", reason="engine_error") == 1
    assert value(samples, "ocrserve_fallback_pages_total", reason="breaker_open") == 0
    assert value(samples, "ocrserve_breaker_open") == 0
    assert value(samples, "ocrserve_pages_read_total", engine="tesseract", result="empty") == 1
    assert value(samples, "ocrserve_page_seconds_count", engine="tesseract") == 1


@pytest.mark.anyio
async def test_the_embedded_workers_report_claims_retries_heartbeats_and_callbacks(
    engine: Engine, tmp_path: Path, receiver: Receiver
) -> None:
    """Through their hooks: a first run's queue wait, each later run a retry, a lease renewed
    during a long run (``heartbeat``) and a claim attempt (the worker's loop), each callback
    attempt's outcome."""
    metrics = Metrics()
    store = TaskStore(f"sqlite:///{tmp_path / 'tasks.db'}")
    faulty = FaultyEngine(engine)
    faulty.hold = {1}  # the good task's page waits for the release
    batcher = Batcher(faulty, lanes=1, max_batch_size=4, max_wait=0.0)
    batcher.start()
    workers = EmbeddedWorkers(
        store,
        batcher,
        # A lease renewed every 0.2 s; the poison task raises on each of its 3 runs.
        RunnerConfig(
            limits=DecodeLimits(), model="test", lease=0.6, retry_delays=(0.05,), allow_private=True
        ),
        CallbackPolicy(secret=SECRET, retry_delays=(0.1,), allow_private=True),
        workers=1,
        on_restart=metrics.loop_restarted,
        on_heartbeat=metrics.heartbeat,
        on_claim=metrics.task_claimed,
        on_callback=metrics.callback_attempted,
    )
    receiver.script = [(503, {})]  # the first callback is retried once
    try:
        poison, _ = store.create(new_task(poison_png(), receiver.url))
        good, _ = store.create(new_task(LONG_LINE))
        drain = asyncio.create_task(workers.drain())
        deadline = time.monotonic() + 60
        while ("heartbeat",) not in metrics.worker_heartbeat._metrics:  # a renewal mid-run
            assert time.monotonic() < deadline and not drain.done()
            await asyncio.sleep(0.05)
        faulty.release.set()
        await asyncio.wait_for(drain, 120)
    finally:
        faulty.release.set()
        batcher.stop()
        await workers.stop()
        store.close()
    samples = scrape(generate_latest(metrics.registry).decode())
    assert value(samples, "ocrserve_task_queue_wait_seconds_count") == 2  # two first runs
    assert value(samples, "ocrserve_task_retries_total") == 2  # the poison task's runs 2, 3
    assert value(samples, "ocrserve_callback_attempts_total", outcome="retry") == 1
    assert value(samples, "ocrserve_callback_attempts_total", outcome="delivered") == 1
    assert value(samples, "ocrserve_callback_attempts_total", outcome="dead") == 0
    beats = {lab["loop"] for lab, _ in samples["ocrserve_worker_last_heartbeat_timestamp_seconds"]}
    assert beats == {"worker-burst", "heartbeat"}
    assert [c["event"]["task_id"] for c in receiver.delivered()] == [poison.id]
    assert good.id != poison.id


def test_task_gauges_read_the_table(any_store: TaskStore) -> None:  # noqa: F811
    """On SQLite and PostgreSQL: waiting is counted from when a task could run (a retry not yet
    due is not waiting, a running task whose lease ran out, its worker dead, is); the heartbeat
    is the newest lease renewal less the lease."""
    store = any_store
    ids = [store.create(NewTask(options={}, input_bytes=b"x"))[0].id for _ in range(5)]
    now = time.time()
    with store.session() as s:
        s.execute(set_row(ids[0], created_at=now - 100))  # queued, due for 100 s
    assert store.claim(ids[1], "w-1", 30.0, 3) is not None  # running, lease live
    assert store.claim(ids[2], "w-2", 30.0, 3) is not None
    with store.session() as s:  # its worker died 40 s ago
        s.execute(set_row(ids[2], lease_until=now - 40))
    assert store.claim(ids[3], "w-3", 30.0, 3) is not None
    assert store.retry_later(ids[3], "w-3", ("internal_error", "boom"), 1000.0)
    assert store.cancel(ids[4])
    store.record_attempt(ids[4], {"attempt": 1}, state=DEAD, next_at=None)

    stats = store.stats()
    assert stats.by_status == {"queued": 2, "running": 2, "succeeded": 0,
                               "partial_success": 0, "failed": 0, "cancelled": 1}  # fmt: skip
    assert stats.dead_letters == 1
    assert 100 <= stats.oldest_waiting_s < 110
    assert stats.newest_lease_until is not None
    assert now + 29 < stats.newest_lease_until <= time.time() + 30

    samples = scrape_collector(TaskCollector(store, lease_s=30.0))
    assert samples["ocrserve_task_store_up"] == [({}, 1.0)]
    ((_, beat),) = samples["ocrserve_task_heartbeat_timestamp_seconds"]
    assert now - 1 < beat <= time.time()


def test_a_task_database_that_does_not_answer_fails_no_scrape() -> None:
    class Down:
        def stats(self) -> Any:
            raise StorageUnavailableError("the task database is unavailable: disk I/O error")

    samples = scrape_collector(TaskCollector(Down(), lease_s=30.0))  # type: ignore[arg-type]
    assert samples == {"ocrserve_task_store_up": [({}, 0.0)]}


def scrape_collector(collector: TaskCollector) -> dict[str, list[tuple[dict[str, str], float]]]:
    registry = CollectorRegistry()
    registry.register(collector)
    return scrape(generate_latest(registry).decode())


def set_row(task_id: str, **values: Any) -> Update:
    """Move a row's clock: the statement that sets its columns."""
    return update(TaskRow).where(TaskRow.id == task_id).values(**values)
