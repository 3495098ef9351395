"""Redacting URLs for display: no userinfo, no query string, whatever the URL looks like."""

from __future__ import annotations

import pytest

from ocrserve.urls import UNPARSEABLE, redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "https://user:pw@hooks.example:8443/hook?token=SECRET#frag",
            "https://hooks.example:8443/hook",
        ),
        ("https://hooks.example/a/b", "https://hooks.example/a/b"),
        ("http://a:b@c@evil.example/x?X-Amz-Signature=SECRET", "http://evil.example/x"),
        ("http://[::1]:8080/h?k=SECRET", "http://[::1]:8080/h"),
        ("user:pw@host/x", UNPARSEABLE),
        ("http://h:99999/?token=SECRET", UNPARSEABLE),
        ("http://[::1/?token=SECRET", UNPARSEABLE),
        ("", UNPARSEABLE),
    ],
)
def test_redact_url_keeps_scheme_host_port_and_path_only(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "SECRET" not in redact_url(url) and "pw" not in redact_url(url)
