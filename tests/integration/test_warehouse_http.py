"""The embedded warehouse service spoken to in raw HTTP, as curl or any ClickHouse driver would."""

from __future__ import annotations

import gzip
import http.client
import io
import json
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlencode

import lz4.block
import lz4.frame
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from clickhouse_connect.driver.transform import extract_exception_with_tag

pytestmark = pytest.mark.integration


class Reply:
    """Status, headers and (undecoded) body of one response."""

    def __init__(self, resp: http.client.HTTPResponse) -> None:
        self.status = resp.status
        self.headers = {k.lower(): v for k, v in resp.getheaders()}
        self.body = resp.read()

    @property
    def text(self) -> str:
        return self.body.decode()


def call(
    port: int,
    params: dict | None = None,
    body: bytes | Iterator[bytes] | None = None,
    headers: dict | None = None,
    method: str | None = None,
    path: str = "/",
) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    url = path + ("?" + urlencode(params) if params else "")
    hdrs = dict(headers or {})
    if body is not None and not isinstance(body, bytes):
        hdrs["Transfer-Encoding"] = "chunked"
    conn.request(
        method or ("POST" if body is not None else "GET"),
        url,
        body=body,
        headers=hdrs,
        encode_chunked=True,
    )
    try:
        return Reply(conn.getresponse())
    finally:
        conn.close()


@pytest.fixture
def port(warehouse_service) -> int:
    return warehouse_service.port


@pytest.fixture
def db(port) -> Iterator[str]:
    name = f"http_{uuid.uuid4().hex[:10]}"
    assert call(port, {"query": f"CREATE DATABASE {name}"}, b"").status == 200
    yield name
    call(port, {"query": f"DROP DATABASE {name} SYNC"}, b"")


def make_table(port: int, db: str, name: str = "t") -> None:
    ddl = f"CREATE TABLE {name} (id UInt32, name String, score Float64) ENGINE = MergeTree ORDER BY id"
    reply = call(port, {"database": db}, ddl.encode())
    assert reply.status == 200, reply.text


def rows(port: int, db: str, sql: str) -> str:
    reply = call(port, {"database": db, "query": sql})
    assert reply.status == 200, reply.text
    return reply.text


def test_ping_and_health(port):
    assert call(port, path="/ping").body == b"Ok.\n"
    assert call(port).body == b"Ok.\n"
    missing = call(port, path="/nope")
    assert missing.status == 404
    assert "/ping" in missing.text


def test_query_in_url_or_body_with_parameters_and_headers(port, db):
    reply = call(port, {"query": "SELECT 1 + 1"})
    assert (reply.status, reply.body) == (200, b"2\n")
    assert reply.headers["x-clickhouse-format"] == "TabSeparated"
    assert reply.headers["x-clickhouse-timezone"]
    uuid.UUID(reply.headers["x-clickhouse-query-id"])

    reply = call(
        port,
        {"param_n": "41", "query_id": "my-query"},
        b"SELECT {n:UInt32} + 1 AS x FORMAT JSONEachRow",
    )
    assert json.loads(reply.body) == {"x": 42}
    assert reply.headers["x-clickhouse-query-id"] == "my-query"
    assert reply.headers["x-clickhouse-format"] == "JSONEachRow"

    # The URL query and the body form one statement, as ClickHouse concatenates them.
    assert call(port, {"query": "SELECT"}, b" 3 * 3").body == b"9\n"
    assert call(port, {"query": "SELECT currentDatabase()", "database": db}).text.strip() == db
    assert (
        call(port, {"query": "SELECT 1 AS a", "default_format": "CSVWithNames"}).body == b'"a"\n1\n'
    )


def test_errors_look_like_clickhouse_errors(port):
    reply = call(port, {"query": "SELECT * FROM missing_table_x"})
    assert reply.status == 404
    assert reply.headers["x-clickhouse-exception-code"] == "60"
    assert reply.text.startswith("Code: 60. DB::Exception: ")
    assert "(UNKNOWN_TABLE)" in reply.text

    reply = call(port, {"query": "SELEKT 1"})
    assert (reply.status, reply.headers["x-clickhouse-exception-code"]) == (400, "62")

    reply = call(port, {"query": "SELECT 1", "no_such_setting": "1"})
    assert (reply.status, reply.headers["x-clickhouse-exception-code"]) == (404, "115")

    reply = call(port, {"query": "SELECT 1", "compress": "1"})
    assert reply.status == 501
    assert "Accept-Encoding" in reply.text

    # Like a real server: one statement per request (a trailing ';' is fine).
    reply = call(port, body=b"SELECT 1 AS a; SELECT 'x' AS b")
    assert (reply.status, reply.headers["x-clickhouse-exception-code"]) == (400, "62")
    assert "Multi-statements are not allowed" in reply.text
    assert call(port, body=b"SELECT ';' AS semi; -- done").text == ";\n"


def test_settings_apply_per_request_only(port):
    params = {"query": "SELECT getSetting('max_threads')", "max_threads": "3"}
    assert call(port, params).text.strip() == "3"
    assert call(port, {"query": "SELECT getSetting('max_threads')"}).text.strip() != "3"
    # A real server's default, which clickhouse-connect reads to decide about compression.
    sql = "SELECT value FROM system.settings WHERE name = 'enable_http_compression'"
    assert call(port, {"query": sql}).text.strip() == "0"


def test_get_requests_and_readonly_cannot_write(port, db):
    reply = call(port, {"query": "CREATE TABLE w (a UInt8) ENGINE = Memory", "database": db})
    assert reply.headers["x-clickhouse-exception-code"] == "164"
    reply = call(
        port, {"database": db, "readonly": "1"}, b"CREATE TABLE w (a UInt8) ENGINE = Memory"
    )
    assert reply.headers["x-clickhouse-exception-code"] == "164"
    assert call(port, {"database": db, "readonly": "1"}, b"SELECT 5").body == b"5\n"


def test_inserts_in_text_formats_chunked_and_in_the_body(port, db):
    make_table(port, db)
    reply = call(
        port, {"database": db, "query": "INSERT INTO t FORMAT CSV"}, b'1,"a",0.5\n2,"b",1.5\n'
    )
    assert reply.status == 200, reply.text
    assert json.loads(reply.headers["x-clickhouse-summary"])["written_rows"] == "2"
    assert "x-clickhouse-format" not in reply.headers

    chunks = iter([b"3\tc\t2.5\n4\td", b"\t3.5\n", b"5\te\t4.5\n"])
    assert call(port, {"database": db, "query": "INSERT INTO t FORMAT TSV"}, chunks).status == 200
    assert (
        call(
            port, {"database": db, "query": "INSERT INTO t VALUES"}, b"(6, 'f', 5.5), (7, 'g', 6.5)"
        ).status
        == 200
    )
    body = b"INSERT INTO t FORMAT JSONEachRow\n" + b'{"id": 8, "name": "h", "score": 7.5}\n'
    assert call(port, {"database": db}, body).status == 200
    assert call(port, {"database": db}, b"INSERT INTO t (id, name) VALUES (9, 'i')").status == 200
    assert rows(port, db, "SELECT count(), sum(id), arraySort(groupArray(name)) FROM t") == (
        "9\t45\t['a','b','c','d','e','f','g','h','i']\n"
    )


def test_binary_inserts_native_rowbinary_parquet_arrow(port, db):
    make_table(port, db, "src")
    make_table(port, db, "dst")
    call(
        port,
        {
            "database": db,
            "query": "INSERT INTO src SELECT number, toString(number), number / 2 FROM numbers(1000)",
        },
        b"",
    )
    for fmt in ("Native", "RowBinary", "Parquet", "Arrow", "ArrowStream"):
        data = call(port, {"database": db, "query": f"SELECT * FROM src FORMAT {fmt}"}).body
        reply = call(port, {"database": db, "query": f"INSERT INTO dst FORMAT {fmt}"}, data)
        assert reply.status == 200, (fmt, reply.text)
    table = pa.table({"id": pa.array([5000], pa.uint32()), "name": ["pq"], "score": [1.0]})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    # The statement and binary data in one body, as clickhouse-connect's raw_insert sends it.
    reply = call(port, {"database": db}, b"INSERT INTO dst FORMAT Parquet\n" + sink.getvalue())
    assert reply.status == 200, reply.text
    assert (
        rows(port, db, "SELECT count(), sum(id) FROM dst")
        == f"5001\t{5 * sum(range(1000)) + 5000}\n"
    )


def test_compressed_request_bodies(port, db):
    make_table(port, db)
    csv = b"".join(b'%d,"n%d",%d.5\n' % (i, i, i) for i in range(100))
    frames = lz4.frame.compress(csv[:1000]) + lz4.frame.compress(csv[1000:])  # one frame per block
    bodies = {
        "gzip": gzip.compress(csv),
        "zstd": zstandard.ZstdCompressor().compress(csv),
        "lz4": frames,
        "deflate": __import__("zlib").compress(csv),
    }
    for encoding, body in bodies.items():
        reply = call(
            port,
            {"database": db, "query": "INSERT INTO t FORMAT CSV"},
            body,
            {"Content-Encoding": encoding},
        )
        assert reply.status == 200, (encoding, reply.text)
    # ClickHouse's own block framing (decompress=1): checksum, method, sizes, payload.
    payload = lz4.block.compress(csv, store_size=False)
    block = bytes(16) + struct.pack("<BII", 0x82, len(payload) + 9, len(csv)) + payload
    reply = call(
        port, {"database": db, "query": "INSERT INTO t FORMAT CSV", "decompress": "1"}, block
    )
    assert reply.status == 200, reply.text
    assert rows(port, db, "SELECT count(), sum(id) FROM t") == f"500\t{5 * sum(range(100))}\n"
    reply = call(
        port,
        {"database": db, "query": "INSERT INTO t FORMAT CSV"},
        b"x",
        {"Content-Encoding": "snappy"},
    )
    assert reply.headers["x-clickhouse-exception-code"] == "89"


def test_compressed_responses_only_when_enabled(port):
    sql = "SELECT number FROM numbers(5000) FORMAT TSV"
    plain = call(port, {"query": sql})
    assert "content-encoding" not in plain.headers
    for encoding, decode in (
        ("gzip", gzip.decompress),
        ("zstd", lambda b: zstandard.ZstdDecompressor().decompressobj().decompress(b)),
        ("lz4", lz4.frame.decompress),
    ):
        for wait in ("0", "1"):
            reply = call(
                port,
                {"query": sql, "enable_http_compression": "1", "wait_end_of_query": wait},
                headers={"Accept-Encoding": encoding},
            )
            assert reply.headers["content-encoding"] == encoding
            assert decode(reply.body) == plain.body
            assert len(reply.body) < len(plain.body)


def test_results_stream_before_the_query_ends(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    sql = "SELECT number, sleepEachRow(0.1) FROM numbers(20) SETTINGS max_block_size = 1 FORMAT TSV"
    started = time.perf_counter()
    conn.request("GET", "/?" + urlencode({"query": sql}))
    resp = conn.getresponse()
    first_line = resp.readline()
    first_at = time.perf_counter() - started
    rest = resp.read()
    total = time.perf_counter() - started
    conn.close()
    assert resp.getheader("Transfer-Encoding") == "chunked"
    assert first_line == b"0\t0\n"
    assert len((first_line + rest).splitlines()) == 20
    assert first_at < total / 2


def test_formats_with_headers_are_joined_across_blocks(port):
    small_blocks = {"max_block_size": "1000"}
    sql = "SELECT number AS n, toString(number) AS s FROM numbers(5000)"
    tsv = call(
        port, {"query": f"{sql} FORMAT TSVWithNamesAndTypes", **small_blocks}
    ).text.splitlines()
    assert tsv[:2] == ["n\ts", "UInt64\tString"]
    assert len(tsv) == 5002
    csv = call(port, {"query": f"{sql} FORMAT CSVWithNames", **small_blocks}).text.splitlines()
    assert csv[0] == '"n","s"' and len(csv) == 5001
    raw = call(port, {"query": f"{sql} FORMAT RowBinaryWithNamesAndTypes", **small_blocks}).body
    header = b"\x02\x01n\x01s\x06UInt64\x06String"
    assert raw.startswith(header) and raw.count(header) == 1
    for fmt, read in (("Arrow", pa.ipc.open_file), ("ArrowStream", pa.ipc.open_stream)):
        body = call(port, {"query": f"{sql} FORMAT {fmt}", **small_blocks}).body
        table = read(body).read_all()
        assert table.num_rows == 5000
        assert table.column("n").to_pylist() == list(range(5000))
    doc = json.loads(call(port, {"query": f"{sql} FORMAT JSON", **small_blocks}).body)
    assert doc["rows"] == 5000 and doc["data"][4999]["s"] == "4999"


def test_an_error_mid_stream_is_tagged_for_clients(port):
    # Rows come one per 0.1 s, so the first block is sent long before row 5 throws.
    sql = (
        "SELECT throwIf(number = 5, 'boom'), sleepEachRow(0.1) FROM numbers(10) "
        "SETTINGS max_block_size = 1, max_threads = 1 FORMAT TSV"
    )
    reply = call(port, {"query": sql})
    assert reply.status == 200
    tag = reply.headers["x-clickhouse-exception-tag"]
    assert reply.body.startswith(b"0\t0\n")
    message = extract_exception_with_tag(reply.body, tag)
    assert message and "boom" in message and "Code: 395" in message


def test_session_lock_and_session_check(port):
    session = str(uuid.uuid4())
    results: dict = {}

    def slow() -> None:
        results["slow"] = call(port, {"session_id": session}, b"SELECT sleep(1)")

    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(0.3)
    locked = call(port, {"session_id": session}, b"SELECT 1")
    thread.join()
    assert results["slow"].status == 200
    assert locked.headers["x-clickhouse-exception-code"] == "373"
    assert "locked" in locked.text
    missing = call(port, {"session_id": str(uuid.uuid4()), "session_check": "1"}, b"SELECT 1")
    assert missing.headers["x-clickhouse-exception-code"] == "372"
    # Settings and temporary tables set in a session stay with it.
    created = call(port, {"session_id": session}, b"CREATE TEMPORARY TABLE tmp AS SELECT 5 AS v")
    assert created.status == 200, created.text
    assert call(port, {"session_id": session}, b"SET max_threads = 1").status == 200
    assert (
        call(port, {"session_id": session}, b"SELECT v, getSetting('max_threads') FROM tmp").body
        == b"5\t1\n"
    )


def test_authentication_by_params_headers_and_basic(warehouse_service_auth):
    port = warehouse_service_auth.port
    assert call(port, {"query": "SELECT 1"}).headers["x-clickhouse-exception-code"] == "516"
    wrong = call(port, {"query": "SELECT 1", "user": "analyst", "password": "nope"})
    assert (wrong.status, wrong.headers["x-clickhouse-exception-code"]) == (403, "516")
    ok = {"query": "SELECT 1", "user": "analyst", "password": "s3cret-pass"}
    assert call(port, ok).body == b"1\n"
    headers = {"X-ClickHouse-User": "analyst", "X-ClickHouse-Key": "s3cret-pass"}
    assert call(port, {"query": "SELECT 2"}, headers=headers).body == b"2\n"
    import base64

    basic = {"Authorization": "Basic " + base64.b64encode(b"analyst:s3cret-pass").decode()}
    assert call(port, {"query": "SELECT 3"}, headers=basic).body == b"3\n"
    assert call(port, path="/ping").body == b"Ok.\n"


def test_multipart_form_fields_carry_query_and_parameters(port):
    import requests

    fields = {"query": (None, "SELECT {x:UInt8} * 2"), "param_x": (None, "21")}
    reply = requests.post(f"http://127.0.0.1:{port}/", files=fields, timeout=30)
    assert (reply.status_code, reply.text) == (200, "42\n")
    fields["data"] = ("rows.csv", b"1,2\n")
    reply = requests.post(f"http://127.0.0.1:{port}/", files=fields, timeout=30)
    assert reply.headers["X-ClickHouse-Exception-Code"] == "48"


def test_a_query_whose_client_hangs_up_is_cancelled(warehouse_service, port):
    import socket

    query_id = f"abandoned-{uuid.uuid4().hex[:8]}"
    sql = "SELECT count() FROM system.numbers WHERE sipHash64(number) = 1"
    with socket.create_connection(("127.0.0.1", port)) as sock:
        target = "/?" + urlencode({"query_id": query_id, "wait_end_of_query": "1"})
        request = f"POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(sql)}\r\n\r\n{sql}"
        sock.sendall(request.encode())
        time.sleep(0.5)
    running = "SELECT count() FROM system.processes WHERE query LIKE '%sipHash64(number) = 1%' AND query NOT LIKE '%processes%'"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and call(port, {"query": running}).body != b"0\n":
        time.sleep(0.1)
    assert call(port, {"query": running}).body == b"0\n"
    log = (warehouse_service.home / "logs" / "warehouse.log").read_text()
    assert f"client of query {query_id} hung up" in log


def test_a_large_buffered_result_is_spooled_not_refused(port):
    # wait_end_of_query=1 first tries one in-memory answer capped at 32 MiB; 40 MB must still come.
    sql = "SELECT number FROM numbers(5000000) FORMAT RowBinary"
    reply = call(port, {"query": sql, "wait_end_of_query": "1"})
    assert reply.status == 200, reply.body[:300]
    assert len(reply.body) == 40_000_000
    assert int(reply.headers["content-length"]) == 40_000_000
    assert json.loads(reply.headers["x-clickhouse-summary"])["result_rows"] == "5000000"
    assert struct.unpack_from("<Q", reply.body, 8 * 4_999_999)[0] == 4_999_999
