"""Hostile requests against the warehouse service: each must get a clear answer and leave it healthy."""

from __future__ import annotations

import gzip
import socket
import threading
import time
import urllib.request
import uuid
from urllib.parse import quote

import pytest

pytestmark = pytest.mark.integration


def raw(port: int, data: bytes, timeout: float = 10.0, trickle: float = 0.0) -> bytes:
    """Send `data` (byte by byte, `trickle` s apart, if set) and read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        if trickle:
            for i in range(len(data)):
                try:
                    sock.sendall(data[i : i + 1])
                except OSError:
                    break
                time.sleep(trickle)
        else:
            sock.sendall(data)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
        return out


def head_of(reply: bytes) -> str:
    return reply.split(b"\r\n\r\n", 1)[0].decode("utf-8")


def assert_healthy(port: int) -> None:
    base = f"http://127.0.0.1:{port}"
    assert urllib.request.urlopen(f"{base}/ping", timeout=10).read() == b"Ok.\n"
    assert urllib.request.urlopen(f"{base}/?query=SELECT%2042", timeout=10).read() == b"42\n"


def post(port: int, body: bytes, headers: str = "", target: str = "/") -> bytes:
    return (
        f"POST {target} HTTP/1.1\r\nHost: x\r\n{headers}".encode()
        + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
        + body
    )


def test_a_query_id_cannot_forge_headers_and_may_be_any_printable_text(warehouse_service):
    port = warehouse_service.port
    forged = raw(port, post(port, b"SELECT 1", target="/?query_id=%0d%0aX-Evil:%201"))
    assert head_of(forged).startswith("HTTP/1.1 400")
    assert "X-Evil" not in head_of(forged)
    assert b"Code: 36." in forged and b"Invalid query_id" in forged
    # Non-Latin-1 text used to crash the header writer: no response at all.
    unicode_id = raw(port, post(port, b"SELECT 1", target="/?query_id=%E2%9C%93"))
    assert head_of(unicode_id).startswith("HTTP/1.1 200")
    assert "X-ClickHouse-Query-Id: \u2713" in head_of(unicode_id)
    assert_healthy(port)


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: -5\r\n\r\nSELECT 1",
        b"Content-Length: +8\r\n\r\nSELECT 1",
        b"Content-Length: 8\r\nContent-Length: 9\r\n\r\nSELECT 1",
        b"Transfer-Encoding: chunked\r\n\r\n-5\r\nSELECT 1\r\n0\r\n\r\n",
        b"Transfer-Encoding: chunked\r\n\r\n0x8\r\nSELECT 1\r\n0\r\n\r\n",
        b"Transfer-Encoding: chunked\r\n\r\n3\r\nSELECT 1\r\n0\r\n\r\n",
    ],
)
def test_bad_body_framing_is_refused_and_the_connection_closed(warehouse_service, framing):
    port = warehouse_service.port
    # Bytes after a misread body were parsed as a second request on the same connection.
    reply = raw(port, b"POST / HTTP/1.1\r\nHost: x\r\n" + framing)
    assert reply.count(b"HTTP/1.1 ") == 1
    assert head_of(reply).startswith("HTTP/1.1 400")
    assert "Connection: close" in head_of(reply)
    assert b"(CANNOT_PARSE_TEXT)" in reply
    assert_healthy(port)


def test_a_body_that_lies_about_gzip_gets_a_decompression_error(warehouse_service):
    port = warehouse_service.port
    reply = raw(port, post(port, b"SELECT 1", "Content-Encoding: gzip\r\n"))
    assert b"X-ClickHouse-Exception-Code: 271" in reply
    assert b"not valid gzip data" in reply
    bomb = gzip.compress(b"SELECT 1 " + b" " * (200 << 20))
    reply = raw(port, post(port, bomb, "Content-Encoding: gzip\r\n"), timeout=60)
    assert b"(QUERY_IS_TOO_LARGE)" in reply
    assert_healthy(port)


def test_a_stalled_or_trickling_body_times_out_with_408(warehouse_service_auth):
    port = warehouse_service_auth.port  # its per-request limit is 2 s
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(
            b"POST /?user=analyst&password=s3cret-pass HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: 100\r\n\r\nSELECT 1"
        )
        reply = sock.recv(65536)
    assert time.monotonic() - started < 10
    assert head_of(reply).startswith("HTTP/1.1 408")
    assert b"while receiving the request body" in reply
    started = time.monotonic()
    body = b"SELECT 1 " + b" " * 40
    trickled = raw(
        port,
        post(port, body, target="/?user=analyst&password=s3cret-pass"),
        timeout=30,
        trickle=0.1,
    )
    assert time.monotonic() - started < 25
    assert b"(TIMEOUT_EXCEEDED)" in trickled
    base = f"http://127.0.0.1:{port}/?user=analyst&password=s3cret-pass&query=SELECT%201"
    assert urllib.request.urlopen(base, timeout=10).read() == b"1\n"


def test_a_burst_beyond_the_concurrency_limit_queues_instead_of_failing(warehouse_service):
    port = warehouse_service.port
    url = f"http://127.0.0.1:{port}/?query=" + quote("SELECT sleep(1)")
    failures: list[str] = []

    def one() -> None:
        try:
            urllib.request.urlopen(url, timeout=60).read()
        except Exception as exc:
            failures.append(repr(exc))

    threads = [threading.Thread(target=one) for _ in range(200)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert_healthy(port)


def test_kill_query_by_the_clients_query_id_cancels_it(warehouse_service):
    port = warehouse_service.port
    query_id = f"long-{uuid.uuid4().hex[:8]}"
    result: dict[str, bytes] = {}

    def long() -> None:
        sql = quote("SELECT sleep(1) FROM numbers(30) SETTINGS max_block_size = 1")
        result["reply"] = raw(
            port,
            f"GET /?query={sql}&query_id={query_id} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(),
            timeout=60,
        )

    thread = threading.Thread(target=long)
    thread.start()
    time.sleep(1.0)
    started = time.monotonic()
    kill = raw(port, post(port, f"KILL QUERY WHERE query_id = '{query_id}' SYNC".encode()))
    thread.join(30)
    assert time.monotonic() - started < 10
    assert kill.split(b"\r\n\r\n", 1)[1] == f"finished\t{query_id}\tdefault\t\n".encode()
    assert b"QUERY_WAS_CANCELLED" in result["reply"]
    assert_healthy(port)


def test_system_shutdown_cannot_stop_the_shared_service(warehouse_service):
    port = warehouse_service.port
    for statement in (b"SYSTEM SHUTDOWN", b"system kill"):
        reply = raw(port, post(port, statement))
        assert head_of(reply).startswith("HTTP/1.1 403")
        assert b"atlasmesh warehouse stop" in reply
    assert_healthy(port)
