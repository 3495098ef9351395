"""Signing and verifying callbacks by the Standard Webhooks scheme.

Headers: ``webhook-id`` (stable per task event: the receiver's idempotency key),
``webhook-timestamp`` (Unix seconds) and ``webhook-signature: v1,<base64 HMAC-SHA256 of
"{id}.{timestamp}.{body}">``. Secrets look like ``whsec_<base64 key>``.

Receivers call :func:`verify`::

    from ocrserve.webhooks import verify, WebhookVerificationError

    @app.post("/ocr-webhook")
    async def hook(request: Request):
        body = await request.body()
        try:
            event = verify(body, request.headers, secret="whsec_...")
        except WebhookVerificationError:
            return Response(status_code=400)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping
from typing import Any

from ocrserve.errors import OCRServeError

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
SECRET_PREFIX = "whsec_"


class WebhookVerificationError(OCRServeError):
    """The request is not a fresh callback signed with the shared secret."""

    code = "invalid_signature"


def generate_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _key(secret: str) -> bytes:
    raw = secret.removeprefix(SECRET_PREFIX)
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ValueError("a webhook secret is 'whsec_' followed by base64") from e


def sign(msg_id: str, timestamp: int, body: bytes, secret: str) -> str:
    """The ``webhook-signature`` header value for one message."""
    payload = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), payload, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers_for(msg_id: str, body: bytes, secret: str, now: int | None = None) -> dict[str, str]:
    timestamp = int(time.time()) if now is None else now
    return {
        ID_HEADER: msg_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(msg_id, timestamp, body, secret),
        "content-type": "application/json",
    }


def verify(
    body: bytes | str,
    headers: Mapping[str, str],
    secret: str,
    tolerance: int = 300,
    *,
    now: float | None = None,
) -> dict[str, Any]:
    """Check a callback's signature and age; return its JSON payload.

    Raises :class:`WebhookVerificationError` when a header is missing, the timestamp is more
    than ``tolerance`` seconds away from now (a replayed message), or no signature matches.

    >>> event = verify(body, request.headers, "whsec_...")  # doctest: +SKIP
    >>> event["task_id"], event["status"]                    # doctest: +SKIP
    """
    raw = body.encode() if isinstance(body, str) else body
    lower = {k.lower(): v for k, v in headers.items()}
    msg_id, stamp, signatures = (
        lower.get(ID_HEADER),
        lower.get(TIMESTAMP_HEADER),
        lower.get(SIGNATURE_HEADER),
    )
    if not msg_id or not stamp or not signatures:
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or signature")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise WebhookVerificationError(f"invalid webhook-timestamp {stamp!r}") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise WebhookVerificationError(
            f"webhook-timestamp is {current - timestamp:+.0f} s from now, "
            f"outside the tolerance of {tolerance} s"
        )
    expected = sign(msg_id, timestamp, raw, secret).partition(",")[2]
    for candidate in signatures.split():
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            try:
                event: dict[str, Any] = json.loads(raw)
            except ValueError:
                raise WebhookVerificationError("the signed body is not JSON") from None
            return event
    raise WebhookVerificationError("no webhook-signature matches the body")
