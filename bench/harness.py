"""The benchmarks' harness: processes, ports, receivers and the machine header.

Every benchmark in ``bench/`` imports this module and ``tables.py`` (the Markdown tables and
the sections of ``bench/RESULTS.md``), never another benchmark: running ``python bench/X.py``
puts ``bench/`` first on ``sys.path``, so both import as top-level modules.

Only the standard library is imported at the top: an engine worker (``bench/engine.py
--worker``) imports this module before its cold start is timed, so httpx, psutil and
http.server are imported where they are used.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    import httpx

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "bench" / "out"
DEFAULT_EVAL_DIR = ROOT.parent / "shared" / "eval"
HOST = "127.0.0.1"
MB = 1024 * 1024
#: SIGTERM to exit; a Celery warm shutdown finishes its running tasks first.
STOP_TIMEOUT_S = 60.0


#: The labelled dev sets of ``../shared/eval/dev``, in the order the reports list them.
DEV_SETS = (
    "sroie_receipts_en",
    "icdar2015_scene_en",
    "rects_signboards_zh",
    "tesseract_pages_en",
    "pdf_docs",
    "funsd_forms_train_en",
    "pdf_docs_more",
)
#: score.py's flags per set: SROIE's ground truth is all upper case; Chinese has no spaces to
#: score; FUNSD's ground truth puts spaces inside tokens ("12 /10 /98").
SCORE_FLAGS: dict[str, tuple[str, ...]] = {
    "sroie_receipts_en": ("--ignore-case",),
    "rects_signboards_zh": ("--nospace",),
    "funsd_forms_train_en": ("--nospace",),
}


# --------------------------------------------------------------------------- the machine


def pkg(name: str) -> str:
    """The installed version of a distribution, or "not installed"."""
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def machine_info() -> dict[str, Any]:
    """CPU, cores, RAM, Python and the peers' versions, the date and the load at the start.

    The caller adds ``loadavg_end`` when its run is over (:func:`machine_header` shows both).
    """

    def first(path: str, key: str) -> str:
        try:
            for line in Path(path).read_text().splitlines():
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return "unknown"

    try:
        tess = (
            subprocess.run(["tesseract", "--version"], capture_output=True, text=True, check=False)
            .stdout.split("\n", 1)[0]
            .removeprefix("tesseract ")
        )
    except OSError:
        tess = "not installed"
    mem_kib = first("/proc/meminfo", "MemTotal").split()[0]
    return {
        "cpu": first("/proc/cpuinfo", "model name"),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "ram_gib": round(int(mem_kib) / MB, 1) if mem_kib.isdigit() else None,
        "python": platform.python_version(),
        "onnxruntime": pkg("onnxruntime"),
        "rapidocr": pkg("rapidocr"),
        "tesseract": tess,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "loadavg_start": os.getloadavg()[0],
    }


def machine_header(m: dict[str, Any], packages: Sequence[str], extra: str = "") -> str:
    """The report's "Machine:" line: ``m`` from :func:`machine_info` (with ``loadavg_end``),
    onnxruntime's version then each of ``packages``' (keys of ``m``), ``extra`` at the end."""
    versions = " · ".join(f"{name} {m[name]}" for name in ("onnxruntime", *packages))
    return (
        f"Machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), "
        f"{m['ram_gib']} GiB RAM · Python {m['python']} · {versions} · {m['date']} · "
        f"load avg {m['loadavg_start']:.1f} at start, {m['loadavg_end']:.1f} at end{extra}"
    )


def machine_busy_s() -> float:
    """Seconds of CPU time the whole machine has been busy (all cores, all processes)."""
    import psutil  # type: ignore[import-untyped]  # no stubs in the dev extras

    t = psutil.cpu_times()
    return float(sum(getattr(t, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq")))


def cpu_split() -> tuple[float, float]:
    """(seconds the whole machine was busy, seconds this process and its waited children ran).

    Their difference over a run is what other processes took from it.
    """
    own = os.times()
    return machine_busy_s(), own.user + own.system + own.children_user + own.children_system


def env_overrides() -> list[str]:
    """The ``OCRSERVE_*`` variables set here: every ocrserve process started inherits them."""
    return sorted(k for k in os.environ if k.startswith("OCRSERVE_"))


def commit(paths: Sequence[str] = ()) -> tuple[str, bool]:
    """The short HEAD, and whether tracked files (under ``paths``, default all) differ from it."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head, bool(git("status", "--porcelain", "--untracked-files=no", *paths))


def new_run(name: str) -> Path:
    """A fresh folder ``bench/out/<name>-<UTC stamp>`` for one run's logs and files."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    run = OUT_DIR / f"{name}-{stamp}"
    run.mkdir(parents=True, exist_ok=True)
    return run


# --------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    s = sorted(values)
    k = (len(s) - 1) * q
    lo = math.floor(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, min, max and count of repeated measurements; empty for none."""
    if not values:
        return {}
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


# --------------------------------------------------------------------------- the network


def forbid_network(who: str) -> None:
    """Make any internet connection in this process an error instead of a silent download.

    Self-contained (its own imports, no module globals): bench/coldstart.py runs its source in
    fresh ``python -c`` children, after ``from __future__ import annotations``.
    """
    import socket

    def refuse(*args: object, **kwargs: object) -> Any:
        raise RuntimeError(f"{who} must not touch the network (a peer tried to)")

    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            refuse()
        real_connect(self, address)

    socket.socket.connect = connect  # type: ignore[method-assign,assignment]
    socket.getaddrinfo = refuse


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (free when asked, at least)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def wait_ready(
    base_url: str,
    procs: Sequence[Proc],
    *,
    timeout_s: float,
    poll_s: float = 0.2,
    client: httpx.Client | None = None,
) -> float:
    """Poll ``GET /ready`` until it answers 200; returns ``time.perf_counter()`` at that answer.

    Raises :class:`RuntimeError` as soon as one of ``procs`` has exited, or at the timeout.
    ``client`` (e.g. to send the next request on the same connection) must not follow proxy
    variables: without one, a client with ``trust_env=False`` is made, so that no proxy
    variable may send this traffic anywhere but 127.0.0.1.
    """
    import httpx

    deadline = time.monotonic() + timeout_s
    with contextlib.ExitStack() as stack:
        if client is None:
            client = stack.enter_context(
                httpx.Client(base_url=base_url, trust_env=False, timeout=5.0)
            )
        while time.monotonic() < deadline:
            for p in procs:
                p.check_alive()
            try:
                if client.get("/ready").status_code == 200:
                    return time.perf_counter()
            except httpx.TransportError:
                pass  # not listening yet
            time.sleep(poll_s)
    raise RuntimeError(f"{procs[0].name} not ready after {timeout_s:.0f} s: {procs[0].tail()}")


# --------------------------------------------------------------------------- processes


def ocrserve_cmd(*args: str) -> list[str]:
    """``python -m ocrserve ARGS`` with this interpreter."""
    return [sys.executable, "-m", "ocrserve", *args]


class Proc:
    """One subprocess (an ``ocrserve`` server or worker), its output in a log file.

    ``t_spawn`` is ``time.perf_counter()`` just before the spawn. :meth:`stop` sends SIGTERM,
    waits, kills after the timeout and reads the log's notable lines (:func:`log_notes`,
    ``raw_notable`` passed on).
    """

    def __init__(
        self,
        name: str,
        cmd: Sequence[str],
        env: dict[str, str],
        log: Path,
        *,
        raw_notable: Sequence[str] | None = None,
    ) -> None:
        import psutil

        self.name, self.log, self.raw_notable = name, log, raw_notable
        self._log_file = log.open("w", encoding="utf-8")
        self.t_spawn = time.perf_counter()
        self.proc = subprocess.Popen(cmd, stdout=self._log_file, stderr=subprocess.STDOUT, env=env)
        self.ps = psutil.Process(self.proc.pid)
        self.stopped: dict[str, Any] | None = None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.tail()}")

    def cpu_s(self) -> float:
        import psutil

        try:
            t = self.ps.cpu_times()
        except psutil.Error:
            return float("nan")
        return float(t.user + t.system)

    def rss_mb(self, children: bool = False) -> float:
        """Resident memory now; with ``children``, its child processes' added."""
        import psutil

        try:
            procs = [self.ps, *(self.ps.children(recursive=True) if children else ())]
            return sum(float(p.memory_info().rss) for p in procs) / MB
        except psutil.Error:
            return float("nan")

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> dict[str, Any]:
        """SIGTERM, wait (SIGKILL after ``timeout_s``); what happened. Once: later calls repeat
        the first one's answer."""
        if self.stopped is not None:
            return self.stopped
        out: dict[str, Any] = {"name": self.name, "log": str(self.log)}
        if self.alive():
            t0 = time.perf_counter()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                out["killed"] = True
            out["stop_s"] = time.perf_counter() - t0
        else:
            out["died_before_stop"] = True
        out["returncode"] = self.proc.returncode
        self._log_file.close()
        out["log_notes"] = log_notes(self.log, self.raw_notable)
        self.stopped = out
        return out

    def tail(self) -> str:
        self._log_file.flush()
        lines = self.log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        # A JSON log record carries its whole traceback on one line: its head says enough.
        return " / ".join(line[:400] for line in lines[-3:])


def log_notes(path: Path, raw_notable: Sequence[str] | None = None) -> list[str]:
    """Distinct warning-and-worse log messages with counts; non-JSON lines (tracebacks) too,
    or with ``raw_notable`` only those that contain one of its (lower-case) words."""
    seen: Counter[str] = Counter()
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            raw = line.strip()[:200]
            if raw and (raw_notable is None or any(w in raw.lower() for w in raw_notable)):
                seen[f"raw: {raw}"] += 1
            continue
        if isinstance(rec, dict) and rec.get("level") not in ("debug", "info"):
            seen[f"{rec.get('level')} {rec.get('logger')}: {rec.get('msg')}"] += 1
    return [f"{msg} (x{n})" if n > 1 else msg for msg, n in seen.items()]


def run_worker(
    cmd: Sequence[str], log: Path, result: Path, env: dict[str, str] | None = None
) -> tuple[dict[str, Any], float]:
    """Run one worker process to its end, its output in ``log``; returns the JSON it wrote to
    ``result`` (or ``error``, ``log`` and ``log_tail`` if it failed) and ``time.time()`` just
    before the spawn."""
    with log.open("w", encoding="utf-8") as out:
        t_spawn = time.time()
        rc = subprocess.run(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, check=False
        ).returncode
    if rc != 0 or not result.is_file():
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-5:]
        return {"error": f"exit {rc}", "log": str(log), "log_tail": tail}, t_spawn
    res: dict[str, Any] = json.loads(result.read_text(encoding="utf-8"))
    return res, t_spawn


# --------------------------------------------------------------------------- receivers


class Arrival(NamedTuple):
    at: float  # perf_counter, the clock of the submit timings
    wall: float  # time.time(), the clock of the server's task timestamps
    webhook_id: str
    task_id: str
    status: str


class Receiver:
    """A webhook receiver on 127.0.0.1 that verifies every signature and records arrivals.

    >>> with Receiver.running("whsec_...") as r:  # doctest: +SKIP
    ...     r.url, r.first_arrivals()
    """

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.arrivals: list[Arrival] = []
        self.invalid: list[str] = []
        self.lock = threading.Lock()
        self.url = ""

    @classmethod
    @contextlib.contextmanager
    def running(cls, secret: str) -> Iterator[Receiver]:
        import http.server

        receiver = cls(secret)

        class Handler(http.server.BaseHTTPRequestHandler):
            # Keep-alive, as a real receiver behind a proxy would offer; HTTP/1.0 would make
            # the dispatcher reconnect for every callback.
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                at, wall = time.perf_counter(), time.time()
                code = receiver.record(body, dict(self.headers.items()), at, wall)
                self.send_response(code)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass  # one line per callback would only slow the receiver down

        server = http.server.ThreadingHTTPServer((HOST, 0), Handler)
        server.daemon_threads = True
        receiver.url = f"http://{HOST}:{server.server_address[1]}/hook"
        thread = threading.Thread(target=server.serve_forever, name="receiver", daemon=True)
        thread.start()
        try:
            yield receiver
        finally:
            server.shutdown()
            server.server_close()
            thread.join(10)

    def record(self, body: bytes, headers: dict[str, str], at: float, wall: float) -> int:
        from ocrserve.webhooks import ID_HEADER, WebhookVerificationError, verify

        try:
            event = verify(body, headers, self.secret)
        except (WebhookVerificationError, ValueError) as e:
            # 400 makes the server dead-letter it at once: a forged or stale callback shows
            # up here and as a lost task, never as a delivery.
            with self.lock:
                self.invalid.append(str(e))
            return 400
        lower = {k.lower(): v for k, v in headers.items()}
        arrival = Arrival(
            at=at,
            wall=wall,
            webhook_id=lower[ID_HEADER],
            task_id=str(event.get("task_id")),
            status=str(event.get("status")),
        )
        with self.lock:
            self.arrivals.append(arrival)
        return 200

    def snapshot(self) -> list[Arrival]:
        with self.lock:
            return list(self.arrivals)

    def first_arrivals(self) -> dict[str, Arrival]:
        """The first delivery of each task."""
        first: dict[str, Arrival] = {}
        for a in self.snapshot():
            if a.task_id not in first:
                first[a.task_id] = a
        return first
