#!/usr/bin/env python3
"""Cold-start benchmark: a fresh process to its first answer, for every way ocrserve starts.

    python bench/coldstart.py                      # every path, 5 rounds
    python bench/coldstart.py --rounds 1           # a quick check that everything runs
    python bench/coldstart.py --paths serve,lambda,import-client --rounds 9
    python bench/coldstart.py --write-results      # also update bench/RESULTS.md

Each measurement starts a fresh process; each of ``--rounds`` rounds measures every path once,
paths alternating round by round (A1 B1 C1 A2 B2 C2 ...), so slow drifts in the load of a
shared machine hit every path alike; the table gives the median, min and max over rounds.
Every path reads the same small image, ``tests/fixtures/en_line_long_text.jpg`` (545x34):

- serve: ``ocrserve serve --host 127.0.0.1 --port P`` (this venv's script) with a fresh, empty
  ``OCRSERVE_DATA_DIR``, defaults otherwise: spawn to the first 200 of ``GET /ready`` (polled
  every 5 ms), and to the answer of a ``POST /ocr`` (multipart field ``file``) sent as soon as
  /ready is 200; the server's RSS (psutil, children included) read right after /ready and again
  right after that answer; then SIGTERM.
- serve-serverless: the same with ``OCRSERVE_PROFILE=serverless``.
- lambda: a fresh ``python -c`` that imports ``ocrserve.serverless`` and calls its
  ``handler(event, context)`` in-process with API Gateway HTTP API (payload 2.0) events,
  ``GET /ready`` then ``POST /ocr`` (the image as a base64 multipart body), under the
  environment of ``deploy/serverless/lambda/Dockerfile`` and a fresh data folder (a fresh
  container's /tmp): spawn to each answer, and the child's own import time.
- cli: ``ocrserve ocr IMAGE``, spawn to exit (exit 0 and text on stdout checked).
- version: ``ocrserve --version``, spawn to exit.
- import-client, import-webhooks: ``python -c "import ocrserve.client"`` (``.webhooks``),
  spawn to exit, and the import alone timed inside the child, with ``len(sys.modules)`` after
  it and which of onnxruntime, cv2, pypdfium2 and numpy it loaded.
- rapidocr (a peer): a fresh ``python -c`` running ``RapidOCR()(IMAGE)``: spawn to result.
- tesseract (a peer): ``tesseract IMAGE stdout``, spawn to exit, if installed.

A child's marks are ``time.perf_counter()``, CLOCK_MONOTONIC on Linux: one clock for every
process of the machine, so the parent subtracts its spawn time from them. The Python children
(lambda, rapidocr) refuse any internet socket; the servers listen on 127.0.0.1 and only
127.0.0.1 is ever contacted. Before the first round, one untimed import of the ocrserve
modules compiles their bytecode, so that no round pays for it. Raw results (every round)
land in ``bench/out/``.
"""

from __future__ import annotations

import argparse
import base64
import inspect
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import httpx

# bench/ is not a package: running this file puts bench/ first on sys.path, so the harness
# and the tables import as top-level modules and every report shares one machine line.
from harness import (
    HOST,
    ROOT,
    Proc,
    commit,
    cpu_split,
    env_overrides,
    forbid_network,
    free_port,
    machine_header,
    machine_info,
    new_run,
    pkg,
    spread,
    wait_ready,
)
from tables import (
    RESULTS_MD,
    comma_list,
    fmt,
    judge,
    positive,
    publish,
    raw_args,
    table_head,
    table_row,
)

TAG = "coldstart"
PATHS = (
    "serve",
    "serve-serverless",
    "lambda",
    "cli",
    "version",
    "import-client",
    "import-client-only",
    "import-webhooks",
    "rapidocr",
    "tesseract",
)
IMAGE = ROOT / "tests" / "fixtures" / "en_line_long_text.jpg"
#: The console script of the interpreter running this (the venv's ``bin/ocrserve``).
OCRSERVE_BIN = Path(sys.executable).with_name("ocrserve")
HEAVY = ("onnxruntime", "cv2", "pypdfium2", "numpy")
#: What deploy/serverless/lambda/Dockerfile sets for the function.
LAMBDA_ENV = {"OCRSERVE_PROFILE": "serverless", "OCRSERVE_LANES": "1", "OCRSERVE_LOG_JSON": "true"}
PRIME_MODULES = ("ocrserve.cli", "ocrserve.api.app", "ocrserve.serverless", "ocrserve.client")

POLL_S = 0.005
READY_TIMEOUT_S = 120.0
ANSWER_TIMEOUT_S = 120.0
CHILD_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 30.0
#: The line a Python child prints its measurements on (its other output is logs).
MARK = "@coldstart "


class Metric(NamedTuple):
    path: str
    key: str
    label: str
    target: float | None = None


SECONDS = (
    Metric("serve", "ready_s", "spawn to first 200 of GET /ready"),
    Metric("serve", "first_ocr_s", "spawn to first POST /ocr answered", 1.0),
    Metric("serve-serverless", "ready_s", "spawn to first 200 of GET /ready"),
    Metric("serve-serverless", "first_ocr_s", "spawn to first POST /ocr answered"),
    Metric("lambda", "ready_s", "spawn to GET /ready event answered"),
    Metric("lambda", "first_ocr_s", "spawn to POST /ocr event answered", 1.0),
    Metric("lambda", "import_s", "import ocrserve.serverless, in the child"),
    Metric("cli", "wall_s", "`ocrserve ocr IMAGE`, spawn to exit"),
    Metric("version", "wall_s", "`ocrserve --version`, spawn to exit"),
    Metric("import-client", "wall_s", '`python -c "import ocrserve.client"`, spawn to exit'),
    Metric("import-client", "import_s", "import ocrserve.client, in the child", 0.15),
    Metric(
        "import-client-only",
        "import_s",
        "import ocrserve.client, in the child, a client-only install's packages only",
        0.15,
    ),
    Metric("import-webhooks", "wall_s", '`python -c "import ocrserve.webhooks"`, spawn to exit'),
    Metric("import-webhooks", "import_s", "import ocrserve.webhooks, in the child"),
    Metric("rapidocr", "first_result_s", "spawn to first result of `RapidOCR()(IMAGE)`"),
    Metric("tesseract", "wall_s", "`tesseract IMAGE stdout`, spawn to exit"),
)
MEGABYTES = (
    Metric("serve", "rss_ready_mb", "RSS right after /ready", 300.0),
    Metric("serve", "rss_ocr_mb", "RSS right after the first /ocr answer", 300.0),
    Metric("serve-serverless", "rss_ready_mb", "RSS right after /ready"),
    Metric("serve-serverless", "rss_ocr_mb", "RSS right after the first /ocr answer"),
    Metric("lambda", "maxrss_mb", "peak RSS of the child (ru_maxrss)"),
    Metric("rapidocr", "maxrss_mb", "peak RSS of the child (ru_maxrss)"),
)


# --------------------------------------------------------------------------- child programs
# Run as ``python -c``, each starting with its first perf_counter mark. An import-* child
# imports nothing but ``time`` before the import it times; the lambda and rapidocr children
# first refuse the network (socket) and the lambda one reads its events (json). Each prints
# its marks on one line starting with MARK, its other output being logs.

_START = "from __future__ import annotations\nimport time\n\nt_main = time.perf_counter()\n"
_REPORT = """
import json
import resource
import sys

marks["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print({mark!r} + json.dumps(marks, ensure_ascii=False), flush=True)
"""


def guarded(body: str, epilogue: str = "") -> str:
    """``body`` after the start mark and :func:`harness.forbid_network`'s own source; then the
    line of measurements (``body`` leaves them in ``marks``), then ``epilogue``."""
    guard = inspect.getsource(forbid_network) + '\nforbid_network("bench/coldstart.py")\n'
    return _START + guard + body + _REPORT.format(mark=MARK) + epilogue


#: The packages of a client-only install (``pip install --no-deps ocrserve httpx tenacity``):
#: an import-client-only child refuses every other non-stdlib package before it starts timing,
#: as tests/test_startup.py does. (This venv has rich, which httpx imports for its own CLI
#: when it is there: ~70 ms that a client-only install does not pay.)
CLIENT_ONLY = (
    "httpx", "httpcore", "h11", "h2", "hpack", "hyperframe", "anyio", "sniffio", "idna",
    "certifi", "tenacity", "ocrserve", "typing_extensions", "exceptiongroup",
)  # fmt: skip
_CLIENT_ONLY_FINDER = f"""import importlib.abc
import sys


class _ClientOnly(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top in sys.stdlib_module_names or top in {CLIENT_ONLY!r} or top.startswith("_"):
            return None
        raise ImportError(f"not in a client-only install: {{name}}")


sys.meta_path.insert(0, _ClientOnly())
"""


def import_child(module: str, *, client_only: bool = False) -> str:
    return (
        (_CLIENT_ONLY_FINDER if client_only else "")
        + f"""import time

t_main = time.perf_counter()
import {module}

t_imported = time.perf_counter()
import sys

modules = len(sys.modules)
heavy = [m for m in {HEAVY!r} if m in sys.modules]
import json

marks = {{"t_main": t_main, "import_s": t_imported - t_main, "modules": modules, "heavy": heavy}}
print({MARK!r} + json.dumps(marks), flush=True)
"""
    )


LAMBDA_CHILD = guarded(
    '''
import json
import sys

with open(sys.argv[1], encoding="utf-8") as f:
    events = json.load(f)
t_import = time.perf_counter()
import ocrserve.serverless

t_imported = time.perf_counter()


class Context:
    """What Lambda passes as ``context``."""

    function_name = "ocrserve"
    aws_request_id = "c6af9ac6-7b61-11e6-9a41-93e812345678"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


handler = ocrserve.serverless.handler
ready = handler(events["ready"], Context())
t_ready = time.perf_counter()
ocr = handler(events["ocr"], Context())
t_ocr = time.perf_counter()
body = ocr["body"]
if ocr.get("isBase64Encoded"):
    import base64

    body = base64.b64decode(body).decode()
try:
    text = json.loads(body).get("text") or ""
except ValueError:
    text = ""
marks = {
    "t_main": t_main,
    "t_ready": t_ready,
    "t_ocr": t_ocr,
    "import_s": t_imported - t_import,
    "ready_status": ready["statusCode"],
    "ocr_status": ocr["statusCode"],
    "text": text,
    "body": body[:300] if ocr["statusCode"] != 200 else "",
}
''',
    epilogue="handler.close()\n",
)

RAPIDOCR_CHILD = guarded("""
import sys

from rapidocr import RapidOCR

t_imported = time.perf_counter()
engine = RapidOCR()
result = engine(sys.argv[1])
t_result = time.perf_counter()
txts = getattr(result, "txts", None)
marks = {
    "t_main": t_main,
    "t_result": t_result,
    "import_s": t_imported - t_main,
    "text": "\\n".join(txts) if txts else "",
}
""")


# --------------------------------------------------------------------------- the Lambda events


def http_api_event(
    method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """An API Gateway HTTP API event, payload format 2.0, as AWS documents and sends it."""
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {
            "host": "abcdef123.execute-api.eu-west-1.amazonaws.com",
            "user-agent": "bench/coldstart.py",
            "x-forwarded-for": "198.51.100.7",
            "x-forwarded-port": "443",
            "x-forwarded-proto": "https",
            **({"content-length": str(len(body))} if body else {}),
            **(headers or {}),
        },
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abcdef123",
            "domainName": "abcdef123.execute-api.eu-west-1.amazonaws.com",
            "domainPrefix": "abcdef123",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "198.51.100.7",
                "userAgent": "bench/coldstart.py",
            },
            "requestId": "JKJaXmPLvHcESHA=",
            "routeKey": "$default",
            "stage": "$default",
            "time": "10/Mar/2026:13:40:52 +0000",
            "timeEpoch": 1773150052000,
        },
        "body": base64.b64encode(body).decode(),
        "isBase64Encoded": True,
    }


def lambda_events(image: bytes) -> dict[str, Any]:
    # httpx only builds the multipart body here; nothing is sent.
    request = httpx.Request(
        "POST", "https://x/ocr", files={"file": (IMAGE.name, image, "image/jpeg")}
    )
    body = request.read()
    return {
        "ready": http_api_event("GET", "/ready"),
        "ocr": http_api_event(
            "POST", "/ocr", body, {"content-type": request.headers["content-type"]}
        ),
    }


# --------------------------------------------------------------------------- measurements


class Job(NamedTuple):
    run: Path
    image: bytes
    events: Path  # the Lambda events, as JSON


def measure_serve(job: Job, tag: str, extra_env: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    port = free_port()
    base = f"http://{HOST}:{port}"
    with tempfile.TemporaryDirectory(prefix="ocrserve-coldstart-") as data_dir:
        env = {**os.environ, "OCRSERVE_DATA_DIR": data_dir, **extra_env}
        cmd = [str(OCRSERVE_BIN), "serve", "--host", HOST, "--port", str(port)]
        server = Proc("server", cmd, env, job.run / f"{tag}.log")
        try:
            # trust_env=False: no proxy variable may send this traffic anywhere but 127.0.0.1.
            with httpx.Client(base_url=base, trust_env=False, timeout=ANSWER_TIMEOUT_S) as client:
                t_ready = wait_ready(
                    base, [server], timeout_s=READY_TIMEOUT_S, poll_s=POLL_S, client=client
                )
                out["rss_ready_mb"] = server.rss_mb(children=True)
                files = {"file": (IMAGE.name, job.image, "image/jpeg")}
                r = client.post("/ocr", files=files)
                t_ocr = time.perf_counter()
                out["rss_ocr_mb"] = server.rss_mb(children=True)
            out.update(ready_s=t_ready - server.t_spawn, status=r.status_code)
            if r.status_code == 200:
                out["first_ocr_s"] = t_ocr - server.t_spawn
                out["text"] = r.json().get("text") or ""
            else:
                out["error"] = f"POST /ocr answered {r.status_code}: {r.text[:300]}"
        except Exception as e:  # this round failed: say so in the report, go on
            out["error"] = f"{type(e).__name__}: {e}"
        finally:
            out["stop"] = server.stop(STOP_TIMEOUT_S)
    return out


def run_child(
    cmd: Sequence[str], log: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], float, float]:
    """Run a command to its end, output kept in ``log``: (its result, perf_counter just before
    the spawn, perf_counter once it exited)."""
    t_spawn = time.perf_counter()
    done = subprocess.run(
        cmd, capture_output=True, text=True, env=env, timeout=CHILD_TIMEOUT_S, check=False
    )
    t_exit = time.perf_counter()
    log.write_text(
        f"$ {' '.join(cmd[:2])} ...\nexit {done.returncode}\n--- stdout\n{done.stdout}"
        f"--- stderr\n{done.stderr}",
        encoding="utf-8",
    )
    return done, t_spawn, t_exit


def marks_of(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The measurements a Python child printed; raises if it printed none."""
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(MARK):
            marks: dict[str, Any] = json.loads(line.removeprefix(MARK))
            return marks
    tail = " / ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
    raise RuntimeError(f"exit {done.returncode}, no measurements: {tail[:600]}")


def measure_lambda(job: Job, tag: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ocrserve-coldstart-") as data_dir:
        # A fresh folder where the profile would use /tmp/ocrserve: a new container's /tmp.
        env = {**os.environ, **LAMBDA_ENV, "OCRSERVE_DATA_DIR": data_dir}
        cmd = [sys.executable, "-c", LAMBDA_CHILD, str(job.events)]
        done, t_spawn, _ = run_child(cmd, job.run / f"{tag}.log", env)
    marks = marks_of(done)
    out: dict[str, Any] = {
        "ready_s": marks["t_ready"] - t_spawn,
        "interpreter_s": marks["t_main"] - t_spawn,
        "import_s": marks["import_s"],
        "maxrss_mb": marks["maxrss_mb"],
        "status": marks["ocr_status"],
        "ready_status": marks["ready_status"],
        "text": marks["text"],
    }
    if marks["ready_status"] != 200 or marks["ocr_status"] != 200:
        out["error"] = (
            f"GET /ready {marks['ready_status']}, POST /ocr {marks['ocr_status']}: {marks['body']}"
        )
    else:
        out["first_ocr_s"] = marks["t_ocr"] - t_spawn
    return out


def measure_command(cmd: Sequence[str], log: Path, text: bool, fresh_data: bool) -> dict[str, Any]:
    """Wall time of one command, spawn to exit; with ``text``, its stdout must not be empty."""
    with tempfile.TemporaryDirectory(prefix="ocrserve-coldstart-") as data_dir:
        env = {**os.environ, **({"OCRSERVE_DATA_DIR": data_dir} if fresh_data else {})}
        done, t_spawn, t_exit = run_child(cmd, log, env)
    out: dict[str, Any] = {"returncode": done.returncode, "output": done.stdout.strip()[:300]}
    if text:
        out["text"] = done.stdout.strip()
    if done.returncode != 0:
        tail = " / ".join(done.stderr.strip().splitlines()[-3:])
        out["error"] = f"exit {done.returncode}: {tail[:600]}"
    elif not done.stdout.strip():
        out["error"] = "exit 0 but nothing on stdout"
    else:
        out["wall_s"] = t_exit - t_spawn
    return out


def measure_import(job: Job, tag: str, module: str, *, client_only: bool = False) -> dict[str, Any]:
    cmd = [sys.executable, "-c", import_child(module, client_only=client_only)]
    done, t_spawn, t_exit = run_child(cmd, job.run / f"{tag}.log")
    marks = marks_of(done)
    out: dict[str, Any] = {
        "interpreter_s": marks["t_main"] - t_spawn,
        "import_s": marks["import_s"],
        "modules": marks["modules"],
        "heavy": marks["heavy"],
    }
    if done.returncode != 0:
        out["error"] = f"exit {done.returncode}"
    else:
        out["wall_s"] = t_exit - t_spawn
    return out


def measure_rapidocr(job: Job, tag: str) -> dict[str, Any]:
    cmd = [sys.executable, "-c", RAPIDOCR_CHILD, str(IMAGE)]
    done, t_spawn, _ = run_child(cmd, job.run / f"{tag}.log")
    marks = marks_of(done)
    return {
        "first_result_s": marks["t_result"] - t_spawn,
        "interpreter_s": marks["t_main"] - t_spawn,
        "import_s": marks["import_s"],
        "maxrss_mb": marks["maxrss_mb"],
        "text": marks["text"],
    }


def measurer(path: str) -> Callable[[Job, str], dict[str, Any]] | None:
    """How to measure a path once; None for a peer that is not installed."""
    if path == "serve":
        return lambda job, tag: measure_serve(job, tag, {})
    if path == "serve-serverless":
        return lambda job, tag: measure_serve(job, tag, {"OCRSERVE_PROFILE": "serverless"})
    if path == "lambda":
        return measure_lambda
    if path == "cli":
        cmd = [str(OCRSERVE_BIN), "ocr", str(IMAGE)]
        return lambda job, tag: measure_command(cmd, job.run / f"{tag}.log", True, True)
    if path == "version":
        cmd = [str(OCRSERVE_BIN), "--version"]
        return lambda job, tag: measure_command(cmd, job.run / f"{tag}.log", False, False)
    if path == "import-client-only":
        return lambda job, tag: measure_import(job, tag, "ocrserve.client", client_only=True)
    if path.startswith("import-"):
        module = f"ocrserve.{path.removeprefix('import-')}"
        return lambda job, tag: measure_import(job, tag, module)
    if path == "rapidocr":
        return measure_rapidocr
    if path == "tesseract":
        binary = shutil.which("tesseract")
        if binary is None:
            return None
        cmd = [binary, str(IMAGE), "stdout"]
        return lambda job, tag: measure_command(cmd, job.run / f"{tag}.log", True, False)
    raise ValueError(f"unknown path {path!r}")


def prime(run: Path) -> str | None:
    """Import the ocrserve modules once, untimed: bytecode compiled before any round."""
    cmd = [sys.executable, "-c", "; ".join(f"import {m}" for m in PRIME_MODULES)]
    done, _, _ = run_child(cmd, run / "prime.log")
    if done.returncode != 0:
        return f"the untimed priming import failed (exit {done.returncode}), see prime.log"
    return None


def progress(r: int, path: str, res: dict[str, Any]) -> None:
    if "error" in res:
        what = f"FAILED {res['error']}"
    else:
        keys = [m.key for m in (*SECONDS, *MEGABYTES) if m.path == path and m.key in res]
        what = ", ".join(
            f"{k} {res[k]:.0f}" if k.endswith("_mb") else f"{k} {res[k]:.3f}" for k in keys
        )
    print(f"[{TAG}] r{r} {path}: {what}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- report


def summarise(paths: Sequence[str], results: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path in paths:
        mine = [r for r in results if r["path"] == path]
        ok = [r for r in mine if "error" not in r]
        s: dict[str, Any] = {
            "rounds": len(mine),
            "failed": len(mine) - len(ok),
            "skipped": any(r.get("skipped") for r in mine),
        }
        for m in (*SECONDS, *MEGABYTES):
            if m.path == path:
                s[m.key] = spread([r[m.key] for r in ok if m.key in r])
        for key in ("interpreter_s", "modules"):
            values = [r[key] for r in ok if key in r]
            if values:
                s[key] = spread(values)
        if any("text" in r for r in mine):
            s["text_ok"] = sum(1 for r in mine if r.get("text"))
        heavy = sorted({h for r in ok for h in r.get("heavy", ())})
        if any("heavy" in r for r in ok):
            s["heavy"] = heavy
        out[path] = s
    return out


def verdict(s: dict[str, float], target: float | None) -> bool | None:
    return None if target is None or not s else s["median"] <= target


def rows(
    metrics: Sequence[Metric], paths: Sequence[str], summaries: dict[str, Any], unit: str
) -> list[str]:
    spec = ".0f" if unit == "MB" else ".3f"
    lines = []
    for m in (m for m in metrics if m.path in paths):
        s = summaries[m.path]
        st: dict[str, float] = s[m.key]
        label = f"{m.path}: {m.label}"
        target = "-"
        if m.target is not None:
            target = f"<= {m.target:.0f} {unit}" if unit == "MB" else f"<= {m.target} {unit}"
        if s["skipped"]:
            lines.append(table_row([label, "not installed", "-", "-", target, "-"]))
            continue
        if not st:
            lines.append(table_row([label, "FAILED", "-", "-", target, "n/a"]))
            continue
        ok = verdict(st, m.target)
        lines.append(
            table_row(
                [
                    label,
                    fmt(st["median"], spec),
                    fmt(st["min"], spec),
                    fmt(st["max"], spec),
                    target,
                    "-" if m.target is None else judge(ok),
                ]
            )
        )
    return lines


def render(
    paths: Sequence[str],
    summaries: dict[str, Any],
    machine: dict[str, Any],
    run_line: str,
    notes: list[str],
) -> str:
    lines = [
        "## Cold start: a fresh process to its first answer",
        "",
        machine_header(
            machine,
            ("ocrserve", "rapidocr", "tesseract"),
            f" · other processes {machine['other_cpu_pct']:.0f}% of the CPU during the run",
        ),
        "",
        run_line,
        "",
        *table_head(["path", "median s", "min", "max", "target", "met?"]),
        *rows(SECONDS, paths, summaries, "s"),
    ]
    mem = rows(MEGABYTES, paths, summaries, "MB")
    if mem:
        lines += ["", *table_head(["path", "median MB", "min", "max", "target", "met?"]), *mem]
    lines += ["", *(f"- {n}" for n in notes)]
    return "\n".join(lines) + "\n"


def build_notes(
    args: argparse.Namespace,
    machine: dict[str, Any],
    paths: Sequence[str],
    summaries: dict[str, Any],
    results: list[dict[str, Any]],
    pre: list[str],
) -> list[str]:
    notes = [
        "Each row: a fresh process per round; median, min and max over rounds. Targets: serve "
        "and lambda first /ocr <= 1.0 s, import ocrserve.client <= 0.15 s in-process, idle "
        "server RSS <= 300 MB (both readings of `serve`).",
    ]
    if {"serve", "serve-serverless"} & set(paths):
        notes.append(
            "serve: the venv's `ocrserve serve` with a fresh empty OCRSERVE_DATA_DIR, /ready "
            f"polled every {1000 * POLL_S:.0f} ms, then one POST /ocr (multipart `file`); RSS "
            "by psutil, the server and its children, read at once after /ready and after the "
            "answer (no wait). serve-serverless adds OCRSERVE_PROFILE=serverless."
        )
    if "lambda" in paths:
        notes.append(
            "lambda: `ocrserve.serverless.handler` called in a fresh `python -c` with API "
            "Gateway HTTP API v2 events (GET /ready, then POST /ocr with a base64 multipart "
            "body), "
            + ", ".join(f"{k}={v}" for k, v in LAMBDA_ENV.items())
            + " (as deploy/serverless/lambda/Dockerfile) and a fresh OCRSERVE_DATA_DIR; a "
            "real Lambda adds its runtime's own start on top."
        )
    if any(p.startswith("import-") for p in paths):
        notes.append(
            "import-*: the import alone, timed inside the child around the import statement; "
            "the row `spawn to exit` adds the interpreter's start and exit."
        )
    texts = [
        f"{p} {summaries[p]['text_ok']}/{summaries[p]['rounds']}"
        for p in paths
        if "text_ok" in summaries[p] and not summaries[p]["skipped"]
    ]
    if texts:
        notes.append(f"Text came back non-empty: {', '.join(texts)} rounds (texts in raw data).")
    for path in paths:
        s = summaries[path]
        if s["skipped"]:
            continue
        if "modules" in s:
            heavy = ", ".join(s["heavy"]) or "none of " + ", ".join(HEAVY)
            notes.append(
                f"{path}: {s['modules']['median']:.0f} modules in sys.modules after the import; "
                f"heavy modules loaded: {heavy}; interpreter start (spawn to the child's first "
                f"line) {s['interpreter_s']['median']:.3f} s."
            )
        for r in results:
            if r["path"] == path and "error" in r:
                notes.append(f"{path} r{r['round']}: FAILED {r['error']}")
            killed = r.get("stop", {}).get("killed")
            if r["path"] == path and killed:
                notes.append(f"{path} r{r['round']}: the server needed SIGKILL to stop.")
    if "tesseract" in paths and summaries["tesseract"]["skipped"]:
        notes.append("tesseract: not installed (no `tesseract` on PATH).")
    overrides = env_overrides()
    if overrides:
        notes.append(f"Environment overrides inherited: {', '.join(overrides)}.")
    if machine["other_cpu_pct"] >= 10:
        notes.append(
            f"WARNING: other processes used {machine['other_cpu_pct']:.0f}% of the machine's CPU "
            f"during this run ({machine['other_cpu_s']:.0f} core-seconds): results are disturbed."
        )
    if args.rounds < 3:
        notes.append(
            f"SHORT RUN (--rounds {args.rounds}): too few rounds for a median; not comparable "
            "with full runs."
        )
    return notes + pre


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--paths",
        default=",".join(PATHS),
        type=lambda v: comma_list(v, PATHS, "path"),
        help=f"comma list, default all: {','.join(PATHS)}",
    )
    ap.add_argument(
        "--rounds", type=positive, default=5, help="fresh processes per path (default 5)"
    )
    ap.add_argument(
        "--write-results",
        action="store_true",
        help=f"replace the coldstart section of {RESULTS_MD.relative_to(ROOT)}",
    )
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    paths = [p for p in PATHS if p in args.paths]
    if not OCRSERVE_BIN.is_file():
        raise SystemExit(f"no {OCRSERVE_BIN}: run this with the venv's python")
    run = new_run(TAG)
    machine = machine_info()
    machine["ocrserve"] = pkg("ocrserve")
    head, dirty = commit()
    at = head + ("+" if dirty else "")
    image = IMAGE.read_bytes()
    events = run / "lambda-events.json"
    events.write_text(json.dumps(lambda_events(image)), encoding="utf-8")
    job = Job(run, image, events)
    notes: list[str] = []
    if (failed := prime(run)) is not None:
        notes.append(failed)
    how = {path: measurer(path) for path in paths}

    results: list[dict[str, Any]] = []
    busy0, own0, t_run = *cpu_split(), time.perf_counter()
    for r in range(1, args.rounds + 1):
        for path in paths:
            measure = how[path]
            tag = f"{path}-r{r}"
            if measure is None:
                results.append({"path": path, "round": r, "skipped": True})
                continue
            try:
                res = measure(job, tag)
            except Exception as e:  # this round failed: say so in the report, go on
                res = {"error": f"{type(e).__name__}: {e}"}
            results.append({"path": path, "round": r, "tag": tag, **res})
            progress(r, path, res)
    machine["loadavg_end"] = os.getloadavg()[0]
    busy1, own1 = cpu_split()
    machine["other_cpu_s"] = max(0.0, (busy1 - busy0) - (own1 - own0))
    capacity = (machine["usable_cores"] or 1) * (time.perf_counter() - t_run)
    machine["other_cpu_pct"] = 100 * machine["other_cpu_s"] / capacity

    summaries = summarise(paths, results)
    run_line = (
        f"Run: commit {at}; {args.rounds} round{'s' * (args.rounds > 1)}, every path once a "
        "round in a fresh process, paths alternating round by round; image "
        f"`{IMAGE.relative_to(ROOT)}` (545x34); raw data `{run.relative_to(ROOT)}.json`, logs "
        f"in `{run.relative_to(ROOT)}/`."
    )
    report = render(
        paths,
        summaries,
        machine,
        run_line,
        build_notes(args, machine, paths, summaries, results, notes),
    )
    raw = {
        "args": raw_args(args),
        "commit": at,
        "machine": machine,
        "summaries": summaries,
        "results": results,
        "markdown": report,
    }
    publish(TAG, run, raw, report, to_results=args.write_results)
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
