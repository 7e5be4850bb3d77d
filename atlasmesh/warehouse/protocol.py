"""Pure helpers of the ClickHouse HTTP protocol: errors, SQL lexing, formats and codecs."""

from __future__ import annotations

import lzma
import os
import re
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

# Error codes the front raises itself or maps to HTTP statuses; the numbers are ClickHouse's.
CANNOT_PARSE_TEXT = 6
BAD_ARGUMENTS = 36
NOT_IMPLEMENTED = 48
SYNTAX_ERROR = 62
UNKNOWN_COMPRESSION_METHOD = 89
TIMEOUT_EXCEEDED = 159
READONLY = 164
ACCESS_DENIED = 497
TOO_MANY_SIMULTANEOUS_QUERIES = 202
NETWORK_ERROR = 210
QUERY_WITH_SAME_ID_IS_ALREADY_RUNNING = 216
QUERY_IS_TOO_LARGE = 229
CANNOT_DECOMPRESS = 271
SESSION_NOT_FOUND = 372
SESSION_IS_LOCKED = 373
QUERY_WAS_CANCELLED = 394
TOO_MANY_ROWS_OR_BYTES = 396
AUTHENTICATION_FAILED = 516
UNKNOWN_EXCEPTION = 1002

ERROR_NAMES = {
    CANNOT_PARSE_TEXT: "CANNOT_PARSE_TEXT",
    BAD_ARGUMENTS: "BAD_ARGUMENTS",
    NOT_IMPLEMENTED: "NOT_IMPLEMENTED",
    SYNTAX_ERROR: "SYNTAX_ERROR",
    UNKNOWN_COMPRESSION_METHOD: "UNKNOWN_COMPRESSION_METHOD",
    TIMEOUT_EXCEEDED: "TIMEOUT_EXCEEDED",
    READONLY: "READONLY",
    TOO_MANY_SIMULTANEOUS_QUERIES: "TOO_MANY_SIMULTANEOUS_QUERIES",
    NETWORK_ERROR: "NETWORK_ERROR",
    QUERY_WITH_SAME_ID_IS_ALREADY_RUNNING: "QUERY_WITH_SAME_ID_IS_ALREADY_RUNNING",
    QUERY_IS_TOO_LARGE: "QUERY_IS_TOO_LARGE",
    CANNOT_DECOMPRESS: "CANNOT_DECOMPRESS",
    SESSION_NOT_FOUND: "SESSION_NOT_FOUND",
    SESSION_IS_LOCKED: "SESSION_IS_LOCKED",
    QUERY_WAS_CANCELLED: "QUERY_WAS_CANCELLED",
    TOO_MANY_ROWS_OR_BYTES: "TOO_MANY_ROWS_OR_BYTES",
    AUTHENTICATION_FAILED: "AUTHENTICATION_FAILED",
    ACCESS_DENIED: "ACCESS_DENIED",
    UNKNOWN_EXCEPTION: "UNKNOWN_EXCEPTION",
}

# ClickHouse's own exception-code -> HTTP status table (src/Server/HTTP/exceptionCodeToHTTPStatus.cpp).
_STATUS_BY_CODE = {
    194: 401,
    **dict.fromkeys((192, 193, 516, 512, 497), 403),
    **dict.fromkeys(
        (
            36,
            427,
            6,
            25,
            26,
            38,
            41,
            72,
            441,
            675,
            676,
            27,
            376,
            15,
            44,
            37,
            123,
            8,
            167,
            168,
            223,
            62,
            117,
            53,
            321,
        ),
        400,
    ),
    **dict.fromkeys((60, 46, 47, 50, 56, 81, 115, 152, 63, 73, 336, 78, 511), 404),
    229: 413,
    48: 501,
    209: 503,
    76: 503,
    381: 411,
    159: 408,
    439: 503,
    779: 415,
}

_ENGINE_ERROR = re.compile(r"Code: (\d+)\. ")


def http_status(code: int) -> int:
    """HTTP status a real ClickHouse server answers for an exception code."""
    return _STATUS_BY_CODE.get(code, 500)


class ClickHouseError(Exception):
    """An error reported to the client the way ClickHouse reports it."""

    def __init__(self, code: int, message: str, name: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.name = name or ERROR_NAMES.get(code, "UNKNOWN_EXCEPTION")

    @classmethod
    def from_engine(cls, exc: BaseException) -> ClickHouseError:
        """Wrap an exception raised by chDB, keeping its code, name and message."""
        if isinstance(exc, ClickHouseError):
            return exc
        text = str(exc).strip()
        match = _ENGINE_ERROR.search(text)
        if not match:
            return cls(UNKNOWN_EXCEPTION, text or type(exc).__name__)
        code = int(match.group(1))
        body = text[match.end() :]
        # chDB sometimes nests "Code: N. DB::Exception: Code: N. DB::Exception: ..." ; keep the inner.
        while body.startswith("DB::Exception: Code: "):
            inner = _ENGINE_ERROR.search(body)
            if not inner:
                break
            body = body[inner.end() :]
        body = body.removeprefix("DB::Exception: ")
        name = None
        # Peel the trailing "(ERROR_NAME)" and "(version x.y)" groups off the message.
        while True:
            stripped = body.rstrip(". \n")
            opening = stripped.rfind("(")
            inner_text = (
                stripped[opening + 1 : -1] if stripped.endswith(")") and opening >= 0 else ""
            )
            if inner_text.startswith("version "):
                body = stripped[:opening]
            elif inner_text and inner_text.replace("_", "").isalnum() and inner_text.isupper():
                name = name or inner_text
                body = stripped[:opening]
            else:
                break
        body = body.rstrip()
        return cls(code, body if body.endswith((".", "?", "!")) else body + ".", name)

    def body(self, version: str) -> bytes:
        """The exception text of ClickHouse's HTTP error body."""
        return f"Code: {self.code}. DB::Exception: {self.message} ({self.name}) (version {version})\n".encode()


def exception_block(tag: str, text: bytes) -> bytes:
    """A mid-stream exception block (ClickHouse 25.11+ framing, recognised by clients)."""
    return (
        b"__exception__\r\n"
        + tag.encode()
        + b"\r\n"
        + text.rstrip(b"\n")
        + b"\n"
        + str(len(text)).encode()
        + b" "
        + tag.encode()
        + b"\r\n__exception__\r\n"
    )


# ---- SQL lexing -----------------------------------------------------------------------------
# A linear, non-backtracking tokenizer: it only has to find statement boundaries the front needs
# (the INSERT's FORMAT/VALUES clause and a trailing FORMAT clause); everything else is the engine's.


@dataclass(frozen=True)
class Token:
    """A significant token: kind is 'word', 'quoted', 'string' or 'punct'; depth counts brackets."""

    kind: str
    start: int
    end: int
    depth: int
    text: str


def tokens(sql: str) -> Iterator[Token]:
    """Yield the significant tokens of `sql`, skipping whitespace and comments."""
    i, n, depth = 0, len(sql), 0
    while i < n:
        ch = sql[i]
        if ch in " \t\r\n\f\v":
            i += 1
        elif sql.startswith("--", i) or (ch == "#" and sql[i + 1 : i + 2] in (" ", "!")):
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
        elif ch == "/" and sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            i = n if end < 0 else end + 2
        elif ch in "'\"`":
            j = i + 1
            while j < n:
                c = sql[j]
                if c == "\\":
                    j += 2
                    continue
                if c == ch:
                    if j + 1 < n and sql[j + 1] == ch:
                        j += 2
                        continue
                    break
                j += 1
            end = min(j + 1, n)
            kind = "string" if ch == "'" else "quoted"
            yield Token(kind, i, end, depth, _unquote(sql[i:end], ch) if kind == "quoted" else "")
            i = end
        elif ch.isalpha() or ch == "_" or ord(ch) > 127:
            j = i + 1
            while j < n and (sql[j].isalnum() or sql[j] in "_$" or ord(sql[j]) > 127):
                j += 1
            yield Token("word", i, j, depth, sql[i:j])
            i = j
        elif ch.isdigit():
            j = i + 1
            while j < n and (sql[j].isalnum() or sql[j] in "._"):
                j += 1
            yield Token("number", i, j, depth, sql[i:j])
            i = j
        else:
            if ch in ")]}":
                depth = max(depth - 1, 0)
            yield Token("punct", i, i + 1, depth, ch)
            if ch in "([{":
                depth += 1
            i += 1


def multi_statement_at(sql: str) -> int | None:
    """Offset of a second statement after a `;` (a real server refuses those), else None."""
    semicolon = None
    for token in tokens(sql):
        if semicolon is not None:
            return semicolon
        if token.kind == "punct" and token.text == ";" and token.depth == 0:
            semicolon = token.start
    return None


def _unquote(raw: str, quote: str) -> str:
    inner = raw[1:-1] if len(raw) > 1 and raw.endswith(quote) else raw[1:]
    return inner.replace(quote * 2, quote).replace("\\" + quote, quote)


def is_word(token: Token | None, *words: str) -> bool:
    """True when `token` is one of the keywords `words` (upper case), in any case."""
    return token is not None and token.kind == "word" and token.text.upper() in words


def kill_query_target(sql: str) -> tuple[str, bool, str | None] | None:
    """(query id, SYNC, FORMAT) of `KILL QUERY WHERE query_id = '<id>' [SYNC|ASYNC] [FORMAT f]`;
    None for any other statement (those go to the engine as they are)."""
    toks = list(tokens(sql))
    if toks and toks[-1].kind == "punct" and toks[-1].text == ";":
        toks.pop()
    if len(toks) < 6 or not (
        is_word(toks[0], "KILL")
        and is_word(toks[1], "QUERY")
        and is_word(toks[2], "WHERE")
        and is_word(toks[3], "QUERY_ID")
        and toks[4].text == "="
        and toks[5].kind == "string"
    ):
        return None
    query_id = _unquote(sql[toks[5].start : toks[5].end], "'")
    rest = toks[6:]
    sync = False
    if rest and is_word(rest[0], "SYNC", "ASYNC"):
        sync = rest.pop(0).text.upper() == "SYNC"
    fmt = None
    if len(rest) == 2 and is_word(rest[0], "FORMAT") and _is_name(rest[1]):
        fmt = rest.pop(1).text
        rest.pop(0)
    return (query_id, sync, fmt) if not rest else None


def _is_name(token: Token | None) -> bool:
    return token is not None and token.kind in ("word", "quoted")


@dataclass(frozen=True)
class InsertSplit:
    """An INSERT whose data follows the statement: the statement, the format, where data starts."""

    statement: str
    format: str
    data_start: int


def split_insert(sql: str) -> InsertSplit | None:
    """Split `INSERT ... FORMAT f <data>` / `INSERT ... VALUES <data>`; None for anything else."""
    toks = tokens(sql)
    first = next(toks, None)
    if not is_word(first, "INSERT"):
        return None
    prev: Token | None = None
    pending: Token | None = None
    after_into = 0  # counts name tokens still to skip after INTO [TABLE] [FUNCTION]
    for tok in toks:
        if pending is not None:
            if _is_name(tok):
                return InsertSplit(
                    sql[: pending.start].rstrip(), tok.text, _data_start(sql, tok.end)
                )
            pending = None
        if tok.depth > 0:
            prev = tok
            continue
        if is_word(tok, "INTO"):
            after_into = 1
        elif after_into and is_word(tok, "TABLE", "FUNCTION"):
            pass
        elif after_into and _is_name(tok):
            after_into = 0
        elif tok.kind == "punct" and tok.text == "." and prev is not None and _is_name(prev):
            after_into = 1
        elif is_word(tok, "SELECT", "WITH") or (is_word(tok, "INFILE") and is_word(prev, "FROM")):
            return None
        elif is_word(tok, "VALUES"):
            return InsertSplit(sql[: tok.start].rstrip(), "Values", tok.end)
        elif is_word(tok, "FORMAT"):
            pending = tok
        prev = tok
    return None


def _data_start(sql: str, pos: int) -> int:
    # As ClickHouse's parser: skip blanks, then at most one line break, and no further, because
    # binary data may legitimately begin with bytes that look like whitespace.
    n = len(sql)
    while pos < n and sql[pos] in " \t":
        pos += 1
    if pos < n and sql[pos] == "\r":
        pos += 1
    if pos < n and sql[pos] == "\n":
        pos += 1
    return pos


def output_format(sql: str) -> str | None:
    """The format named by a statement's trailing `FORMAT f` clause, if it has one."""
    found: str | None = None
    toks = list(tokens(sql))
    for i, tok in enumerate(toks):
        if tok.depth or not is_word(tok, "FORMAT") or i + 1 >= len(toks):
            continue
        name = toks[i + 1]
        after = toks[i + 2] if i + 2 < len(toks) else None
        if (
            _is_name(name)
            and name.depth == 0
            and (after is None or is_word(after, "SETTINGS") or after.text == ";")
        ):
            found = name.text
    return found


def quote_string(value: str) -> str:
    """A ClickHouse string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def quote_identifier(name: str) -> str:
    """A ClickHouse back-quoted identifier."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def is_setting_name(name: str) -> bool:
    """True for names that can be a setting (letters, digits, underscores)."""
    return bool(name) and (name[0].isalpha() or name[0] == "_") and name.replace("_", "a").isalnum()


# ---- formats --------------------------------------------------------------------------------
# chDB's streaming API formats every block as a complete document. Formats without a header or
# footer concatenate as they are; formats with a header are concatenated by dropping the header of
# every block after the first; Arrow is re-framed by pyarrow; the rest are produced in one piece.

_CONCATENABLE = {
    name.lower()
    for name in (
        "Native",
        "RowBinary",
        "TabSeparated",
        "TSV",
        "TabSeparatedRaw",
        "TSVRaw",
        "Raw",
        "CSV",
        "JSONEachRow",
        "JSONLines",
        "NDJSON",
        "JSONStringsEachRow",
        "JSONCompactEachRow",
        "JSONCompactStringsEachRow",
        "LineAsString",
        "RawBLOB",
        "TSKV",
        "Null",
    )
}
_HEADER_LINES = {
    name.lower(): lines
    for suffix, lines in (("WithNames", 1), ("WithNamesAndTypes", 2))
    for name in (
        f"TabSeparated{suffix}",
        f"TSV{suffix}",
        f"CSV{suffix}",
        f"JSONCompactEachRow{suffix}",
        f"JSONCompactStringsEachRow{suffix}",
    )
}
_ROWBINARY_HEADER = {"rowbinarywithnames": 1, "rowbinarywithnamesandtypes": 2}
_ARROW = {"arrow", "arrowstream"}

_CONTENT_TYPES = {
    "tabseparated": "text/tab-separated-values; charset=UTF-8",
    "tsv": "text/tab-separated-values; charset=UTF-8",
    "csv": "text/csv; charset=UTF-8; header=absent",
    "csvwithnames": "text/csv; charset=UTF-8; header=present",
    "json": "application/json; charset=UTF-8",
    "jsoncompact": "application/json; charset=UTF-8",
    "jsoneachrow": "application/x-ndjson; charset=UTF-8",
    "xml": "application/xml; charset=UTF-8",
    "markdown": "text/markdown; charset=UTF-8",
}
_BINARY_FORMATS = ("native", "rowbinary", "arrow", "parquet", "orc", "avro", "protobuf", "msgpack")


def content_type(fmt: str) -> str:
    """The Content-Type a ClickHouse server sends with results in `fmt`."""
    key = fmt.lower()
    if key in _CONTENT_TYPES:
        return _CONTENT_TYPES[key]
    if key.startswith(_BINARY_FORMATS):
        return "application/octet-stream"
    if key.startswith(("tabseparated", "tsv")):
        return "text/tab-separated-values; charset=UTF-8"
    return "text/plain; charset=UTF-8"


def stream_kind(fmt: str) -> str:
    """How blocks of `fmt` are joined: 'concat', 'header', 'arrow' or 'whole'."""
    key = fmt.lower()
    if key in _CONCATENABLE:
        return "concat"
    if key in _HEADER_LINES or key in _ROWBINARY_HEADER:
        return "header"
    if key in _ARROW:
        return "arrow"
    return "whole"


def header_length(fmt: str, block: bytes) -> int:
    """Length of the header that starts every block of a 'header' format."""
    key = fmt.lower()
    if key in _ROWBINARY_HEADER:
        pos = 0
        count, pos = _read_varint(block, pos)
        for _ in range(count * _ROWBINARY_HEADER[key]):
            size, pos = _read_varint(block, pos)
            pos += size
        return min(pos, len(block))
    lines = _HEADER_LINES[key]
    pos = 0
    csv = key.startswith("csv")
    for _ in range(lines):
        if csv:
            quoted = False
            while pos < len(block):
                c = block[pos]
                pos += 1
                if c == 0x22:
                    quoted = not quoted
                elif c == 0x0A and not quoted:
                    break
        else:
            end = block.find(b"\n", pos)
            pos = len(block) if end < 0 else end + 1
    return pos


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while pos < len(data):
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            break
        shift += 7
    return value, pos


# ---- codecs ---------------------------------------------------------------------------------


class Codec:
    """A streaming transform of bytes: feed chunks, then finish."""

    def feed(self, data: bytes) -> bytes:  # pragma: no cover - interface
        raise NotImplementedError

    def pieces(self, data: bytes) -> Iterator[bytes]:
        """The non-empty output of `data`, in pieces a stream can pass on one at a time."""
        out = self.feed(data)
        if out:
            yield out

    def finish(self) -> bytes:
        return b""


class _Identity(Codec):
    def feed(self, data: bytes) -> bytes:
        return data


class _ZlibCompress(Codec):
    def __init__(self, wbits: int, level: int) -> None:
        self._c = zlib.compressobj(level, zlib.DEFLATED, wbits)

    def feed(self, data: bytes) -> bytes:
        return self._c.compress(data) + self._c.flush(zlib.Z_SYNC_FLUSH)

    def finish(self) -> bytes:
        return self._c.flush()


class _Lz4Compress(Codec):
    def __init__(self) -> None:
        import lz4.frame

        # auto_flush: each fed chunk comes out at once instead of waiting for a full lz4 block.
        self._c = lz4.frame.LZ4FrameCompressor(auto_flush=True)
        self._header = self._c.begin()

    def feed(self, data: bytes) -> bytes:
        out, self._header = self._header + self._c.compress(data), b""
        return out

    def finish(self) -> bytes:
        return self._header + self._c.flush()


class _ZstdCompress(Codec):
    def __init__(self) -> None:
        import zstandard

        self._c = zstandard.ZstdCompressor(level=1).compressobj()
        self._flush = zstandard.COMPRESSOBJ_FLUSH_BLOCK

    def feed(self, data: bytes) -> bytes:
        return self._c.compress(data) + self._c.flush(self._flush)

    def finish(self) -> bytes:
        return self._c.flush()


class _XzCompress(Codec):
    def __init__(self) -> None:
        self._c = lzma.LZMACompressor()

    def feed(self, data: bytes) -> bytes:
        return self._c.compress(data)

    def finish(self) -> bytes:
        return self._c.flush()


DECODE_PIECE_BYTES = 1 << 20  # at most this much decompressed output is held per step


class _BoundedDecompress(Codec):
    """A decompressor whose `pieces` bound each step's output; a frame cut short fails `finish`."""

    _pending = False  # inside a frame that has not ended yet

    def feed(self, data: bytes) -> bytes:
        return b"".join(self.pieces(data))

    def finish(self) -> bytes:
        if self._pending:
            raise ClickHouseError(CANNOT_DECOMPRESS, "The compressed request body is truncated.")
        return b""


class _FramedDecompress(_BoundedDecompress):
    """Decompresses a sequence of frames (gzip members, lz4 or xz frames) of one codec, at most
    DECODE_PIECE_BYTES of output per step, so a small body cannot expand all at once in memory."""

    def __init__(self, factory: Callable[[], object], name: str) -> None:
        self._factory = factory
        self._name = name
        self._d = factory()

    def pieces(self, data: bytes) -> Iterator[bytes]:
        """The decompressed output of `data`, in bounded pieces."""
        if not data:
            return
        self._pending = True
        try:
            while True:
                out = self._d.decompress(data, DECODE_PIECE_BYTES)  # type: ignore[attr-defined]
                if out:
                    yield out
                if self._d.eof:  # type: ignore[attr-defined]
                    # The next frame or member starts right after this one.
                    data = self._d.unused_data  # type: ignore[attr-defined]
                    self._d = self._factory()
                    self._pending = bool(data)
                    if not data:
                        return
                    continue
                tail = getattr(self._d, "unconsumed_tail", None)
                if tail is not None:  # zlib hands back the input it did not read yet
                    if not tail and len(out) < DECODE_PIECE_BYTES:
                        return
                    data = tail
                elif self._d.needs_input:  # type: ignore[attr-defined]  # lz4 and xz keep it inside
                    return
                else:
                    data = b""
        except ClickHouseError:
            raise
        except Exception as exc:  # zlib.error, LZMAError, lz4's RuntimeError: not this codec
            raise ClickHouseError(
                CANNOT_DECOMPRESS,
                f"The request body is not valid {self._name} data (Content-Encoding: "
                f"{self._name}): {exc}",
            ) from None


ZSTD_SLICE_BYTES = 256  # zstd expands at most ~32,000:1, so a slice yields at most ~8 MiB


class _ZstdDecompress(_BoundedDecompress):
    """Decompresses zstd frames; zstandard's decompressobj has no output limit, so the input is fed
    in small slices to bound what one step can expand to."""

    def __init__(self) -> None:
        self._d = self._new()

    @staticmethod
    def _new() -> object:
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj()

    def pieces(self, data: bytes) -> Iterator[bytes]:
        """The decompressed output of `data`, in bounded pieces."""
        view = memoryview(data)
        try:
            for start in range(0, len(view), ZSTD_SLICE_BYTES):
                part = bytes(view[start : start + ZSTD_SLICE_BYTES])
                while part:
                    self._pending = True
                    out = self._d.decompress(part)  # type: ignore[attr-defined]
                    if out:
                        yield out
                    part = b""
                    if self._d.eof:  # type: ignore[attr-defined]
                        part = self._d.unused_data  # type: ignore[attr-defined]
                        self._d = self._new()
                        self._pending = False
        except Exception as exc:  # zstandard.ZstdError: not zstd data
            raise ClickHouseError(
                CANNOT_DECOMPRESS,
                f"The request body is not valid zstd data (Content-Encoding: zstd): {exc}",
            ) from None


def _lz4_decompressor() -> object:
    import lz4.frame

    return lz4.frame.LZ4FrameDecompressor()


class _ZlibDecompress(_FramedDecompress):
    def __init__(self, wbits: int, name: str) -> None:
        super().__init__(lambda: zlib.decompressobj(wbits), name)


ENCODINGS = ("gzip", "deflate", "zstd", "lz4", "xz")


def encoder(encoding: str | None, level: int = 3) -> Codec:
    """A compressor for an HTTP Content-Encoding (None or identity: pass-through)."""
    if not encoding or encoding == "identity":
        return _Identity()
    if encoding == "gzip":
        return _ZlibCompress(31, level)
    if encoding == "deflate":
        return _ZlibCompress(15, level)
    if encoding == "zstd":
        return _ZstdCompress()
    if encoding == "lz4":
        return _Lz4Compress()
    if encoding == "xz":
        return _XzCompress()
    raise ClickHouseError(
        UNKNOWN_COMPRESSION_METHOD, f"Unknown HTTP compression method {encoding!r}."
    )


def decoder(encoding: str | None) -> Codec:
    """A decompressor for a request's Content-Encoding."""
    enc = (encoding or "").strip().lower()
    if not enc or enc == "identity":
        return _Identity()
    if enc in ("gzip", "x-gzip"):
        return _ZlibDecompress(47, "gzip")
    if enc == "deflate":
        return _ZlibDecompress(15, "deflate")
    if enc == "zstd":
        return _ZstdDecompress()
    if enc == "lz4":
        return _FramedDecompress(_lz4_decompressor, "lz4")
    if enc == "xz":
        return _FramedDecompress(lzma.LZMADecompressor, "xz")
    raise ClickHouseError(
        UNKNOWN_COMPRESSION_METHOD,
        f"Unknown Content-Encoding {encoding!r} of the request body; use one of {', '.join(ENCODINGS)}.",
    )


def choose_encoding(accept_encoding: str | None) -> str | None:
    """The first encoding of an Accept-Encoding header this server can produce."""
    for item in (accept_encoding or "").split(","):
        name = item.split(";")[0].strip().lower()
        if name in ENCODINGS:
            return name
    return None


MAX_BLOCK_BYTES = 1 << 30  # ClickHouse's DBMS_MAX_COMPRESSED_SIZE


class NativeBlockDecompress(Codec):
    """Decodes ClickHouse's own compressed block framing (`decompress=1` requests).

    The 16-byte CityHash128 checksum is not verified: no CityHash implementation is installed.
    """

    _HEADER = 25

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> bytes:
        self._buf += data
        out = []
        while len(self._buf) >= self._HEADER:
            method = self._buf[16]
            compressed, size = struct.unpack_from("<II", self._buf, 17)
            total = 16 + compressed
            if compressed < 9 or compressed > MAX_BLOCK_BYTES or size > MAX_BLOCK_BYTES:
                raise ClickHouseError(
                    CANNOT_DECOMPRESS,
                    "Corrupted compressed block header (decompress=1): sizes must be between "
                    f"9 bytes and {MAX_BLOCK_BYTES >> 20} MiB, got {compressed} and {size}.",
                )
            if len(self._buf) < total:
                break
            payload = bytes(self._buf[self._HEADER : total])
            del self._buf[:total]
            out.append(_decompress_block(method, payload, size))
        return b"".join(out)

    def finish(self) -> bytes:
        if self._buf:
            raise ClickHouseError(CANNOT_DECOMPRESS, "The compressed request body is truncated.")
        return b""


def _decompress_block(method: int, payload: bytes, size: int) -> bytes:
    try:
        if method == 0x02:
            return payload
        if method == 0x82:
            import lz4.block

            return lz4.block.decompress(payload, uncompressed_size=size)
        if method == 0x90:
            import zstandard

            return zstandard.ZstdDecompressor().decompress(payload, max_output_size=size)
    except Exception as exc:  # lz4's LZ4BlockError, zstandard's ZstdError: a corrupt block
        raise ClickHouseError(
            CANNOT_DECOMPRESS,
            f"Cannot decompress a block of the request body (decompress=1): {exc}",
        ) from None
    raise ClickHouseError(UNKNOWN_COMPRESSION_METHOD, f"Unknown compression method 0x{method:02x}.")


def chain(codec: Codec, chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Run `chunks` through `codec`, yielding non-empty output."""
    for chunk in chunks:
        yield from codec.pieces(chunk)
    tail = codec.finish()
    if tail:
        yield tail


def new_tag() -> str:
    """A random exception tag for a streamed response."""
    return os.urandom(8).hex()
