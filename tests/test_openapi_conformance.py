"""The OpenAPI document matches the service: a schema-based fuzzer (schemathesis) sends
generated requests to every operation of the in-process app and checks each answer against
the document (status codes, content types, headers, bodies) and for server errors.

Bounded: a few examples per operation, so the file runs in well under two minutes. Generated
documents are mostly not images: their 415/422 answers are conformant when declared.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode, Response, checks
from schemathesis.core.result import Err
from schemathesis.python import asgi as schemathesis_asgi

from ocrserve import Engine, Settings
from ocrserve.api import create_app

FIXTURES = Path(__file__).parent / "fixtures"

ADMIN_KEY = "admin-conformance-key"

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]


@pytest.fixture(scope="module")
def api_schema(
    engine: Engine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[schemathesis.BaseSchema]:
    data: Path = tmp_path_factory.mktemp("conformance-data")
    # Keys off (the client routes are open); an admin key, sent with every case, so that the
    # admin routes are exercised rather than answering 404 to everything.
    app = create_app(Settings(data_dir=data, admin_key=ADMIN_KEY), engine=engine)
    # schemathesis runs the app's lifespan itself, on its own event loop thread, at the first
    # request; it is stopped here so the task workers and the data folder's lock are released.
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    schemathesis_asgi.shutdown_lifespans()


def test_openapi_conformance(api_schema: schemathesis.BaseSchema) -> None:
    """Every operation, valid and invalid generated requests: no failure anywhere. (One test
    that walks the operations: schemathesis's pytest loader, ``from_fixture``, does not run
    under pytest 9.)"""
    failures: list[str] = []
    for result in api_schema.get_all_operations():
        if isinstance(result, Err):  # an operation the document describes wrongly
            failures.append(str(result.err()))
            continue
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=15,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def run(case: schemathesis.Case[Any]) -> None:
                case.call_and_validate(headers={"X-API-Key": ADMIN_KEY}, checks=CHECKS)

            try:
                run()
            except Unsatisfiable:
                # Nothing to break: no body, and path parameters that are any string (a
                # negative case must violate the document; none exists), so nothing to send.
                assert mode is GenerationMode.NEGATIVE, operation.label
            except (Exception, BaseExceptionGroup) as e:  # all reported at the end
                failures.append(f"{operation.label} ({mode.value}): {e}")
    assert not failures, "\n\n".join(failures)


def test_a_task_s_life_matches_the_document(api_schema: schemathesis.BaseSchema) -> None:
    """What the fuzzer cannot reach (its task ids never exist): a task submitted, submitted
    again with its key, read until done, purged; each answer validated against the document."""
    headers = {"X-API-Key": ADMIN_KEY}
    image = (FIXTURES / "en_line_long_text.jpg").read_bytes()
    submit = api_schema["/ocr/async"]["POST"]

    def send(key: str, body: dict[str, Any]) -> Response:
        case = submit.Case(
            body=body, media_type="multipart/form-data", headers={"Idempotency-Key": key}
        )
        return case.call_and_validate(headers=headers, checks=CHECKS)

    first = send("conformance-1", {"image": image})
    assert first.status_code == 202, first.text
    task_id = first.json()["task_id"]
    assert send("conformance-1", {"image": image}).status_code == 202  # replayed
    assert send("conformance-1", {"image": image, "metadata": '{"n": 2}'}).status_code == 409

    status = api_schema["/v1/task/{task_id}"]["GET"].Case(path_parameters={"task_id": task_id})
    deadline = time.monotonic() + 120
    while (read := status.call_and_validate(headers=headers, checks=CHECKS)).json()[
        "status"
    ] not in ("succeeded", "partial_success", "failed", "cancelled"):
        assert "retry-after" in read.headers
        assert time.monotonic() < deadline, read.json()
        time.sleep(0.2)

    purge = api_schema["/tasks/{task_id}"]["DELETE"].Case(path_parameters={"task_id": task_id})
    assert purge.call_and_validate(headers=headers, checks=CHECKS).status_code == 204
    assert purge.call_and_validate(headers=headers, checks=CHECKS).status_code == 404


def test_a_405_names_every_method_of_the_path(api_schema: schemathesis.BaseSchema) -> None:
    """``/task/{id}`` is served by two routes (GET, DELETE): ``Allow`` names both."""
    app = api_schema["/health"]["GET"].app
    client = schemathesis_asgi.get_client(app)
    for path in ("/task/abc", "/v1/tasks/abc"):
        answer = client.put(path)
        assert answer.status_code == 405
        assert set(answer.headers["allow"].split(", ")) == {"GET", "DELETE"}
        assert answer.json()["error"]["code"] == "method_not_allowed"
