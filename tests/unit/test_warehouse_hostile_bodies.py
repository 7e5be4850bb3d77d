"""Hostile request bodies for the warehouse front's decoders: bombs, lies and corrupt framing."""

from __future__ import annotations

import gzip
import lzma
import struct
import zlib

import lz4.frame
import pytest
import zstandard

from atlasmesh.warehouse import protocol as p

BOMB_BYTES = 64 << 20


def _compress(encoding: str, data: bytes) -> bytes:
    if encoding == "gzip":
        return gzip.compress(data)
    if encoding == "deflate":
        return zlib.compress(data)
    if encoding == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    if encoding == "lz4":
        return lz4.frame.compress(data)
    return lzma.compress(data)


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "zstd", "lz4", "xz"])
def test_a_compression_bomb_expands_in_bounded_pieces(encoding):
    wire = _compress(encoding, bytes(BOMB_BYTES))
    # One chunk of the wire: before, a single decompress call expanded it whole in memory.
    largest = total = 0
    for piece in p.chain(p.decoder(encoding), [wire]):
        largest = max(largest, len(piece))
        total += len(piece)
    assert total == BOMB_BYTES
    assert largest <= 8 << 20


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "zstd", "lz4", "xz"])
def test_a_body_that_lies_about_its_encoding_is_a_clear_error(encoding):
    with pytest.raises(p.ClickHouseError) as err:
        list(p.chain(p.decoder(encoding), [b"SELECT 1 -- plain text, not compressed at all"]))
    assert err.value.code == p.CANNOT_DECOMPRESS
    assert f"not valid {encoding} data" in err.value.message


@pytest.mark.parametrize("encoding", ["gzip", "zstd", "lz4", "xz"])
def test_a_truncated_compressed_body_is_refused(encoding):
    wire = _compress(encoding, b"abc" * 1000)
    with pytest.raises(p.ClickHouseError) as err:
        list(p.chain(p.decoder(encoding), [wire[: len(wire) // 2]]))
    assert err.value.code == p.CANNOT_DECOMPRESS


def test_block_framing_refuses_absurd_sizes_and_corrupt_payloads():
    huge = bytes(16) + struct.pack("<BII", 0x82, 0xFFFFFFF0, 0xFFFFFFF0)
    with pytest.raises(p.ClickHouseError, match="Corrupted compressed block header"):
        list(p.chain(p.NativeBlockDecompress(), [huge]))
    corrupt = bytes(16) + struct.pack("<BII", 0x82, 9 + 4, 100) + b"\xff\xff\xff\xff"
    with pytest.raises(p.ClickHouseError) as err:
        list(p.chain(p.NativeBlockDecompress(), [corrupt]))
    assert err.value.code == p.CANNOT_DECOMPRESS
