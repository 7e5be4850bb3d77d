"""The webhook POST against receivers that misbehave: redirects, trickles, huge bodies, 429."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from atlasmesh.alerts.delivery import Backoff, post_webhook, retry_after_seconds


class Hostile:
    """A local receiver whose answer depends on the request path; records method and path."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.stop = threading.Event()
        hostile = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for name, value in {"Content-Length": "0", **(headers or {})}.items():
                    self.send_header(name, value)
                self.end_headers()

            def do_GET(self) -> None:
                hostile.seen.append(("GET", self.path))
                self._answer(200)

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                hostile.seen.append(("POST", self.path))
                kind = self.path.strip("/").split("/")[0]
                if kind.isdigit() and 300 <= int(kind) < 400:
                    self._answer(int(kind), {"Location": "/landing"})
                elif kind == "429":
                    self._answer(429, {"Retry-After": "120"})
                elif kind == "close":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                elif kind == "huge":
                    self._answer(200, {"Content-Length": str(2 * 1024**3)})
                    self._trickle(b"x" * 65536, 0.0)
                elif kind == "trickle-body":
                    self._answer(200, {"Content-Length": "100000"})
                    self._trickle(b"x", 0.2)
                elif kind == "trickle-headers":
                    self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                    self._trickle(b"X-Slow: 1\r\n", 0.2)
                else:
                    self._answer(200)

            def _trickle(self, chunk: bytes, pause_s: float) -> None:
                try:
                    while not hostile.stop.is_set():
                        self.wfile.write(chunk)
                        self.wfile.flush()
                        time.sleep(pause_s)
                except OSError:
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hostile() -> Iterator[Hostile]:
    receiver = Hostile()
    yield receiver
    receiver.close()


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_fails_the_delivery_instead_of_dropping_the_body(hostile, status):
    # urllib turned a redirected POST into a body-less GET that "succeeded": the alert was lost.
    with pytest.raises(OSError, match=f"HTTP {status}, a redirect") as info:
        post_webhook(f"{hostile.base}/{status}/secret-token", {"text": "x"}, timeout_s=2)
    assert "secret-token" not in str(info.value)
    assert hostile.seen == [("POST", f"/{status}/secret-token")]


def test_a_receiver_trickling_its_headers_costs_the_timeout_not_forever(hostile):
    started = time.monotonic()
    with pytest.raises(OSError, match="did not answer within 1 s"):
        post_webhook(f"{hostile.base}/trickle-headers/tok", {"text": "x"}, timeout_s=1)
    assert time.monotonic() - started < 3


@pytest.mark.parametrize("kind", ["trickle-body", "huge"])
def test_an_accepting_receiver_with_an_endless_body_is_delivered_at_once(hostile, kind):
    started = time.monotonic()
    post_webhook(f"{hostile.base}/{kind}/tok", {"text": "x"}, timeout_s=5)
    assert time.monotonic() - started < 2


def test_a_closed_connection_fails_with_a_clear_reason(hostile):
    with pytest.raises(OSError, match="closed the connection without answering"):
        post_webhook(f"{hostile.base}/close/tok", {"text": "x"}, timeout_s=2)


def test_a_429_carries_the_receivers_retry_after(hostile):
    with pytest.raises(OSError, match="HTTP 429") as info:
        post_webhook(f"{hostile.base}/429/tok", {"text": "x"}, timeout_s=2)
    assert getattr(info.value, "retry_after_s", None) == 120


def test_retry_after_is_read_as_seconds_or_a_date_and_bounded_by_the_cap():
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    assert retry_after_seconds("30", now) == 30
    assert retry_after_seconds(format_datetime(now + timedelta(seconds=90), usegmt=True), now) == 90
    assert retry_after_seconds(format_datetime(now - timedelta(hours=1), usegmt=True), now) == 0
    for junk in (None, "", "soon", "nan", "inf", "-5"):
        assert retry_after_seconds(junk, now) in (None, 0)
    backoff = Backoff(base_s=15, max_s=600)
    assert backoff.after(1, None) == timedelta(seconds=15)
    assert backoff.after(1, 120) == timedelta(seconds=120)
    assert backoff.after(3, 5) == timedelta(seconds=60)  # never sooner than the backoff
    assert backoff.after(1, 86_400) == timedelta(seconds=600)  # never later than the cap
