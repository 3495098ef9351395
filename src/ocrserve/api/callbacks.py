"""The callback the server sends, declared for the OpenAPI document (its ``webhooks``).

Nothing here sends anything (that is :mod:`ocrserve.jobs.delivery`); it tells a receiver's
author, in ``/openapi.json`` and ``/docs``, what will arrive: the signed headers and the
:class:`~ocrserve.schemas.TaskEvent` body.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Response

from ocrserve.schemas import TaskEvent
from ocrserve.webhooks import ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER

#: The event's name in the OpenAPI document.
TASK_FINISHED = "ocr-task-finished"


def declare_callbacks(webhooks: APIRouter) -> None:
    """Add the callbacks to an app's webhooks: ``declare_callbacks(app.webhooks)``."""

    @webhooks.post(
        TASK_FINISHED,
        summary="A task finished: sent to its callback_url",
        operation_id="ocr_task_finished",
        response_class=Response,
        responses={
            200: {"description": "Any 2xx: delivered, never sent again."},
            429: {"description": "Retried, no sooner than its Retry-After."},
            "5XX": {"description": "Retried (1 s, 5 s, 15 s), as are timeouts and refusals."},
            "4XX": {"description": "Any other 4xx: no retry, a dead letter at once."},
        },
    )
    def ocr_task_finished(
        event: TaskEvent,
        webhook_id: Annotated[
            str,
            Header(
                alias=ID_HEADER,
                description="The same for every delivery of one event: deduplicate by it.",
            ),
        ],
        webhook_timestamp: Annotated[
            str, Header(alias=TIMESTAMP_HEADER, description="Unix seconds, when it was signed.")
        ],
        webhook_signature: Annotated[
            str,
            Header(
                alias=SIGNATURE_HEADER,
                description="v1,<base64 HMAC-SHA256 of '{id}.{timestamp}.{body}'>, keyed with "
                "OCRSERVE_WEBHOOK_SECRET (Standard Webhooks): check it with "
                "ocrserve.webhooks.verify(body, headers, secret).",
            ),
        ],
    ) -> None:
        """A task submitted with a ``callback_url`` has finished (``succeeded``,
        ``partial_success`` or ``failed``). The body has the task's id, status, metadata and
        error, and the result's fields at the top level: the same values as ``GET /task``'s
        ``result`` (empty, with ``error`` set, when the task failed)."""
