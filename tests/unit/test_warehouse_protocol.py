"""Pure helpers of the warehouse's HTTP front: SQL splitting, formats, codecs, errors."""

from __future__ import annotations

import gzip
import struct

import lz4.block
import lz4.frame
import pytest
import zstandard
from clickhouse_connect.driver.transform import extract_exception_with_tag

from atlasmesh.warehouse import protocol as p


@pytest.mark.parametrize(
    ("sql", "statement", "fmt", "data"),
    [
        ("INSERT INTO t FORMAT Native\n\x09\x0a", "INSERT INTO t", "Native", "\x09\x0a"),
        (
            "insert into db.t (a, b) SETTINGS x = 1 format CSV\n1,2\n",
            "insert into db.t (a, b) SETTINGS x = 1",
            "CSV",
            "1,2\n",
        ),
        ("INSERT INTO t VALUES (1, 'a')", "INSERT INTO t", "Values", " (1, 'a')"),
        (
            "/* c */ INSERT INTO `format` FORMAT `JSONEachRow` {}",
            "/* c */ INSERT INTO `format`",
            "JSONEachRow",
            "{}",
        ),
        ("INSERT INTO t (`values`) FORMAT TSV\r\n1\n", "INSERT INTO t (`values`)", "TSV", "1\n"),
        (
            "INSERT INTO FUNCTION file('a.csv', 'CSV', 'x UInt8') FORMAT CSV\n1",
            "INSERT INTO FUNCTION file('a.csv', 'CSV', 'x UInt8')",
            "CSV",
            "1",
        ),
        ("-- note\nINSERT INTO t FORMAT RowBinary\n", "-- note\nINSERT INTO t", "RowBinary", ""),
    ],
)
def test_insert_statements_are_split_from_their_data(sql, statement, fmt, data):
    split = p.split_insert(sql)
    assert split is not None
    assert (split.statement, split.format, sql[split.data_start :]) == (statement, fmt, data)


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO t SELECT * FROM values('a UInt8', 1)",
        "INSERT INTO t WITH 1 AS x SELECT x",
        "INSERT INTO t FROM INFILE 'x.csv' FORMAT CSV",
        "SELECT 'INSERT INTO t FORMAT CSV'",
        "CREATE TABLE t (format String) ENGINE = Memory",
    ],
)
def test_statements_without_inline_data_are_not_split(sql):
    assert p.split_insert(sql) is None


@pytest.mark.parametrize(
    ("sql", "fmt"),
    [
        ("SELECT 1 FORMAT JSON", "JSON"),
        ("SELECT 1 FORMAT JSON SETTINGS max_threads = 1", "JSON"),
        ("SELECT 1 SETTINGS max_threads = 1 FORMAT `CSV`;", "CSV"),
        ("SELECT format FROM t", None),
        ("SELECT 'FORMAT JSON'", None),
        ("SELECT * FROM (SELECT 1 FORMAT JSON)", None),
        ("SELECT 1 -- FORMAT JSON", None),
        ("SELECT formatRow('CSV', 1) FORMAT TSV", "TSV"),
    ],
)
def test_output_format_finds_only_the_trailing_clause(sql, fmt):
    assert p.output_format(sql) == fmt


def test_the_lexer_survives_unterminated_input_in_linear_time():
    assert [t.kind for t in p.tokens("SELECT 'open")] == ["word", "string"]
    assert p.split_insert("INSERT INTO t FORMAT") is None
    assert p.output_format("SELECT /* never closed") is None
    huge = "SELECT " + "((((" * 50_000 + "'" * 10_001
    assert p.output_format(huge) is None


def test_header_lengths_of_every_header_format():
    assert p.header_length("TSVWithNamesAndTypes", b"a\tb\nUInt8\tString\n1\tx\n") == 17
    assert p.header_length("CSVWithNames", b'"a\nb","c"\n1,2\n') == 10
    block = b"\x02\x01n\x01s\x06UInt64\x06String" + b"\x00" * 8 + b"\x01x"
    assert p.header_length("RowBinaryWithNamesAndTypes", block) == 19
    assert p.header_length("RowBinaryWithNames", b"\x01\x01n" + b"\x07" * 8) == 3
    assert p.stream_kind("native") == "concat"
    assert p.stream_kind("JSON") == "whole"
    assert p.stream_kind("ArrowStream") == "arrow"


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "zstd", "lz4", "xz"])
def test_streamed_encoders_round_trip_through_the_decoders(encoding):
    data = [b"chunk-%d " % i * 200 for i in range(20)]
    enc = p.encoder(encoding)
    wire = b"".join(enc.feed(chunk) for chunk in data) + enc.finish()
    assert b"".join(
        p.chain(p.decoder(encoding), [wire[i : i + 7] for i in range(0, len(wire), 7)])
    ) == b"".join(data)


def test_decoders_read_concatenated_frames_and_members():
    frames = lz4.frame.compress(b"one,") + lz4.frame.compress(b"two")
    assert b"".join(p.chain(p.decoder("lz4"), [frames])) == b"one,two"
    members = gzip.compress(b"a") + gzip.compress(b"b")
    assert b"".join(p.chain(p.decoder("gzip"), [members])) == b"ab"
    zst = zstandard.ZstdCompressor().compress(b"x") + zstandard.ZstdCompressor().compress(b"y")
    assert b"".join(p.chain(p.decoder("zstd"), [zst])) == b"xy"
    with pytest.raises(p.ClickHouseError) as err:
        list(p.chain(p.decoder("gzip"), [gzip.compress(b"abc" * 100)[:20]]))
    assert err.value.code == p.CANNOT_DECOMPRESS
    with pytest.raises(p.ClickHouseError, match="Content-Encoding"):
        p.decoder("br")


def test_clickhouse_block_framing_is_decoded():
    raw = b"payload " * 100
    payload = lz4.block.compress(raw, store_size=False)
    block = bytes(16) + struct.pack("<BII", 0x82, len(payload) + 9, len(raw)) + payload
    plain = bytes(16) + struct.pack("<BII", 0x02, 9 + 3, 3) + b"end"
    wire = block + plain
    out = b"".join(p.chain(p.NativeBlockDecompress(), [wire[:10], wire[10:40], wire[40:]]))
    assert out == raw + b"end"


def test_engine_errors_keep_code_name_and_message():
    err = p.ClickHouseError.from_engine(
        RuntimeError(
            "Code: 60. DB::Exception: Unknown table expression identifier 'x'. (UNKNOWN_TABLE)"
        )
    )
    assert (err.code, err.name, err.message) == (
        60,
        "UNKNOWN_TABLE",
        "Unknown table expression identifier 'x'.",
    )
    nested = p.ClickHouseError.from_engine(
        RuntimeError(
            "Code: 164. DB::Exception: Code: 164. DB::Exception: Cannot modify 'readonly' setting in "
            "readonly mode. (READONLY) (version 26.9.2.1). (READONLY)"
        )
    )
    assert (nested.code, nested.name) == (164, "READONLY")
    assert nested.message == "Cannot modify 'readonly' setting in readonly mode."
    body = nested.body("26.9.2.1")
    assert (
        body
        == b"Code: 164. DB::Exception: Cannot modify 'readonly' setting in readonly mode. (READONLY) (version 26.9.2.1)\n"
    )
    assert p.http_status(60) == 404 and p.http_status(62) == 400 and p.http_status(516) == 403
    assert p.http_status(159) == 408 and p.http_status(394) == 500


def test_exception_blocks_are_what_clickhouse_connect_parses():
    block = p.exception_block("abc123", b"Code: 395. DB::Exception: boom (X)\n")
    assert (
        extract_exception_with_tag(b"1\n2\n" + block, "abc123")
        == "Code: 395. DB::Exception: boom (X)"
    )


def test_encoding_negotiation_and_names():
    assert p.choose_encoding("br;q=1.0, zstd, gzip") == "zstd"
    assert p.choose_encoding("identity") is None
    assert p.quote_string("it's \\ here") == "'it\\'s \\\\ here'"
    assert p.quote_identifier("we`ird") == "`we\\`ird`"
    assert (
        p.is_setting_name("max_threads")
        and not p.is_setting_name("a-b")
        and not p.is_setting_name("1x")
    )
