"""Delivery as gateways do it: lines held per gateway and batch window, gzip files in the landing zone.

A vehicle's event reaches its gateway after a small, steady uplink latency; the gateway
collects for `batch_s` and then delivers one gzip JSON-lines file per schema folder,
named and foldered by the ARRIVAL time (the end of the window). Late, duplicated and
reordered events change only when an event reaches the gateway, so they land in the
right later file on their own. A truncated upload is left in the lake as it arrived and
the whole batch is delivered again, intact, with the gateway's next file.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
import orjson
import polars as pl

from atlasmesh.simulator.config import SimConfig
from atlasmesh.simulator.faults import (
    DELIVERY_FAULTS,
    FAULT_BY_CODE,
    FAULT_CODES,
    LATE_DELAY_S,
    NO_FAULT,
    Injector,
    draw_faults,
)
from atlasmesh.simulator.telemetry import Samples
from atlasmesh.simulator.world import World
from atlasmesh.telemetry.reasons import Disposition, FaultClass

if TYPE_CHECKING:
    from atlasmesh.lake import Lake
    from atlasmesh.simulator.truth import TruthWriter

GZIP_LEVEL = 2  # gateways favour CPU over a few percent of size
LANDING_PREFIX = "landing/telemetry"
_MAX_IN_FLIGHT = 64
_OOO, _LATE, _DUP = (
    FAULT_CODES[f] for f in (FaultClass.OUT_OF_ORDER, FaultClass.LATE_ARRIVAL, FaultClass.DUPLICATE)
)
_DELIVERY_CODES = {FAULT_CODES[f] for f in DELIVERY_FAULTS}


@dataclass
class LineBatch:
    """Wire lines in flight with their delivery keys (parallel arrays)."""

    data: np.ndarray  # object: bytes of the line
    gateway: np.ndarray  # int32
    schema: np.ndarray  # int8: schema major (folder)
    receive: np.ndarray  # int64: when the gateway got it, ms since epoch
    vehicle: np.ndarray  # int32: the vehicle that recorded it
    seq: np.ndarray  # int64: unique, ties broken by it
    fault: np.ndarray  # int8: injected fault code or NO_FAULT
    true_ms: np.ndarray  # int64: true measurement time, ms since epoch
    tid: np.ndarray  # object: telemetry_id for faulty lines, else None
    detail: np.ndarray  # object: what the fault did, else None
    retry: np.ndarray  # int8: batch windows it was held back by re-deliveries

    def take(self, idx: np.ndarray | slice) -> LineBatch:
        """A subset (or reordering) of the lines."""
        return LineBatch(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    def __len__(self) -> int:
        return len(self.data)

    @staticmethod
    def concat(parts: list[LineBatch]) -> LineBatch:
        """All lines of several batches."""
        return LineBatch(
            **{
                f.name: np.concatenate([getattr(p, f.name) for p in parts])
                for f in fields(LineBatch)
            }
        )

    @staticmethod
    def empty() -> LineBatch:
        """No lines."""
        dtypes = {"data": object, "tid": object, "detail": object, "gateway": np.int32, "schema": np.int8,
                  "receive": np.int64, "vehicle": np.int32, "seq": np.int64, "fault": np.int8,
                  "true_ms": np.int64, "retry": np.int8}  # fmt: skip
        return LineBatch(**{name: np.empty(0, dtype=dt) for name, dt in dtypes.items()})


def deliver(
    world: World,
    samples: Samples,
    lines: np.ndarray,
    ids: pl.Series,
    rng: np.random.Generator,
    gateway_of: np.ndarray,
    latency_ms: np.ndarray,
    seq0: int,
) -> LineBatch:
    """Inject faults into a block's lines and work out when each reaches its gateway."""
    config = world.config
    n = len(lines)
    n_veh = len(world.vehicles)
    vehicle = samples.vehicle
    true_ms = samples.t_ms + config.origin_ms
    # Jitter stays below 40% of the interval so one vehicle's events never overtake each other.
    jitter = max(1, min(400, int(config.interval_ms * 0.4)))
    receive = true_ms + latency_ms[vehicle] + rng.integers(0, jitter, n)
    codes = draw_faults(rng, n, config.line_fault_rates)
    detail = np.full(n, None, dtype=object)

    # OUT_OF_ORDER: the event arrives before the same vehicle's previous one, which the
    # gateway forwards just after it. Both stay valid; the later-recorded one is tagged.
    ooo = np.flatnonzero(codes == _OOO)
    prev = ooo - n_veh
    ok = prev >= 0
    ok[ok] &= codes[prev[ok]] == NO_FAULT
    codes[ooo[~ok]] = NO_FAULT
    ooo, prev = ooo[ok], prev[ok]
    involved = np.zeros(n, dtype=bool)
    involved[prev] = True
    receive[prev] = receive[ooo] + rng.integers(1, 500, len(ooo))
    for i, p in zip(ooo.tolist(), prev.tolist(), strict=True):
        detail[i] = (
            f"delivered before the event recorded {config.interval_s:g} s earlier ({ids[p]})"
        )

    late = np.flatnonzero(codes == _LATE)
    delays = (rng.uniform(*LATE_DELAY_S, len(late)) * 1000).astype(np.int64)
    receive[late] += delays
    for i, d in zip(late.tolist(), delays.tolist(), strict=True):
        detail[i] = f"held back {d / 3_600_000:.2f} h"

    injector = Injector(rng, world.ghost_vehicle_ids)
    content = np.flatnonzero((codes != NO_FAULT) & ~np.isin(codes, list(_DELIVERY_CODES)))
    for i in content.tolist():
        lines[i], detail[i] = injector.apply(FAULT_BY_CODE[codes[i]], lines[i], int(true_ms[i]))

    # DUPLICATE: the event itself arrives clean; a byte-identical copy follows within two batches.
    dup = np.flatnonzero(codes == _DUP)
    codes[dup] = NO_FAULT
    dup = dup[~involved[dup]]
    batch_ms = config.gateway_batch_s * 1000
    copy_receive = receive[dup] + rng.integers(1000, 2 * batch_ms, len(dup))
    tid = np.full(n, None, dtype=object)
    faulty = np.flatnonzero(codes != NO_FAULT)
    tid[faulty] = ids.gather(faulty).to_list()
    schema = np.where(samples.v2, 2, 1).astype(np.int8)
    gateway = gateway_of[vehicle].astype(np.int32)
    base = LineBatch(
        data=lines,
        gateway=gateway,
        schema=schema,
        receive=receive,
        vehicle=vehicle.astype(np.int32),
        seq=seq0 + np.arange(n, dtype=np.int64),
        fault=codes,
        true_ms=true_ms,
        tid=tid,
        detail=detail,
        retry=np.zeros(n, dtype=np.int8),
    )
    if not len(dup):
        return base
    copies = base.take(dup)
    copies.receive = copy_receive
    copies.seq = seq0 + n + np.arange(len(dup), dtype=np.int64)
    copies.fault = np.full(len(dup), _DUP, dtype=np.int8)
    copies.tid = _objects(ids.gather(dup).to_list())
    copies.detail = _objects(
        [
            f"re-sent {(c - r) / 1000:.1f} s after the original"
            for c, r in zip(copy_receive.tolist(), receive[dup].tolist(), strict=True)
        ]
    )
    return LineBatch.concat([base, copies])


def _objects(values: list[object]) -> np.ndarray:
    """A 1-D object array (np.array would turn equal-length strings into a 2-D or str array)."""
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _file_draws(seed: int, window: int, schema: int, gateway: int) -> tuple[float, float]:
    """Two uniforms for one file, fixed by its identity (not by what else a run writes)."""
    digest = hashlib.blake2b(
        f"{seed}:{window}:{schema}:{gateway}".encode(), digest_size=16
    ).digest()
    return (int.from_bytes(digest[:8], "big") / 2**64, int.from_bytes(digest[8:], "big") / 2**64)


def landing_path(schema: int, gateway_id: str, arrival_ms: int) -> str:
    """Lake path of a gateway's batch file delivered at `arrival_ms`."""
    at = datetime.fromtimestamp(arrival_ms / 1000, UTC)
    return (
        f"{LANDING_PREFIX}/schema=v{schema}/date={at:%Y-%m-%d}/hour={at:%H}/"
        f"{gateway_id}-{at:%Y%m%dT%H%M}.jsonl.gz"
    )


def _compress_and_write(lake: Lake, rel: str, payload: bytes) -> tuple[str, int, int, str]:
    data = gzip.compress(payload, GZIP_LEVEL, mtime=0)
    lake.write_bytes(rel, data)
    return rel, len(payload), len(data), hashlib.sha256(data).hexdigest()


@dataclass
class WriterStats:
    """What the writer delivered."""

    files: int = 0
    lines: int = 0
    raw_bytes: int = 0
    gzip_bytes: int = 0
    truncated_files: int = 0


class BatchWriter:
    """Holds lines until their gateway's batch window closes, then writes the batch files."""

    def __init__(
        self,
        world: World,
        lake: Lake,
        truth: TruthWriter,
        workers: int = 8,
    ) -> None:
        # Threads, not processes: zlib releases the GIL, and the lake fsyncs every file,
        # so several writes in flight hide the disk latency.
        self.world = world
        self.config: SimConfig = world.config
        self.lake = lake
        self.truth = truth
        self.batch_ms = self.config.gateway_batch_s * 1000
        # Files arriving before the window were written by an earlier run of the same
        # history; files arriving at or after its end belong to the next one.
        self.first_arrival_ms = self.config.start_ms
        self.end_window = (self.config.end_ms - 1) // self.batch_ms
        self.pending = LineBatch.empty()
        self.stats = WriterStats()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="landing-writer")
        self._in_flight: deque[Future[tuple[str, int, int, str]]] = deque()
        self._digests: list[tuple[str, str]] = []

    def add(self, batch: LineBatch) -> None:
        """Lines that reached their gateways (in any order)."""
        self.pending = LineBatch.concat([self.pending, batch])

    def flush(self, until_ms: int | None = None) -> None:
        """Deliver every batch window that closed by `until_ms` (by the run's end if None)."""
        p = self.pending
        if not len(p):
            return
        window = p.receive // self.batch_ms + p.retry
        limit = self.end_window
        if until_ms is not None:
            limit = min(until_ms // self.batch_ms, limit)
        ready_mask = window < limit
        if not ready_mask.any():
            return
        self.pending = p.take(~ready_mask)
        ready = p.take(ready_mask)
        ready_window = window[ready_mask]
        # One sort for all files of all closed windows: file, then gateway receive order.
        order = np.lexsort(
            (ready.seq, ready.vehicle, ready.receive, ready.gateway, ready.schema, ready_window)
        )
        ready, ready_window = ready.take(order), ready_window[order]
        key = (ready_window * 4 + ready.schema) * 1_000_000 + ready.gateway
        bounds = np.flatnonzero(np.diff(key)) + 1
        starts = np.concatenate([[0], bounds]).tolist()
        ends = np.append(bounds, len(ready)).tolist()
        # Batches re-sent after a truncated upload, by (schema, gateway): (window, lines).
        carry: dict[tuple[int, int], tuple[int, LineBatch]] = {}
        for a, b in zip(starts, ends, strict=True):
            w, schema, gateway = int(ready_window[a]), int(ready.schema[a]), int(ready.gateway[a])
            lines = ready.take(slice(a, b))
            held = carry.pop((schema, gateway), None)
            if held is not None and held[0] < w:
                self._deliver_file(held[0], schema, gateway, held[1], carry)
            elif held is not None:
                # Re-sent lines were received earlier: they lead the file.
                lines = LineBatch.concat([held[1], lines])
            self._deliver_file(w, schema, gateway, lines, carry)
        for (schema, gateway), (w, lines) in sorted(carry.items()):
            if w < limit:
                again: dict[tuple[int, int], tuple[int, LineBatch]] = {}
                self._deliver_file(w, schema, gateway, lines, again)
            else:
                self.pending = LineBatch.concat([lines, self.pending])
        self._drain(_MAX_IN_FLIGHT)

    def _deliver_file(
        self,
        window: int,
        schema: int,
        gateway: int,
        lines: LineBatch,
        carry: dict[tuple[int, int], tuple[int, LineBatch]],
    ) -> None:
        """Write one gateway's batch file of a window (or its truncated upload, then re-send it)."""
        arrival_ms = (window + 1) * self.batch_ms
        visible = arrival_ms >= self.first_arrival_ms
        n = len(lines)
        truncate, cut_at = _file_draws(self.config.seed, window, schema, gateway)
        truncate = truncate < self.config.file_fault_rate and not lines.retry.any()
        if not truncate and not visible:
            return
        rel = landing_path(schema, self.world.gateways[gateway], arrival_ms)
        payload = b"\n".join(lines.data.tolist()) + b"\n"
        if not truncate:
            self._in_flight.append(self._pool.submit(_compress_and_write, self.lake, rel, payload))
            self.stats.lines += n
            self._record_faults(lines, 0, n, rel, schema, arrival_ms)
            return
        data = gzip.compress(payload, GZIP_LEVEL, mtime=0)
        data = data[: max(10, int(len(data) * (0.2 + 0.7 * cut_at)))]
        readable = zlib.decompressobj(wbits=31).decompress(data).count(b"\n")
        if visible:
            self._write_truncated(rel, data, readable, schema, gateway, arrival_ms, n)
            self._record_faults(lines, 0, readable, rel, schema, arrival_ms)
        carry[(schema, gateway)] = (
            window + 1,
            self._resend(lines.take(slice(None)), readable, rel),
        )

    @staticmethod
    def _resend(lines: LineBatch, readable: int, rel: str) -> LineBatch:
        """The batch as the gateway re-sends it: lines complete in the cut upload now arrive twice.

        Their second copy is a DUPLICATE unless the line is refused anyway (then it is
        dead-lettered again for its own fault).
        """
        lines.retry = lines.retry + 1
        for i in range(readable):
            code = int(lines.fault[i])
            if code == NO_FAULT or FAULT_BY_CODE[code].disposition != Disposition.DEAD_LETTER:
                lines.fault[i] = _DUP
                lines.tid[i] = orjson.loads(lines.data[i])["telemetry_id"]
                lines.detail[i] = f"re-delivered after the truncated upload {rel}"
        return lines

    def _write_truncated(
        self,
        rel: str,
        data: bytes,
        readable: int,
        schema: int,
        gateway: int,
        arrival_ms: int,
        n: int,
    ) -> None:
        """Write the cut upload and its truth row."""
        self.lake.write_bytes(rel, data)
        self._digests.append((rel, hashlib.sha256(data).hexdigest()))
        next_rel = landing_path(schema, self.world.gateways[gateway], arrival_ms + self.batch_ms)
        self.stats.files += 1
        self.stats.truncated_files += 1
        self.stats.gzip_bytes += len(data)
        self.truth.add_faults(
            {
                "fault_class": [FaultClass.TRUNCATED_FILE.value],
                "telemetry_id": [None],
                "vehicle_id": [None],
                "recorded_at_ms": [None],
                "schema": [schema],
                "file": [rel],
                "line": [readable + 1],
                "arrival_at_ms": [arrival_ms],
                "detail": [
                    f"{n} lines, upload cut after {len(data)} gzip bytes ({readable} complete "
                    f"lines readable); batch re-delivered in {next_rel}"
                ],
            }
        )

    def _record_faults(
        self, lines: LineBatch, a: int, b: int, rel: str, schema: int, arrival_ms: int
    ) -> None:
        faulty = np.flatnonzero(lines.fault[a:b] != NO_FAULT)
        if not len(faulty):
            return
        rows = faulty + a
        vehicles = self.world.vehicles
        self.truth.add_faults(
            {
                "fault_class": [FAULT_BY_CODE[c].value for c in lines.fault[rows].tolist()],
                "telemetry_id": lines.tid[rows].tolist(),
                "vehicle_id": [vehicles[v].vehicle_id for v in lines.vehicle[rows].tolist()],
                "recorded_at_ms": lines.true_ms[rows].tolist(),
                "schema": [schema] * len(rows),
                "file": [rel] * len(rows),
                "line": (faulty + 1).tolist(),
                "arrival_at_ms": [arrival_ms] * len(rows),
                "detail": lines.detail[rows].tolist(),
            }
        )

    def _drain(self, keep: int) -> None:
        while len(self._in_flight) > keep:
            rel, raw, gz, digest = self._in_flight.popleft().result()
            self.stats.files += 1
            self.stats.raw_bytes += raw
            self.stats.gzip_bytes += gz
            self._digests.append((rel, digest))

    def abort(self) -> None:
        """Stop writing after a failure; files already written stay (each is complete)."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> str:
        """Deliver what arrives by the end, wait for the writes; return the landing digest.

        Lines still held by the gateways then (late, or in an open batch) are not
        delivered: the run of the next window regenerates and delivers them.
        """
        try:
            self.flush(None)
            self._drain(0)
        finally:
            self._pool.shutdown(wait=True)
        h = hashlib.sha256()
        for rel, digest in sorted(self._digests):
            h.update(f"{rel} {digest}\n".encode())
        return h.hexdigest()
