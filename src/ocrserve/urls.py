"""URLs as they may be shown: in logs, error messages and the admin's dead-letter list.

Callback and ``image_url`` URLs often carry credentials: ``https://user:pw@host/hook`` or a
presigned ``?token=...``/``?X-Amz-Signature=...``. Whatever prints a URL a client gave prints
:func:`redact_url` of it.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

#: What a URL that cannot be parsed, or has no host, is shown as: its text may be anything,
#: secrets included (``user:pw@host`` without ``//`` parses as a scheme and a path).
UNPARSEABLE = "<unparseable URL>"


def redact_url(url: str) -> str:
    """``url`` without its userinfo, query string and fragment: scheme, host, port and path.

    >>> redact_url("https://user:pw@hooks.example:8443/hook?token=SECRET#x")
    'https://hooks.example:8443/hook'
    """
    try:
        parts = urlsplit(url)
        _ = parts.port  # a port that is no number, or out of range, raises ValueError
    except ValueError:
        return UNPARSEABLE
    if not parts.netloc:
        return UNPARSEABLE
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))
