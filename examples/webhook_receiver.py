"""A receiver for ocrserve's task callbacks: verify the signature, handle each event once.

    export OCRSERVE_WEBHOOK_SECRET=whsec_...   # the secret the server signs with
    uvicorn --factory examples.webhook_receiver:create_app --port 9000

then submit with ``callback_url="http://this-host:9000/ocr-webhook"``.

The server may deliver one event more than once (a retry after a lost answer); the
``webhook-id`` header is the same each time, so the receiver remembers the ids it has handled.
Here that memory is a set in this process: it is lost on restart and not shared between
workers. A real receiver stores the id with the work it does, in one database transaction.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from ocrserve.webhooks import ID_HEADER, WebhookVerificationError, verify

SECRET_ENV = "OCRSERVE_WEBHOOK_SECRET"
PATH = "/ocr-webhook"

log = logging.getLogger("webhook_receiver")


def handle(event: dict[str, Any]) -> None:
    """Your work goes here: store the text, notify someone, ...

    ``event`` is the ``ocr-task-finished`` body (the server's /openapi.json, "webhooks"):
    ``task_id``, ``status``, ``metadata``, ``error``, and the result's fields at the top
    level, as ``GET /task`` has them under ``result``: ``text``, ``pages``,
    ``avg_confidence``, ``page_count``, ... (empty when the task failed: see ``error``).
    """
    if event.get("error"):
        log.warning("task %s %s: %s", event.get("task_id"), event.get("status"), event["error"])
        return
    log.info(
        "task %s %s: %d page(s), confidence %.2f: %.60r",
        event.get("task_id"),
        event.get("status"),
        len(event.get("pages", [])),
        event.get("avg_confidence", 0.0),
        event.get("text", ""),
    )


def create_app(secret: str | None = None) -> FastAPI:
    """The receiver; the secret comes from ``OCRSERVE_WEBHOOK_SECRET`` unless given."""
    key = secret or os.environ[SECRET_ENV]
    app = FastAPI(title="ocrserve webhook receiver")
    seen: set[str] = set()  # in memory: see the module docstring
    app.state.processed = []  # what handle() was given, for a look (and the tests)

    @app.post(PATH)
    async def receive(request: Request) -> Response:
        body = await request.body()
        try:
            event = verify(body, request.headers, key)
        except WebhookVerificationError as e:
            return JSONResponse({"error": {"code": e.code, "message": e.message}}, 400)
        webhook_id = request.headers[ID_HEADER]
        # No await between the check and the add: two deliveries cannot both get through.
        if webhook_id in seen:
            return JSONResponse({"duplicate": True})
        seen.add(webhook_id)
        handle(event)
        app.state.processed.append(event)
        return JSONResponse({"duplicate": False})

    return app
