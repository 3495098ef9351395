"""make image-test: the image run as a user runs it, checked end to end (slow: not in make test).

1. `serve` (the image's default command) on a named volume: the time from `run` to a 200 from
   /ready, a real /ocr answer on tests/fixtures/en_line_long_text.jpg, the server running as a
   user other than root, the data folder owned by it, the image's HEALTHCHECK passing, then
   `stop` (SIGTERM) with a request in flight: the request answered, the server gone within 30 s
   with exit status 0.
2. With --database-url and --broker-url (a PostgreSQL and a broker the containers can reach):
   the worker variant. A `serve` in distributed mode takes an /ocr/async task, a container of
   the same image runs `ocrserve worker --burst`, and the task has succeeded with the text.
   The tables live in a schema of their own, dropped afterwards; the queue has its own name.
3. The image's uncompressed size, from `image inspect`.

Prints the numbers as a Markdown table; exits 1 on the first failed check. Standard library
only: it runs with any Python 3.11 next to podman (or docker: --engine docker).

    python3 deploy/image_test.py --image ocrserve:0.1.0
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shlex
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "en_line_long_text.jpg"
PARAGRAPH = ROOT / "tests" / "fixtures" / "en_doc_paragraph.jpg"  # about a second of work
EXPECTED = "采用高端宝石制作镜片"
STOP_LIMIT_S = 30
# This machine's sandbox refuses crun and the default ulimits; runc and these limits work with
# podman and docker alike. --network host is always added: the container listens on the port
# given by OCRSERVE_PORT, which is then the host's.
DEFAULT_RUN_FLAGS = "--runtime runc --ulimit nofile=4096:4096 --ulimit nproc=4096:4096"


class CheckFailed(Exception):
    pass


def expect(ok: bool, what: str) -> None:
    if not ok:
        raise CheckFailed(what)
    print(f"ok: {what}", flush=True)


class Engine:
    """The container engine's command line."""

    def __init__(self, command: str, image: str, run_flags: list[str]) -> None:
        self.command = command
        self.image = image
        self.run_flags = run_flags

    def __call__(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        result = subprocess.run(
            [self.command, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise CheckFailed(f"{self.command} {shlex.join(args)}: {result.stderr.strip()}")
        return result.stdout.strip()

    def run(self, name: str, env: dict[str, str], volume: str, *command: str) -> str:
        flags = [f"--env={k}={v}" for k, v in env.items()]
        return self(
            "run", "--detach", f"--name={name}", "--network=host", *self.run_flags,
            f"--volume={volume}:/data", *flags, self.image, *command,
        )  # fmt: skip

    @contextmanager
    def volume(self) -> Iterator[str]:
        name = f"ocrserve-image-test-{uuid.uuid4().hex[:8]}"
        self("volume", "create", name)
        try:
            yield name
        finally:
            self("volume", "rm", "--force", name, check=False)

    @contextmanager
    def container(self, env: dict[str, str], volume: str, *command: str) -> Iterator[str]:
        name = f"ocrserve-image-test-{uuid.uuid4().hex[:8]}"
        self.run(name, env, volume, *command)
        try:
            yield name
        finally:
            if self("inspect", "--format={{.State.Running}}", name, check=False) == "true":
                print(self("logs", "--tail=20", name, check=False), file=sys.stderr)
            self("rm", "--force", name, check=False)

    def logs(self, name: str) -> str:
        result = subprocess.run(
            [self.command, "logs", name], capture_output=True, text=True, check=False
        )
        return result.stdout + result.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def http(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def multipart(field: str, path: Path, media_type: str) -> tuple[bytes, dict[str, str]]:
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
        f'filename="{path.name}"\r\nContent-Type: {media_type}\r\n\r\n'
    )
    body = head.encode() + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def wait_ready(engine: Engine, name: str, port: int, started: float, limit: float = 180) -> float:
    """Seconds from `started` to the first 200 from /ready."""
    while time.monotonic() - started < limit:
        try:
            status, _ = http("GET", f"http://127.0.0.1:{port}/ready")
            if status == 200:
                return time.monotonic() - started
        except (OSError, json.JSONDecodeError):
            pass
        if engine("inspect", "--format={{.State.Running}}", name, check=False) != "true":
            raise CheckFailed(f"the container exited before /ready:\n{engine.logs(name)}")
        time.sleep(0.1)
    raise CheckFailed(f"/ready not 200 within {limit} s:\n{engine.logs(name)}")


def check_serve(engine: Engine, numbers: dict[str, str]) -> None:
    port = free_port()
    with engine.volume() as volume:
        started = time.monotonic()
        with engine.container({"OCRSERVE_PORT": str(port)}, volume) as name:
            ready_s = wait_ready(engine, name, port, started)
            numbers["`run` to /ready 200 (serve, cold)"] = f"{ready_s:.1f} s"

            body, headers = multipart("image", FIXTURE, "image/jpeg")
            t0 = time.monotonic()
            status, answer = http("POST", f"http://127.0.0.1:{port}/ocr", body, headers)
            numbers["first /ocr answer"] = f"{time.monotonic() - t0:.2f} s"
            text = str(answer.get("text", ""))
            numbers["first /ocr text"] = f"`{text}`"
            expect(status == 200 and EXPECTED in text, f"/ocr reads {EXPECTED!r} ({status})")
            numbers["`run` to first /ocr answer"] = f"{time.monotonic() - started:.1f} s"

            status, health = http("GET", f"http://127.0.0.1:{port}/health")
            expect(status == 200 and health.get("status") == "ok", f"/health: {health}")

            uid = engine("exec", name, "grep", "^Uid:", "/proc/1/status").split()[1:]
            expect(bool(uid) and "0" not in uid, f"the server (PID 1) runs as uid {uid[0]}")
            owner = engine("exec", name, "stat", "-c", "%u %a", "/data").split()
            data = engine("exec", name, "ls", "/data").split()
            expect(owner == [uid[0], "700"], f"/data is uid {owner[0]}'s, mode {owner[1]}")
            expect("tasks.db" in data, f"the task database is on the volume: {data}")

            if Path(engine.command).name == "podman":
                health_run = engine("healthcheck", "run", name)  # fails on a failing check
                expect(health_run in ("", "healthy"), "the image's HEALTHCHECK passes")
            else:  # docker runs it on its own schedule (the first after --interval, 30 s)
                state = engine("inspect", "--format={{.State.Health.Status}}", name)
                print(f"HEALTHCHECK state: {state}")

            # Stopped with a request in flight: SIGTERM reaches the server (no shell in between),
            # which finishes the request (well within the drain's 20 s) and exits within the limit.
            in_flight: dict[str, float] = {}
            paragraph, paragraph_headers = multipart("image", PARAGRAPH, "image/jpeg")

            def send() -> None:
                url = f"http://127.0.0.1:{port}/ocr"
                in_flight["status"], _ = http("POST", url, paragraph, paragraph_headers)
                in_flight["answered"] = time.monotonic()

            sender = threading.Thread(target=send)
            sender.start()
            time.sleep(0.2)
            t0 = time.monotonic()
            engine("stop", f"--time={STOP_LIMIT_S}", name, timeout=STOP_LIMIT_S + 30)
            stop_s = time.monotonic() - t0
            sender.join(timeout=30)
            code = engine("inspect", "--format={{.State.ExitCode}}", name)
            answered = in_flight.get("status")
            after = in_flight.get("answered", t0) - t0  # < 0: answered before the SIGTERM
            numbers["`stop` (SIGTERM) to exit, an /ocr in flight"] = (
                f"{stop_s:.1f} s, exit status {code}; the request: {answered}, {after:.2f} s "
                "after the SIGTERM"
            )
            ok = stop_s < STOP_LIMIT_S and code == "0"
            expect(ok, f"SIGTERM: exit status {code} after {stop_s:.1f} s")
            expect(answered == 200, f"the request in flight was answered: {answered}")


def check_worker(
    engine: Engine, database_url: str, broker_url: str, numbers: dict[str, str]
) -> None:
    schema = f"ocrserve_image_test_{uuid.uuid4().hex[:8]}"
    sqlalchemy_url = database_url.replace("postgresql://", "postgresql+psycopg://", 1)
    sql = (
        "import sys, sqlalchemy as s\n"
        "with s.create_engine(sys.argv[1]).begin() as c:\n"
        "    c.execute(s.text(sys.argv[2]))\n"
    )

    def run_sql(statement: str) -> None:
        engine(
            "run", "--rm", "--network=host", *engine.run_flags,
            engine.image, "python3", "-c", sql, sqlalchemy_url, statement,
        )  # fmt: skip

    separator = "&" if "?" in database_url else "?"
    env = {
        "OCRSERVE_DATABASE_URL": f"{database_url}{separator}options=-csearch_path%3D{schema}",
        "OCRSERVE_BROKER_URL": broker_url,
        "OCRSERVE_TASK_QUEUE": schema,
    }
    run_sql(f"CREATE SCHEMA {schema}")
    try:
        port = free_port()
        with (
            engine.volume() as volume,
            engine.container({**env, "OCRSERVE_PORT": str(port)}, volume) as server,
        ):
            wait_ready(engine, server, port, time.monotonic())
            image = base64.b64encode(FIXTURE.read_bytes()).decode()
            status, task = http(
                "POST", f"http://127.0.0.1:{port}/ocr/async",
                json.dumps({"image_base64": image}).encode(),
                {"Content-Type": "application/json"},
            )  # fmt: skip
            expect(status == 202, f"/ocr/async in distributed mode: {status} {task}")

            name = f"ocrserve-image-test-{uuid.uuid4().hex[:8]}"
            t0 = time.monotonic()
            engine.run(name, env, volume, "ocrserve", "worker", "--burst")
            try:
                code = engine("wait", name, timeout=300)
                logs = engine.logs(name)
            finally:
                engine("rm", "--force", name, check=False)
            numbers["`worker --burst`, start to exit (one task)"] = f"{time.monotonic() - t0:.1f} s"
            if code != "0":
                print(logs, file=sys.stderr)
            expect(code == "0", f"ocrserve worker --burst exits 0 (got {code})")

            status, view = http("GET", f"http://127.0.0.1:{port}/task/{task['task_id']}")
            result = view.get("result") or {}
            text = str(result.get("text", "")) if isinstance(result, dict) else ""
            ok = view.get("status") == "succeeded" and EXPECTED in text
            expect(ok, f"the worker ran the task: {view.get('status')} {text!r}")
            engine("stop", f"--time={STOP_LIMIT_S}", server, timeout=STOP_LIMIT_S + 30)
    finally:
        run_sql(f"DROP SCHEMA {schema} CASCADE")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image", default="ocrserve:latest")
    parser.add_argument("--engine", default=os.environ.get("ENGINE", "podman"))
    parser.add_argument(
        "--run-flags",
        default=os.environ.get("CONTAINER_RUN_FLAGS", DEFAULT_RUN_FLAGS),
        help=f"extra flags of every `run` (default: {DEFAULT_RUN_FLAGS})",
    )
    parser.add_argument("--database-url", default=os.environ.get("IMAGE_TEST_DATABASE_URL"))
    parser.add_argument("--broker-url", default=os.environ.get("IMAGE_TEST_BROKER_URL"))
    args = parser.parse_args()
    engine = Engine(args.engine, args.image, shlex.split(args.run_flags))

    numbers: dict[str, str] = {}
    size = int(engine("image", "inspect", "--format={{.Size}}", args.image))
    numbers["image size, uncompressed"] = f"{size / 1e6:.0f} MB"
    try:
        check_serve(engine, numbers)
        if args.database_url and args.broker_url:
            check_worker(engine, args.database_url, args.broker_url, numbers)
        else:
            print("skipped: the worker variant (give --database-url and --broker-url)")
    except CheckFailed as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    finally:
        print(f"\n| {args.image} | |\n|---|---|")
        for what, value in numbers.items():
            print(f"| {what} | {value} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
