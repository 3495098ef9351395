#!/usr/bin/env python3
"""Load benchmark: ``ocrserve serve`` under 1, 4 and 16 concurrent clients, against the engine.

    python bench/load.py                          # batching on and off, 1/4/16 clients, 60 req
    python bench/load.py --requests 8             # a quick check that everything runs
    python bench/load.py --configs on --levels 1,16 --requests 120
    python bench/load.py --write-results          # also update bench/RESULTS.md

For each configuration (``on``: batching at its defaults, ``off``: ``OCRSERVE_BATCHING=false``)
the script starts its own server (``python -m ocrserve serve`` on 127.0.0.1, result cache off so
that repeated images are really recognised), waits for ``GET /ready``, sends 2 warm-up requests,
then runs each level: ``--requests`` requests (at least the level's concurrency) spread over
that many asyncio clients sharing one httpx connection pool, each client taking the next image
of one fixed sequence (the speed images in name order, cycled). Throughput is successful
requests over the wall time of the level; latency is client-side, request sent to body read.

"Engine alone" is the ceiling the service is measured against: fresh worker processes run the
same image sequence straight through ``Engine.run`` (decoding included, as the server decodes):
once sequentially on an all-cores engine, once the way the server lays out the CPU (one shared
engine with the server's threads per lane, driven by as many threads as the server has lanes).
The better of the two is the reference.

"HTTP overhead" sends one small image 30 times, one at a time, to the batching-off server and
compares the client's median latency with the server's own median ``timings.inference``.

Only 127.0.0.1 is ever contacted. Raw results (every request) land in ``bench/out/``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import signal
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

# bench/ is not a package: running this file puts bench/ first on sys.path, so the harness
# and the tables import as top-level modules and every report shares one machine line.
from harness import (
    DEFAULT_EVAL_DIR,
    HOST,
    ROOT,
    Proc,
    cpu_split,
    env_overrides,
    free_port,
    machine_header,
    machine_info,
    new_run,
    ocrserve_cmd,
    percentile,
    pkg,
    run_worker,
    wait_ready,
)
from tables import (
    RESULTS_MD,
    comma_list,
    fmt,
    judge,
    publish,
    raw_args,
    table_head,
    table_row,
)

SPEED = "speed"
SPEED_SUFFIXES = (".jpg", ".jpeg", ".png")
MIME = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}
CONFIGS = ("on", "off")
CONFIG_TITLES = {"on": "Batching on (defaults)", "off": "Batching off (OCRSERVE_BATCHING=false)"}
WORKERS = ("engine-seq", "engine-lanes")
SMALL_IMAGE = "en_line_long_text.jpg"
SMALL_REPEATS = 30
WARMUP_REQUESTS = 2

#: What every server and engine worker runs with. The cache would answer the cycled images
#: from memory after the first pass, measuring a dict lookup instead of OCR; warnings-only
#: logging keeps one log line per request out of the measured path.
BASE_ENV = {"OCRSERVE_CACHE_MAX_ENTRIES": "0", "OCRSERVE_LOG_LEVEL": "warning"}
CONFIG_ENV = {"on": {"OCRSERVE_BATCHING": "true"}, "off": {"OCRSERVE_BATCHING": "false"}}

#: Generous on purpose: 16 clients queue ~8 images per lane on 2 cores, and a client-side
#: timeout would hide the server's own 120 s deadline behind an exception of ours.
CLIENT_TIMEOUT_S = 300.0
READY_TIMEOUT_S = 600.0
STOP_TIMEOUT_S = 60.0

TARGET_SHARE = 0.90
TARGET_TAIL = 4.0
TARGET_OVERHEAD_MS = 10.0


@dataclass(frozen=True)
class Image:
    name: str
    data: bytes
    mime: str


# --------------------------------------------------------------------------- engine worker
# Runs in its own process, like the server: the engine's threads never compete with this
# script's event loop, and both variants start from the same cold state.


def engine_worker(kind: str, job_path: Path, result_path: Path) -> int:
    from ocrserve.config import Settings
    from ocrserve.decode import DecodeLimits, decode_bytes
    from ocrserve.engine import Engine
    from ocrserve.engine.session import CPU, resolve_providers

    job = json.loads(job_path.read_text(encoding="utf-8"))
    names: list[str] = job["sequence"]
    data = {p: Path(p).read_bytes() for p in {*names, job["small"]}}
    base = Settings()
    # The same decisions the server makes in api/app.py:_build_service.
    on_gpu = resolve_providers(base.providers)[0] != CPU
    if kind == "engine-seq":
        settings, callers = base, 1
    else:
        threads = base.threads_per_lane(on_gpu)
        settings = base.model_copy(update={"intra_op_threads": threads})
        callers = base.lane_count(on_gpu)
    limits = DecodeLimits(
        max_bytes=base.max_file_bytes,
        max_pixels=base.max_pixels,
        max_pages=base.max_pages,
        pdf_dpi=base.pdf_dpi,
    )
    t_load = time.perf_counter()
    engine = Engine.from_settings(settings)
    load_s = time.perf_counter() - t_load

    def ocr(path: str) -> str:
        doc = decode_bytes(data[path], limits, filename=Path(path).name)
        return "\n\n".join(r.text for r in engine.run(list(doc.pages)))

    # The server's warm-up: Engine.warmup at start, then our 2 untimed requests.
    engine.warmup()
    for path in names[:WARMUP_REQUESTS]:
        ocr(path)

    latencies: list[float | None] = [None] * len(names)
    texts: dict[str, str] = {}
    todo: queue.SimpleQueue[int] = queue.SimpleQueue()
    for i in range(len(names)):
        todo.put(i)

    def caller() -> None:
        while True:
            try:
                i = todo.get_nowait()
            except queue.Empty:
                return
            start = time.perf_counter()
            text = ocr(names[i])
            latencies[i] = time.perf_counter() - start
            texts.setdefault(Path(names[i]).name, text)

    t0 = time.perf_counter()
    if callers == 1:
        caller()
    else:
        pool = [threading.Thread(target=caller) for _ in range(callers)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
    wall = time.perf_counter() - t0

    # One caller on this engine: what one lane does for a lone request at concurrency 1.
    page = decode_bytes(data[job["small"]], limits).pages[0]
    small: list[float] = []
    for _ in range(SMALL_REPEATS):
        start = time.perf_counter()
        engine.run([page])
        small.append(time.perf_counter() - start)

    result = {
        "kind": kind,
        "intra_op_threads": settings.intra_op_threads,
        "callers": callers,
        "providers": list(engine.providers),
        "engine_load_s": load_s,
        "images": len(names),
        "wall_s": wall,
        "images_per_s": len(names) / wall,
        "latencies_s": latencies,
        "small_image_s": small,
        "texts": texts,
    }
    result_path.write_text(json.dumps(result, ensure_ascii=False), encoding="utf-8")
    return 0


def spawn_engine(kind: str, sequence: list[Path], small: Path, run: Path) -> dict[str, Any]:
    job, result, log = run / f"{kind}.job.json", run / f"{kind}.json", run / f"{kind}.log"
    job.write_text(
        json.dumps({"sequence": [str(p) for p in sequence], "small": str(small)}),
        encoding="utf-8",
    )
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind]
    cmd += ["--job", str(job), "--result", str(result)]
    res, _ = run_worker(cmd, log, result, env=server_env(None))
    return {"kind": kind, **res} if "error" in res else res


# --------------------------------------------------------------------------- the server


def server_env(config: str | None) -> dict[str, str]:
    return {**os.environ, **BASE_ENV, **(CONFIG_ENV[config] if config else {})}


class Server(Proc):
    """One ``ocrserve serve`` subprocess on 127.0.0.1, its log in a file."""

    def __init__(self, config: str, port: int, log: Path) -> None:
        self.config, self.port = config, port
        self.base_url = f"http://{HOST}:{port}"
        cmd = ocrserve_cmd("serve", "--host", HOST, "--port", str(port))
        # A data folder of its own: the task database, never the user's.
        env = server_env(config) | {"OCRSERVE_DATA_DIR": str(log.parent / f"data-{config}")}
        super().__init__("server", cmd, env, log)


def scrape(client: httpx.Client) -> dict[str, float]:
    """The server's counters worth a delta per level (Prometheus text, no labels needed)."""
    wanted = ("ocrserve_batch_pages_sum", "ocrserve_batch_pages_count")
    out: dict[str, float] = {}
    for line in client.get("/metrics").text.splitlines():
        name, _, value = line.partition(" ")
        if name in wanted or name.startswith("ocrserve_rejections_total{"):
            out[name] = float(value)
    return out


# --------------------------------------------------------------------------- the clients


async def send(client: httpx.AsyncClient, image: Image, index: int) -> dict[str, Any]:
    rec: dict[str, Any] = {"index": index, "image": image.name}
    start = time.perf_counter()
    try:
        r = await client.post("/ocr", files={"image": (image.name, image.data, image.mime)})
    except httpx.HTTPError as e:
        rec.update(latency_s=time.perf_counter() - start, status=None)
        rec["exception"] = f"{type(e).__name__}: {e}"
        return rec
    # Latency ends once the body is read (post() reads it); parsing the JSON is ours.
    rec.update(latency_s=time.perf_counter() - start, status=r.status_code)
    if r.status_code == 200:
        body = r.json()
        rec.update(timings=body.get("timings"), text=body.get("text"))
        rec["cache"] = r.headers.get("x-cache")
    else:
        rec["body"] = r.text[:300]
    return rec


async def run_requests(
    base_url: str, images: Sequence[Image], concurrency: int, n: int
) -> tuple[list[dict[str, Any]], float]:
    """``n`` requests, image ``i % len(images)`` for the i-th, by ``concurrency`` clients."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    timeout = httpx.Timeout(CLIENT_TIMEOUT_S, connect=10.0)
    records: list[dict[str, Any]] = []
    taken = 0
    async with httpx.AsyncClient(
        base_url=base_url, limits=limits, timeout=timeout, trust_env=False
    ) as client:

        async def one_client() -> None:
            nonlocal taken
            # One event loop, no await between the test and the increment: no lock needed.
            while taken < n:
                i, taken = taken, taken + 1
                records.append(await send(client, images[i % len(images)], i))

        t0 = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    records.sort(key=lambda r: r["index"])
    return records, wall


def error_counts(records: Sequence[dict[str, Any]]) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for r in records:
        if r["status"] is None:
            counts[r["exception"].split(":", 1)[0]] += 1
        elif r["status"] != 200:
            counts[str(r["status"])] += 1
    return dict(counts)


def summarise_level(
    records: list[dict[str, Any]], wall: float, concurrency: int, extra: dict[str, Any]
) -> dict[str, Any]:
    ok = [r for r in records if r["status"] == 200]
    lat = [r["latency_s"] for r in ok]
    out: dict[str, Any] = {
        "concurrency": concurrency,
        "requests": len(records),
        "ok": len(ok),
        "wall_s": wall,
        "req_per_s": len(ok) / wall,
        "images_per_s": len(ok) / wall,  # one single-page image per request
        "errors": error_counts(records),
        "cache_hits": sum(1 for r in ok if r.get("cache") == "hit"),
        **extra,
    }
    if lat:
        p50, p95, p99 = (1000 * percentile(lat, q) for q in (0.50, 0.95, 0.99))
        out.update(p50_ms=p50, p95_ms=p95, p99_ms=p99, p99_over_p50=p99 / p50)
        for key in ("inference", "total", "decode"):
            vals = [r["timings"][key] for r in ok if r.get("timings")]
            if vals:
                out[f"server_{key}_p50_ms"] = 1000 * statistics.median(vals)
    return out


def measure_server(
    config: str,
    port: int,
    run: Path,
    images: Sequence[Image],
    levels: Sequence[int],
    requests: int,
    small: Image | None,
) -> dict[str, Any]:
    server = Server(config, port, run / f"server-{config}.log")
    res: dict[str, Any] = {"config": config, "port": port, "levels": [], "records": {}}
    try:
        ready = wait_ready(server.base_url, [server], timeout_s=READY_TIMEOUT_S)
        res["ready_s"] = ready - server.t_spawn
        print(f"[load] {config}: ready in {res['ready_s']:.1f} s", file=sys.stderr, flush=True)
        warm, _ = asyncio.run(run_requests(server.base_url, images, 1, WARMUP_REQUESTS))
        res["warmup"] = warm
        with httpx.Client(base_url=server.base_url, trust_env=False, timeout=10.0) as meta:
            for c in levels:
                n = max(requests, c)
                before, cpu0 = scrape(meta), server.cpu_s()
                records, wall = asyncio.run(run_requests(server.base_url, images, c, n))
                after, cpu1 = scrape(meta), server.cpu_s()
                delta = {k: v - before.get(k, 0.0) for k, v in after.items()}
                calls = delta.get("ocrserve_batch_pages_count", 0.0)
                pages = delta.get("ocrserve_batch_pages_sum", 0.0)
                rejected = {k: v for k, v in delta.items() if "rejections" in k and v}
                extra = {
                    "engine_calls": calls,
                    "pages_per_call": pages / calls if calls else None,
                    "server_cpu_pct": 100 * (cpu1 - cpu0) / wall,
                    "rejections": rejected,
                    "server_rss_mb": server.rss_mb(),
                }
                level = summarise_level(records, wall, c, extra)
                res["levels"].append(level)
                res["records"][str(c)] = records
                print(
                    f"[load] {config} x{c}: {level['req_per_s']:.2f} req/s, p50 "
                    f"{fmt(level.get('p50_ms'), '.0f')} ms, p99 {fmt(level.get('p99_ms'), '.0f')}"
                    f" ms, errors {level['errors'] or 0}",
                    file=sys.stderr,
                    flush=True,
                )
        if small is not None:
            recs, _ = asyncio.run(run_requests(server.base_url, [small], 1, SMALL_REPEATS))
            res["small"] = recs
    except Exception as e:  # the other configuration still runs; the report says what broke
        res["error"] = f"{type(e).__name__}: {e}"
        print(f"[load] {config}: FAILED {res['error']}", file=sys.stderr, flush=True)
    finally:
        res["stop"] = server.stop(STOP_TIMEOUT_S)
    return res


def overhead(server: dict[str, Any], engines: dict[str, dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in server.get("small", []) if r["status"] == 200 and r.get("timings")]
    if not ok:
        return {}
    lat = 1000 * statistics.median(r["latency_s"] for r in ok)
    out: dict[str, Any] = {
        "config": server["config"],
        "n": len(ok),
        "errors": error_counts(server["small"]),
        "latency_p50_ms": lat,
    }
    for key in ("inference", "decode", "total"):
        out[f"server_{key}_p50_ms"] = 1000 * statistics.median(r["timings"][key] for r in ok)
    out["overhead_ms"] = lat - out["server_inference_p50_ms"]
    for kind, res in engines.items():
        if "small_image_s" in res:
            eng = 1000 * statistics.median(res["small_image_s"])
            out[f"{kind}_p50_ms"] = eng
            out[f"overhead_vs_{kind}_ms"] = lat - eng
    return out


# --------------------------------------------------------------------------- report


def text_mismatches(server: dict[str, Any], reference: dict[str, str]) -> list[str]:
    """Images whose text from the server differs from the sequential engine's."""
    bad: set[str] = set()
    for records in server.get("records", {}).values():
        for r in records:
            ref = reference.get(r["image"])
            if r["status"] == 200 and ref is not None and r.get("text") != ref:
                bad.add(r["image"])
    return sorted(bad)


def render(
    args: argparse.Namespace,
    machine: dict[str, Any],
    engines: dict[str, dict[str, Any]],
    servers: dict[str, dict[str, Any]],
    over: dict[str, Any],
    run_line: str,
    notes: list[str],
) -> tuple[str, dict[str, Any]]:
    other = f" · other processes {machine['other_cpu_pct']:.0f}% of the CPU during the run"
    lines = [
        "## Load: ocrserve serve under concurrent clients",
        "",
        machine_header(machine, ("ocrserve", "uvicorn", "httpx"), other),
        "",
        run_line,
        "",
    ]
    top = max(args.levels)
    ref_kind = max(
        (k for k in engines if "images_per_s" in engines[k]),
        key=lambda k: engines[k]["images_per_s"],
        default=None,
    )
    ref = engines[ref_kind]["images_per_s"] if ref_kind else None
    parts = []
    for kind, res in engines.items():
        label = (
            "sequential, all cores"
            if kind == "engine-seq"
            else f"server layout, {res.get('callers', '?')} threads on one engine with "
            f"intra_op_threads={res.get('intra_op_threads', '?')}"
        )
        value = f"{res['images_per_s']:.2f} images/s" if "images_per_s" in res else "FAILED"
        parts.append(f"{label} {value}")
    lines.append(
        f"Engine alone (same {max(args.requests, top)} images, decoding included): "
        + "; ".join(parts)
        + (f" → reference {ref:.2f} images/s ({ref_kind})." if ref else ".")
    )
    lines.append("")

    verdicts: dict[str, Any] = {"reference_images_per_s": ref, "reference": ref_kind}
    by_level: dict[str, dict[int, dict[str, Any]]] = {}
    for config, res in servers.items():
        lines += [f"### {CONFIG_TITLES[config]}", ""]
        if "error" in res:
            lines += [f"FAILED: {res['error']}", ""]
        head = [
            "clients",
            "req/s",
            "% of engine alone",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "p99/p50",
            "pages per engine call",
            "server CPU %",
            "errors",
        ]
        lines += table_head(head)
        by_level[config] = {lv["concurrency"]: lv for lv in res["levels"]}
        for lv in res["levels"]:
            errors = ", ".join(f"{k}: {v}" for k, v in lv["errors"].items()) or "0"
            cells = [
                str(lv["concurrency"]),
                f"{lv['req_per_s']:.2f}",
                fmt(100 * lv["req_per_s"] / ref if ref else None, ".0f"),
                fmt(lv.get("p50_ms"), ".0f"),
                fmt(lv.get("p95_ms"), ".0f"),
                fmt(lv.get("p99_ms"), ".0f"),
                fmt(lv.get("p99_over_p50"), ".2f"),
                fmt(lv.get("pages_per_call"), ".2f"),
                f"{lv['server_cpu_pct']:.0f}",
                errors,
            ]
            lines.append(table_row(cells))
        lines.append("")

    if over:
        eng_lane = over.get("engine-lanes_p50_ms")
        eng_seq = over.get("engine-seq_p50_ms")
        lines.append(
            f"HTTP overhead, small image ({SMALL_IMAGE}, {over['n']} sequential requests, "
            f"batching {over['config']}): client median {over['latency_p50_ms']:.1f} ms − "
            f"server median timings.inference {over['server_inference_p50_ms']:.1f} ms = "
            f"**{over['overhead_ms']:.1f} ms** (server decode {over['server_decode_p50_ms']:.1f}"
            f" ms, server total {over['server_total_p50_ms']:.1f} ms); against the engine alone "
            f"on the same image: lane engine {fmt(eng_lane, '.1f')} ms → "
            f"{fmt(over.get('overhead_vs_engine-lanes_ms'), '.1f')} ms, all-cores engine "
            f"{fmt(eng_seq, '.1f')} ms → {fmt(over.get('overhead_vs_engine-seq_ms'), '.1f')} ms."
        )
        lines.append("")

    lines += ["Targets:", ""]
    for config in servers:
        lv = by_level[config].get(top)
        share = lv["req_per_s"] / ref if lv and ref else None
        tail = lv.get("p99_over_p50") if lv else None
        verdicts[f"{config}_share_at_{top}"] = share
        verdicts[f"{config}_p99_over_p50_at_{top}"] = tail
        lines.append(
            f"- {config}: {top} clients at {fmt(100 * share if share else None, '.0f')}% of "
            f"engine alone (target >= {100 * TARGET_SHARE:.0f}%): "
            f"{judge(None if share is None else share >= TARGET_SHARE)}; p99/p50 "
            f"{fmt(tail, '.2f')} (target <= {TARGET_TAIL:g}): "
            f"{judge(None if tail is None else tail <= TARGET_TAIL)}."
        )
    if "on" in by_level and "off" in by_level:
        pairs = [
            (c, by_level["on"][c]["req_per_s"], by_level["off"][c]["req_per_s"])
            for c in args.levels
            if c in by_level["on"] and c in by_level["off"]
        ]
        every = bool(pairs) and all(on >= off for _, on, off in pairs)
        verdicts["batching_on_ge_off_every_level"] = every if pairs else None
        detail = ", ".join(f"{c} clients {on / off:.2f}x" for c, on, off in pairs if off)
        lines.append(
            f"- batching on >= off at every level (req/s on/off: {detail}): "
            f"{judge(every if pairs else None)}."
        )
    if over:
        verdicts["overhead_ms"] = over["overhead_ms"]
        lines.append(
            f"- HTTP overhead {over['overhead_ms']:.1f} ms (target <= {TARGET_OVERHEAD_MS:g} ms):"
            f" {judge(over['overhead_ms'] <= TARGET_OVERHEAD_MS)}."
        )
    lines += ["", *(f"- {n}" for n in notes)]
    return "\n".join(lines) + "\n", verdicts


def build_notes(
    args: argparse.Namespace,
    machine: dict[str, Any],
    engines: dict[str, dict[str, Any]],
    servers: dict[str, dict[str, Any]],
    over: dict[str, Any],
) -> list[str]:
    notes = [
        "req/s = images/s: successful requests over the level's wall time, one single-page "
        "image per request; latency is client-side (request sent to response body read). "
        f"p99 of {args.requests} requests is close to the slowest one: read it as a tail, not "
        "a precise percentile.",
        "% of engine alone: against the better engine-alone run; pages per engine call and "
        "server CPU % come from the server's /metrics and its process CPU time over the level "
        "(200% = both cores of a 2-core machine).",
        f"Servers ran with {', '.join(f'{k}={v}' for k, v in BASE_ENV.items())}; batching off "
        "adds OCRSERVE_BATCHING=false. The load generator shares the machine with the server.",
    ]
    overrides = env_overrides()
    if overrides:
        notes.append(f"Environment overrides inherited: {', '.join(overrides)}.")
    # Another process busy on a 2-core machine takes from the engine and the server, and not
    # by the same amount: say so rather than let the ratios mislead.
    other = machine["other_cpu_pct"]
    if other >= 10:
        notes.append(
            f"WARNING: other processes used {other:.0f}% of the machine's CPU during this run "
            f"({machine['other_cpu_s']:.0f} core-seconds): results are disturbed."
        )
    if over and over["config"] != "off":
        notes.append("The batching-off server was not run: HTTP overhead measured on 'on'.")
    if args.requests < 60:
        notes.append(f"SHORT RUN (--requests {args.requests}): not comparable with full runs.")
    reference = engines.get("engine-seq", {}).get("texts", {})
    for kind, res in engines.items():
        if "error" in res:
            notes.append(f"FAILED {kind}: {res['error']}: " + " / ".join(res["log_tail"]))
        else:
            notes.append(f"{kind}: engine loaded in {res['engine_load_s']:.1f} s.")
    for config, res in servers.items():
        ready = res.get("ready_s")
        stop = res["stop"]
        # uvicorn re-raises the SIGTERM it caught once its graceful shutdown is done, so a
        # clean stop reads as -15, not 0.
        how = (
            "after SIGKILL"
            if stop.get("killed")
            else "SIGTERM re-raised by uvicorn after a graceful shutdown"
            if stop["returncode"] == -signal.SIGTERM
            else "unexpected"
        )
        notes.append(
            f"{config}: spawn to /ready {fmt(ready, '.1f')} s; stopped in "
            f"{fmt(stop.get('stop_s'), '.1f')} s, exit code {stop['returncode']} ({how})."
        )
        solo = next((lv for lv in res["levels"] if lv["concurrency"] == 1), None)
        if solo and "p99_over_p50" in solo:
            notes.append(
                f"{config}: p99/p50 is {solo['p99_over_p50']:.2f} at 1 client, with no queueing:"
                " that much is the spread of the image mix itself."
            )
        hits = sum(lv["cache_hits"] for lv in res["levels"])
        if hits:
            notes.append(f"{config}: {hits} responses came from the result cache (X-Cache: hit).")
        for lv in res["levels"]:
            if lv["rejections"]:
                notes.append(f"{config} x{lv['concurrency']}: rejections {lv['rejections']}.")
            for status, n in lv["errors"].items():
                sample = next(
                    (
                        r.get("body") or r.get("exception")
                        for r in res["records"][str(lv["concurrency"])]
                        if str(r["status"]) == status or r.get("exception", "").startswith(status)
                    ),
                    "",
                )
                notes.append(f"{config} x{lv['concurrency']}: {n} x {status}: {sample}")
        if reference:
            bad = text_mismatches(res, reference)
            if bad:
                notes.append(
                    f"{config}: text differs from the sequential engine's for {len(bad)} "
                    f"image(s): {', '.join(bad)}."
                )
        for line in stop["log_notes"][:10]:
            notes.append(f"{config} server log: {line}")
    return notes


def parse_levels(value: str) -> list[int]:
    try:
        levels = [int(v) for v in value.split(",") if v.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"levels must be integers: {value!r}") from e
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError(f"levels must be positive integers: {value!r}")
    return levels


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--levels", default="1,4,16", type=parse_levels, help="default 1,4,16")
    ap.add_argument(
        "--requests",
        type=int,
        default=60,
        help="requests per level (default 60; a level sends at least its concurrency)",
    )
    ap.add_argument("--port", type=int, default=None, help="server port (default: a free one)")
    ap.add_argument(
        "--configs",
        default=",".join(CONFIGS),
        type=lambda v: comma_list(v, CONFIGS, "config"),
        help="comma list, default on,off",
    )
    ap.add_argument("--eval-dir", type=Path, default=DEFAULT_EVAL_DIR)
    ap.add_argument(
        "--write-results",
        action="store_true",
        help=f"replace the load section of {RESULTS_MD.relative_to(ROOT)}",
    )
    # Internal: how the parent starts an engine-alone worker.
    ap.add_argument("--worker", choices=WORKERS, help=argparse.SUPPRESS)
    ap.add_argument("--job", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.requests < 1:
        ap.error("--requests must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return engine_worker(args.worker, args.job, args.result)

    speed_dir: Path = args.eval_dir.resolve() / SPEED
    paths = sorted(p for p in speed_dir.iterdir() if p.suffix.lower() in SPEED_SUFFIXES)
    images = [Image(p.name, p.read_bytes(), MIME[p.suffix.lower()]) for p in paths]
    small_path = speed_dir / SMALL_IMAGE
    small = Image(SMALL_IMAGE, small_path.read_bytes(), MIME[small_path.suffix.lower()])
    # The engine workers see the exact sequence the top level sends, the one the target is on.
    top_n = max(args.requests, max(args.levels))
    sequence = [paths[i % len(paths)] for i in range(top_n)]

    run = new_run("load")
    machine = machine_info()
    busy0, own0, t_run = *cpu_split(), time.perf_counter()
    machine.update(ocrserve=pkg("ocrserve"), uvicorn=pkg("uvicorn"), httpx=pkg("httpx"))

    # Engine alone first, with no server alive: neither may steal the other's cores.
    engines: dict[str, dict[str, Any]] = {}
    for kind in WORKERS:
        engines[kind] = spawn_engine(kind, sequence, small_path, run)
        what = engines[kind].get("error") or f"{engines[kind]['images_per_s']:.2f} images/s"
        print(f"[load] {kind}: {what}", file=sys.stderr, flush=True)

    servers: dict[str, dict[str, Any]] = {}
    overhead_on = "off" if "off" in args.configs else args.configs[0]
    for config in args.configs:
        port = args.port or free_port()
        servers[config] = measure_server(
            config,
            port,
            run,
            images,
            args.levels,
            args.requests,
            small if config == overhead_on else None,
        )
    machine["loadavg_end"] = os.getloadavg()[0]
    busy1, own1 = cpu_split()
    machine["other_cpu_s"] = max(0.0, (busy1 - busy0) - (own1 - own0))
    capacity = (machine["usable_cores"] or 1) * (time.perf_counter() - t_run)
    machine["other_cpu_pct"] = 100 * machine["other_cpu_s"] / capacity

    over = overhead(servers[overhead_on], engines)
    run_line = (
        f"Run: {len(images)} images from shared/eval/{SPEED} in name order, cycled; "
        f"{args.requests} requests per level (at least the concurrency) at "
        f"{', '.join(map(str, args.levels))} clients; one fresh server per configuration, "
        f"{WARMUP_REQUESTS} warm-up requests each; raw data `{run.relative_to(ROOT)}.json`."
    )
    notes = build_notes(args, machine, engines, servers, over)
    report, verdicts = render(args, machine, engines, servers, over, run_line, notes)
    raw = {
        "args": raw_args(args),
        "machine": machine,
        "engine_alone": engines,
        "servers": servers,
        "overhead": over,
        "verdicts": verdicts,
        "markdown": report,
    }
    publish("load", run, raw, report, to_results=args.write_results)
    failed = (
        any("error" in e for e in engines.values())
        or any("error" in s for s in servers.values())
        or any(lv["errors"] for s in servers.values() for lv in s["levels"])
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
