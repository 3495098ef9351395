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
import re
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


#: The Standard Webhooks minimum: a shorter key is within reach of a brute-force search.
MIN_KEY_BYTES = 24


def generate_secret() -> str:
    """A new secret: ``whsec_`` and the base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def parse_secret(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret; ValueError, saying what is wrong, if unusable.

    The message never repeats the secret (it ends up in logs).

    >>> len(parse_secret(generate_secret()))
    32
    >>> parse_secret("whsec_")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ValueError: the webhook secret has an empty key; it must be 'whsec_' followed by the base64 ...
    >>> parse_secret("whsec_" + base64.b64encode(bytes(16)).decode())  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ValueError: the webhook secret has a key of 16 bytes; ...
    """
    if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
        problem = "does not start with 'whsec_'"
    else:
        raw = secret.removeprefix(SECRET_PREFIX)
        try:
            key = base64.b64decode(raw.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            problem = "is not base64 after 'whsec_'"
        else:
            if len(key) >= MIN_KEY_BYTES:
                return key
            problem = f"has a key of {len(key)} bytes" if key else "has an empty key"
    raise ValueError(
        f"the webhook secret {problem}; it must be 'whsec_' followed by the base64 of a random "
        f'key of at least {MIN_KEY_BYTES} bytes (make one with: python -c "from '
        'ocrserve.webhooks import generate_secret; print(generate_secret())")'
    )


def sign(msg_id: str, timestamp: int, body: bytes, secret: str) -> str:
    """The ``webhook-signature`` header value for one message; ValueError if the secret is
    unusable (:func:`parse_secret`)."""
    return "v1," + _digest(parse_secret(secret), msg_id, timestamp, body).decode()


def _digest(key: bytes, msg_id: str, timestamp: int, body: bytes) -> bytes:
    """The base64 HMAC-SHA256 of ``"{id}.{timestamp}.{body}"``."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())


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
    """Check a callback's signature and age; return its JSON payload (the event object).

    Raises :class:`WebhookVerificationError`, and nothing else, for any request that is not a
    fresh event signed with ``secret``: a header missing or not ASCII, a timestamp that is not
    Unix seconds or is more than ``tolerance`` seconds away from now (a replayed message), no
    matching signature, a body that is not a JSON object. An unusable ``secret`` is the
    receiver's own configuration, not the request's fault: ValueError (:func:`parse_secret`).

    >>> event = verify(body, request.headers, "whsec_...")  # doctest: +SKIP
    >>> event["task_id"], event["status"]                    # doctest: +SKIP
    """
    key = parse_secret(secret)
    if isinstance(body, str):
        try:
            raw = body.encode()
        except UnicodeEncodeError:  # lone surrogates: no client sent these bytes
            raise WebhookVerificationError("the body is not valid text") from None
    elif isinstance(body, bytes | bytearray | memoryview):
        raw = bytes(body)
    else:
        raise WebhookVerificationError(f"the body must be bytes or str, got {type(body).__name__}")
    msg_id, stamp, signatures = (
        _header(headers, name) for name in (ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER)
    )
    if not _TIMESTAMP.fullmatch(stamp):
        raise WebhookVerificationError(
            f"{TIMESTAMP_HEADER} must be Unix seconds, got {stamp[:32]!r}"
        )
    timestamp = int(stamp)
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise WebhookVerificationError(
            f"{TIMESTAMP_HEADER} is {current - timestamp:+.0f} s from now, "
            f"outside the tolerance of {tolerance} s"
        )
    expected = _digest(key, msg_id, timestamp, raw)
    for candidate in signatures.split():
        version, _, value = candidate.partition(",")
        # bytes, not str: compare_digest refuses non-ASCII str (and these are ASCII-checked).
        if version == "v1" and hmac.compare_digest(value.encode(), expected):
            try:
                event = json.loads(raw)
            except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
                raise WebhookVerificationError("the signed body is not JSON") from None
            if not isinstance(event, dict):
                raise WebhookVerificationError("the signed body is not a JSON object")
            return event
    raise WebhookVerificationError(f"no {SIGNATURE_HEADER} matches the body")


#: Unix seconds: ASCII digits only (int() would also take "+1_000", " 7 " or Arabic digits),
#: and few enough to stay a float without overflow.
_TIMESTAMP = re.compile(r"[0-9]{1,15}")


def _header(headers: Mapping[str, str], name: str) -> str:
    """A required ASCII header, looked up case-insensitively in any mapping."""
    try:
        value = next((v for k, v in headers.items() if str(k).lower() == name), None)
    except (AttributeError, TypeError):
        raise WebhookVerificationError("the headers are not a mapping") from None
    if not value:
        raise WebhookVerificationError(f"the {name} header is missing")
    if not isinstance(value, str) or not value.isascii():
        raise WebhookVerificationError(f"the {name} header is not ASCII text")
    return value
