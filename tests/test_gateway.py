"""The production stack of deploy/: its gateway for real, its compose file validated.

The gateway is Debian's nginx running deploy/nginx/nginx.conf, the file compose mounts, with
its ``${GATEWAY_...}`` names filled in as the nginx image's envsubst step does (loopback
ports, a certificate made here, temporary paths), in front of two real ``ocrserve serve``
processes (one lane each) that trust it as compose's nodes trust the gateway's network.
Every client connects from its own loopback address (127.0.0.x), so per-client limits at the
gateway and at the nodes can be told apart. ``make gateway-deps`` installs nginx and
docker-compose.
"""

from __future__ import annotations

import base64
import io
import ipaddress
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from PIL import Image

from .conftest import FIXTURES, free_port, start_serve

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
TEMPLATE = DEPLOY / "nginx" / "nginx.conf"
COMPOSE = DEPLOY / "compose.yaml"
ENV_EXAMPLE = DEPLOY / ".env.example"
#: Words of tests/fixtures/en_line_long_text.jpg (a Chinese line, despite the name).
OCR_TEXT = "采用高端宝石制作镜片"
#: The nodes' own per-address limit here: low, so that a few requests show whose bucket paid.
NODE_BURST = 3
#: The gateway's limit, as deploy/nginx/nginx.conf sets it.
GATEWAY_BURST = 20
#: nginx's $request_id: what the gateway makes when a client sends no usable X-Request-ID.
MADE_ID = re.compile(r"[0-9a-f]{32}")
PLACEHOLDER = re.compile(r"\$\{(GATEWAY_[A-Z0-9_]+)\}")

NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
DOCKER_COMPOSE = shutil.which("docker-compose")
# On the PATH, or beside the interpreter (make prometheus-deps puts it in the virtualenv).
PROMTOOL = shutil.which("promtool") or shutil.which("promtool", path=Path(sys.executable).parent)
needs_nginx = pytest.mark.skipif(
    NGINX is None and not os.environ.get("CI"), reason="needs nginx: make gateway-deps"
)
needs_compose = pytest.mark.skipif(
    DOCKER_COMPOSE is None and not os.environ.get("CI"),
    reason="needs docker-compose: make gateway-deps",
)


def render(template: str, values: dict[str, str]) -> str:
    """What the nginx image does with NGINX_ENVSUBST_FILTER=^GATEWAY_: each ``${GATEWAY_X}``
    replaced by its value; nginx's own ``$variables`` left alone."""
    assert set(PLACEHOLDER.findall(template)) == set(values)
    return PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate it signs for 127.0.0.1: (ca, cert, key)."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl("req", "-x509", *ec, "-days", "2", "-subj", "/CN=ocrserve test CA",
            "-keyout", "ca.key", "-out", "ca.crt")  # fmt: skip
    openssl("req", *ec, "-subj", "/CN=localhost", "-keyout", "tls.key", "-out", "tls.csr")
    (folder / "server.ext").write_text(
        "subjectAltName = IP:127.0.0.1, DNS:localhost\n"
        "basicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature\n"
        "extendedKeyUsage = serverAuth\n"
        "subjectKeyIdentifier = hash\n"
        "authorityKeyIdentifier = keyid\n"
    )
    ca = ["-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial"]
    openssl("x509", "-req", "-in", "tls.csr", *ca, "-days", "2", "-extfile", "server.ext",
            "-out", "tls.crt")  # fmt: skip
    return folder / "ca.crt", folder / "tls.crt", folder / "tls.key"


@dataclass
class Gateway:
    url: str
    tls: ssl.SSLContext
    node_ports: list[int]
    node_logs: list[Path]
    access_log: Path

    def client(self, address: str, **kwargs: Any) -> httpx.Client:
        """A client connecting from ``address`` (a loopback address of its own)."""
        transport = httpx.HTTPTransport(verify=self.tls, local_address=address)
        return httpx.Client(base_url=self.url, transport=transport, timeout=60, **kwargs)

    def nodes_logged(self, text: str, timeout: float = 5.0) -> list[bool]:
        """Whether each node's log has ``text`` (waiting a little: log lines follow answers)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [text in log.read_text() for log in self.node_logs]
            if any(found) or time.monotonic() > deadline:
                return found
            time.sleep(0.1)

    def access(self, request_id: str, timeout: float = 5.0) -> dict[str, Any]:
        """The gateway's access log line of a request (written when the connection is done
        with it: after a refused body has been read to its end)."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.access_log.read_text().splitlines():
                entry: dict[str, Any] = json.loads(line)
                if entry["request_id"] == request_id:
                    return entry
            assert time.monotonic() < deadline, f"no access log line for {request_id}"
            time.sleep(0.1)


def node_env(data: Path) -> dict[str, str]:
    return os.environ | {
        "OCRSERVE_DATA_DIR": str(data),
        # The gateway's address, as compose's nodes trust the gateway's network.
        "OCRSERVE_TRUSTED_PROXIES": "127.0.0.1",
        "OCRSERVE_LANES": "1",
        "OCRSERVE_INTRA_OP_THREADS": "1",
        "OCRSERVE_RATE_LIMIT_RPS": "0.01",  # no token comes back during the test
        "OCRSERVE_RATE_LIMIT_BURST": str(NODE_BURST),
        "OCRSERVE_LOG_JSON": "true",
    }


def run_nginx(nginx: str, state: Path, conf: Path) -> subprocess.Popen[bytes]:
    base = [nginx, "-p", str(state), "-c", str(conf), "-e", str(state / "error.log")]
    check = subprocess.run([*base, "-t"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    with (state / "nginx.out").open("ab") as out:
        return subprocess.Popen([*base, "-g", "daemon off;"], stdout=out, stderr=out)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    assert NGINX is not None, "nginx is not installed: make gateway-deps"
    home = tmp_path_factory.mktemp("gateway")
    with ExitStack() as stack:
        # Started by root, nginx's workers run as an unprivileged user: they write request
        # bodies under the state folder, which must not sit below pytest's private (0700) one.
        state = Path(tempfile.mkdtemp(prefix="ocrserve-gateway-"))
        stack.callback(shutil.rmtree, state, ignore_errors=True)
        state.chmod(0o755)
        ca, cert, key = make_certificates(state)

        ports = [free_port(), free_port()]
        logs = [home / f"node-{n}.log" for n in (1, 2)]
        with ThreadPoolExecutor(2) as pool:  # both load their models at once
            starting = [
                pool.submit(start_serve, node_env(home / f"data-{n}"), port, log)
                for n, (port, log) in enumerate(zip(ports, logs, strict=True), 1)
            ]
            for future in starting:
                if future.exception() is None:
                    node = future.result()
                    stack.callback(node.wait, 60)
                    stack.callback(node.terminate)
            for future in starting:
                future.result()  # the first failure, once the other node is in the stack

        https, health = free_port(), free_port()
        conf = state / "nginx.conf"
        values = {
            "GATEWAY_LISTEN_HTTPS": f"127.0.0.1:{https}",
            "GATEWAY_LISTEN_HEALTH": f"127.0.0.1:{health}",
            "GATEWAY_API_1": f"127.0.0.1:{ports[0]}",
            "GATEWAY_API_2": f"127.0.0.1:{ports[1]}",
            "GATEWAY_TLS_CERT": str(cert),
            "GATEWAY_TLS_KEY": str(key),
            "GATEWAY_STATE_DIR": str(state),
            "GATEWAY_ACCESS_LOG": str(state / "access.log"),
            "GATEWAY_ERROR_LOG": str(state / "error.log"),
        }
        conf.write_text(render(TEMPLATE.read_text(), values))
        proc = run_nginx(NGINX, state, conf)
        stack.callback(proc.wait, 30)
        stack.callback(proc.terminate)
        deadline = time.monotonic() + 30
        while True:  # the health listener is the compose health check's
            try:
                if httpx.get(f"http://127.0.0.1:{health}/gateway-health").text == "ok\n":
                    break
            except httpx.TransportError:
                pass
            errors = (state / "error.log").read_text()
            assert proc.poll() is None and time.monotonic() < deadline, errors
            time.sleep(0.1)

        yield Gateway(
            url=f"https://127.0.0.1:{https}",
            tls=ssl.create_default_context(cafile=str(ca)),
            node_ports=ports,
            node_logs=logs,
            access_log=state / "access.log",
        )


# --- the gateway, for real ---------------------------------------------------------------------


@needs_nginx
def test_tls_and_a_real_ocr_through_the_gateway(gateway: Gateway) -> None:
    with gateway.client("127.0.0.2") as client:
        health = client.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert health.headers["strict-transport-security"] == "max-age=31536000"
        image = (FIXTURES / "en_line_long_text.jpg").read_bytes()
        r = client.post("/ocr", files={"image": ("line.jpg", image, "image/jpeg")})
        assert r.status_code == 200, r.text
        assert OCR_TEXT in r.json()["text"]
        # Metrics are for Prometheus on the internal network, not through the gateway.
        assert client.get("/metrics").status_code == 404
        assert client.get("/v1/metrics").status_code == 404
    assert httpx.get(f"http://127.0.0.1:{gateway.node_ports[0]}/metrics").status_code == 200
    # A client that does not trust the test CA refuses the certificate.
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{gateway.url}/health")


@needs_nginx
def test_an_oversize_upload_is_refused_by_the_gateway(gateway: Gateway) -> None:
    rid = f"oversize-{uuid.uuid4().hex}"
    body = bytes(100 * 1024 * 1024 + 1)  # over the gateway's 100 MiB, under a node's 200 MiB
    with gateway.client("127.0.0.3") as client:
        r = client.post("/ocr", content=body, headers={"X-Request-ID": rid})
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "gateway_body_too_large"
    assert r.headers["x-request-id"] == rid
    entry = gateway.access(rid)
    assert entry["status"] == 413 and entry["upstream"] == ""  # no node was asked
    assert gateway.nodes_logged(rid, timeout=1.0) == [False, False]


@needs_nginx
def test_a_burst_from_one_client_gets_429_with_retry_after(gateway: Gateway) -> None:
    with gateway.client("127.0.0.4") as client:
        answers = [client.get("/health") for _ in range(3 * GATEWAY_BURST)]
        statuses = [r.status_code for r in answers]
        # The burst is served at once, then what the rate refills (10/s) and no more.
        assert statuses[: GATEWAY_BURST + 1] == [200] * (GATEWAY_BURST + 1), statuses
        assert set(statuses) == {200, 429}, statuses
        refused = next(r for r in answers if r.status_code == 429)
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "gateway_rate_limited"
        assert MADE_ID.fullmatch(refused.headers["x-request-id"])
        assert gateway.access(refused.headers["x-request-id"])["upstream"] == ""
        # Retry-After is the gateway's on its own 429 only.
        assert "retry-after" not in answers[0].headers
    with gateway.client("127.0.0.5") as other:  # another address has its own bucket
        assert other.get("/health").status_code == 200


@needs_nginx
def test_the_request_id_passes_through(gateway: Gateway) -> None:
    with gateway.client("127.0.0.6") as client:
        rid = f"client-{uuid.uuid4().hex}"
        r = client.get("/health", headers={"X-Request-ID": rid})
        assert r.status_code == 200
        assert r.headers.get_list("x-request-id") == [rid]  # one, not the node's and ours
        assert any(gateway.nodes_logged(f'"request_id": "{rid}"'))

        made = client.get("/health").headers["x-request-id"]
        assert MADE_ID.fullmatch(made)
        assert any(gateway.nodes_logged(f'"request_id": "{made}"'))

        # An id that is no plain token (it would land in every log line) is replaced.
        r = client.get("/health", headers={"X-Request-ID": 'a b" {}' + "x" * 200})
        assert MADE_ID.fullmatch(r.headers["x-request-id"])


@needs_nginx
def test_the_nodes_see_the_client_and_the_scheme(gateway: Gateway) -> None:
    missing = f"/task/{uuid.uuid4().hex}"
    with gateway.client("127.0.0.7") as client:
        answers = [client.get(missing) for _ in range(2 * NODE_BURST + 3)]
    # Each node's bucket for 127.0.0.7 empties after NODE_BURST: the nodes' own 429.
    assert [r.status_code for r in answers].count(404) <= 2 * NODE_BURST
    refused = answers[-1]
    assert refused.status_code == 429, [r.status_code for r in answers]
    assert refused.json()["error"]["code"] == "rate_limited"  # a node's, not the gateway's
    assert int(refused.headers["retry-after"]) > 1
    # Had the nodes seen the gateway's address, every client would share that bucket.
    with gateway.client("127.0.0.8") as other:
        assert other.get(missing).status_code == 404
    # What a client writes in X-Forwarded-For is not taken for its address.
    with gateway.client("127.0.0.7", headers={"X-Forwarded-For": "203.0.113.9"}) as spoofer:
        assert spoofer.get(missing).status_code == 429

    # X-Forwarded-Proto: links the nodes make say https, with the gateway's host and port.
    white = io.BytesIO()
    Image.new("RGB", (64, 64), "white").save(white, format="PNG")
    with gateway.client("127.0.0.9") as client:
        r = client.post(
            "/ocr/async", json={"image_base64": base64.b64encode(white.getvalue()).decode()}
        )
    assert r.status_code == 202, r.text
    assert r.json()["status_url"].startswith(f"{gateway.url}/task/")
    assert r.headers["location"] == r.json()["status_url"]


@needs_nginx
def test_requests_are_spread_over_both_nodes(gateway: Gateway) -> None:
    ids = [f"spread-{n}-{uuid.uuid4().hex}" for n in range(8)]
    with gateway.client("127.0.0.10") as client:
        for rid in ids:
            assert client.get("/health", headers={"X-Request-ID": rid}).status_code == 200
    upstreams = {gateway.access(rid)["upstream"] for rid in ids}
    assert upstreams == {f"127.0.0.1:{port}" for port in gateway.node_ports}
    time.sleep(0.5)  # the nodes' log lines follow their answers
    served = [sum(rid in log.read_text() for rid in ids) for log in gateway.node_logs]
    assert sum(served) == len(ids) and min(served) >= 2, served


# --- the compose file ----------------------------------------------------------------------------


def compose_config(env_file: Path, **env: str) -> subprocess.CompletedProcess[str]:
    assert DOCKER_COMPOSE is not None, "docker-compose is not installed: make gateway-deps"
    return subprocess.run(
        [DOCKER_COMPOSE, "--env-file", str(env_file), "-f", str(COMPOSE), "config"],
        capture_output=True,
        text=True,
        # Only the env file speaks: a variable of the same name in the environment would win.
        env={k: v for k, v in os.environ.items() if k not in _env_names()} | env,
    )


def _env_names() -> set[str]:
    return {
        line.partition("=")[0]
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    }


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    """deploy/compose.yaml as docker-compose resolves it with deploy/.env.example."""
    done = compose_config(ENV_EXAMPLE)
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = yaml.safe_load(done.stdout)
    return config


@needs_compose
def test_the_compose_file_is_valid_and_complete(stack: dict[str, Any]) -> None:
    services = stack["services"]
    assert set(services) == {
        "gateway", "api-1", "api-2", "worker", "postgres", "rabbitmq", "redis",
        "prometheus", "grafana",
    }  # fmt: skip
    for name, service in services.items():
        assert service["restart"] == "unless-stopped", name
        assert service["healthcheck"]["test"], name
        for dependency, how in service.get("depends_on", {}).items():
            assert how == {"condition": "service_healthy"}, (name, dependency)
    for name in ("gateway", "api-1", "api-2", "worker"):
        assert services[name]["stop_grace_period"] == "30s", name

    image = "ocrserve:latest"
    for name in ("api-1", "api-2"):
        api = services[name]
        assert api["image"] == image and api["command"] == ["ocrserve", "serve"]
        assert api["environment"]["OCRSERVE_HOST"] == "0.0.0.0"
        assert f"{name}-data:/data:rw" in api["volumes"]
        assert json.loads(api["environment"]["OCRSERVE_API_KEYS"])  # .env's quoting survives
        assert "ports" not in api  # reached through the gateway only
    worker = services["worker"]
    assert worker["image"] == image and worker["command"] == ["ocrserve", "worker"]
    assert worker["deploy"]["replicas"] == 2
    assert worker["environment"]["OCRSERVE_WEBHOOK_SECRET"].startswith("whsec_")

    # Only the gateway is published on every interface; the consoles on loopback.
    published = {n: [_port(p) for p in s["ports"]] for n, s in services.items() if "ports" in s}
    assert published == {
        "gateway": ["443:443"],
        "prometheus": ["127.0.0.1:9090:9090"],
        "grafana": ["127.0.0.1:3000:3000"],
    }
    # Every file the stack mounts is in deploy/ (the certificate is the operator's).
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("/") and not source.endswith("/certs"):
                assert Path(source).exists(), (name, source)


def _port(entry: str | dict[str, Any]) -> str:
    """A published port as ``[address:]published:target``, whichever way compose wrote it."""
    if isinstance(entry, dict):
        address = f"{entry['host_ip']}:" if entry.get("host_ip") else ""
        return f"{address}{entry['published']}:{entry['target']}"
    return entry.removesuffix("/tcp")


@needs_compose
def test_a_missing_secret_stops_compose(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    lines = ENV_EXAMPLE.read_text().splitlines()
    env_file.write_text("\n".join(x for x in lines if not x.startswith("POSTGRES_PASSWORD=")))
    done = compose_config(env_file)
    assert done.returncode != 0
    assert "set POSTGRES_PASSWORD in deploy/.env" in done.stderr


@needs_compose
def test_the_gateway_runs_the_tested_config(stack: dict[str, Any]) -> None:
    services = stack["services"]
    gateway = services["gateway"]
    env = gateway["environment"]
    # The one template, rendered by the image from exactly the names this test fills in.
    assert f"{TEMPLATE}:/etc/nginx/templates/nginx.conf.template:ro" in gateway["volumes"]
    assert env["NGINX_ENVSUBST_OUTPUT_DIR"] == "/etc/nginx"
    assert env["NGINX_ENVSUBST_FILTER"] == "^GATEWAY_"
    assert {k for k in env if k.startswith("GATEWAY_")} == set(
        PLACEHOLDER.findall(TEMPLATE.read_text())
    )
    for n in (1, 2):
        host, _, port = env[f"GATEWAY_API_{n}"].partition(":")
        assert host == f"api-{n}" and port == services[host]["environment"]["OCRSERVE_PORT"]
    assert gateway["healthcheck"]["test"][-1].endswith(
        f"{env['GATEWAY_LISTEN_HEALTH']}/gateway-health"
    )
    # The nodes trust X-Forwarded-For from the gateway's network, where the gateway is.
    edge = ipaddress.ip_network(stack["networks"]["edge"]["ipam"]["config"][0]["subnet"])
    assert ipaddress.ip_address(gateway["networks"]["edge"]["ipv4_address"]) in edge
    for name in ("api-1", "api-2"):
        assert services[name]["environment"]["OCRSERVE_TRUSTED_PROXIES"] == str(edge)
        assert set(services[name]["networks"]) == {"edge", "backend"}
    assert {n for n, s in services.items() if "edge" in s["networks"]} == {
        "gateway", "api-1", "api-2",
    }  # fmt: skip


@needs_compose
def test_prometheus_and_grafana_are_wired_to_the_stack(stack: dict[str, Any]) -> None:
    services = stack["services"]
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert prometheus["rule_files"] == ["alerts.yml"]  # deploy/prometheus/alerts.yml
    [job] = [j for j in prometheus["scrape_configs"] if j["job_name"] == "ocrserve"]
    assert job["static_configs"][0]["targets"] == [
        f"{name}:{services[name]['environment']['OCRSERVE_PORT']}" for name in ("api-1", "api-2")
    ]
    assert f"{DEPLOY / 'prometheus'}:/etc/prometheus:ro" in services["prometheus"]["volumes"]

    provisioning = DEPLOY / "grafana" / "provisioning"
    [source] = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert source["url"] == "http://prometheus:9090"
    [provider] = yaml.safe_load((provisioning / "dashboards" / "ocrserve.yml").read_text())[
        "providers"
    ]
    mounts = services["grafana"]["volumes"]
    assert f"{provisioning}:/etc/grafana/provisioning:ro" in mounts
    dashboard = DEPLOY / "grafana" / "ocrserve.json"
    assert f"{dashboard}:{provider['options']['path']}/ocrserve.json:ro" in mounts
    # The dashboard's datasource variable defaults to the provisioned source.
    variables = json.loads(dashboard.read_text())["templating"]["list"]
    [datasource] = [v for v in variables if v["type"] == "datasource"]
    assert datasource["current"]["value"] == source["uid"]


@pytest.mark.skipif(
    PROMTOOL is None and not os.environ.get("CI"), reason="needs promtool: make prometheus-deps"
)
def test_the_prometheus_config_is_valid() -> None:
    done = subprocess.run(
        [PROMTOOL or "promtool", "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
