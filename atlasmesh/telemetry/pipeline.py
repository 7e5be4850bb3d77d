"""Landing -> processed telemetry over the lake: stage each arrival hour by event hour, build each event hour."""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import orjson
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from atlasmesh.telemetry import policy
from atlasmesh.telemetry.registry import PROCESSED_SCHEMA
from atlasmesh.telemetry.validate import (
    DLQ_SCHEMA,
    UUID_PATTERN,
    ConservationError,
    Deduplicator,
    LandingFile,
    arrival_time_from_path,
    arrow_indices,
    arrow_mask,
    partition_path,
    schema_folder_from_path,
    split_by_event_hour,
    validate_file_groups,
)

if TYPE_CHECKING:
    from atlasmesh.lake import Lake, LakeEntry

LANDING_PREFIX = "landing/telemetry"
STAGING_PREFIX = "staging/vehicle_telemetry"
PROCESSED_PREFIX = "processed/vehicle_telemetry"
DLQ_PREFIX = "dlq/vehicle_telemetry"
ARRIVAL_MANIFESTS = "manifests/vehicle_telemetry/arrival"
EVENT_MANIFESTS = "manifests/vehicle_telemetry/event"
# One file per processed hour and per DLQ hour: replacing one object is atomic on every
# backend (rename on disk, one PUT on S3), so a re-run swaps the whole hour at once.
PART_NAME = "part-00000.parquet"
MANIFEST_NAME = "manifest.json"

# Rows per read batch and per processed row group: ~50 MB of Arrow at ~0.8 KB per event.
BATCH_ROWS = 65_536
# Staging writes a row group per event hour every this many accepted rows; past
# BUFFER_BYTES over all hours (late files touch several) the biggest buffer goes out early.
# Staging runs beside the validator's own blocks: with 64 k rows and 128 MB an arrival hour
# of 3.5 M events peaked at 990 MB RSS, with these at 840 MB.
STAGE_FLUSH_ROWS = 32_768
BUFFER_BYTES = 64 * 2**20
# Dedup keys (~60 bytes each) held at once while building an hour: ~30 MB per bucket (a few
# times that while polars works on it), so an hour of any size deduplicates in bounded memory.
BUCKET_ROWS = 500_000
# S3 dates a multipart upload by when it started, so a slow upload can appear with an
# older time than files already seen; discovery re-checks this window on every call.
DISCOVERY_MARGIN = timedelta(minutes=10)

# Columns that are not part of an event's content (same rule as the validator's Deduplicator).
_NOT_CONTENT = ("telemetry_id", "ingested_at", "source_file", "line_number")
_CONTENT = [c for c in PROCESSED_SCHEMA.names if c not in _NOT_CONTENT]
_SEED = 0x5EED
# Columns with few distinct values per file, worth a Parquet dictionary.
_REPEATED_VALUES = frozenset(
    {"vehicle_id", "operational_status", "schema_version", "firmware_version", "source_file",
     "reason_code", "schema_folder"}
)  # fmt: skip
_HOUR_PATH = re.compile(r"(?:^|/)date=(\d{4}-\d{2}-\d{2})/hour=(\d{2})(?:/|$)")
_ARRIVAL_NAME = re.compile(r"^arrival=(\d{4}-\d{2}-\d{2}T\d{2})\.parquet$")
_UUID = re.compile(UUID_PATTERN)
# The lake's folder for in-progress writes (same filesystem as the targets: rename is atomic).
_SCRATCH = ".staging"


def _on_the_hour(value: datetime, name: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ValueError(
            f"{name}={value!r} must be an aware UTC datetime on the hour, "
            "e.g. datetime(2026, 11, 1, 13, tzinfo=UTC)"
        )
    value = value.astimezone(UTC)
    if value != value.replace(minute=0, second=0, microsecond=0):
        raise ValueError(
            f"{name}={value.isoformat()} is not on the hour; pass the start of the hour "
            f"({value:%Y-%m-%dT%H}:00Z)"
        )
    return value


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def _arrival_tag(hour: datetime) -> str:
    return f"{hour:%Y-%m-%dT%H}"


def hour_of_path(path: str) -> datetime | None:
    """The hour a `.../date=YYYY-MM-DD/hour=HH/...` path is partitioned by, if any."""
    m = _HOUR_PATH.search(path)
    if not m:
        return None
    try:
        return datetime.fromisoformat(f"{m.group(1)}T{m.group(2)}:00:00+00:00")
    except ValueError:  # date=2026-02-30, hour=24: no hour at all, never a crash
        return None


def staged_path(event_hour: datetime, arrival_hour: datetime) -> str:
    """Lake path of the rows of one arrival hour that belong to one event hour."""
    folder = partition_path(STAGING_PREFIX, event_hour)
    return f"{folder}/arrival={_arrival_tag(arrival_hour)}.parquet"


def processed_path(event_hour: datetime) -> str:
    """Lake path of the one Parquet file of a processed event hour."""
    return f"{partition_path(PROCESSED_PREFIX, event_hour)}/{PART_NAME}"


def dlq_path(arrival_hour: datetime) -> str:
    """Lake path of the dead letters of one arrival hour."""
    return f"{partition_path(DLQ_PREFIX, arrival_hour)}/{PART_NAME}"


def arrival_manifest_path(arrival_hour: datetime) -> str:
    """Lake path of the manifest a stage run writes for its arrival hour."""
    return f"{partition_path(ARRIVAL_MANIFESTS, arrival_hour)}/{MANIFEST_NAME}"


def event_manifest_path(event_hour: datetime) -> str:
    """Lake path of the manifest a build run writes for its event hour."""
    return f"{partition_path(EVENT_MANIFESTS, event_hour)}/{MANIFEST_NAME}"


def event_hour_settled(event_hour: datetime, now: datetime | None = None) -> bool:
    """True once an event hour is expected complete (its end plus `PARTITION_SETTLE_DELAY`)."""
    hour = _on_the_hour(event_hour, "event_hour")
    now = datetime.now(UTC) if now is None else now
    return now >= hour + timedelta(hours=1) + policy.PARTITION_SETTLE_DELAY


@contextlib.contextmanager
def _atomic_file(lake: Lake, rel: str) -> Iterator[IO[bytes]]:
    """Write `rel` so readers see the old file or the whole new one; nothing if the block fails.

    On disk the in-progress file lives in the lake's hidden `.staging/` folder, not beside
    the target as `Lake.open` puts it: polars refuses to scan a partition folder holding a
    file without the `.parquet` extension, so a build would break concurrent readers.
    No fsync: these files are derived (re-running the step rewrites them), the rename makes
    them atomic for readers and for a killed process, and the manifest written after them
    through `Lake.write_bytes` is fsynced; one fsync per small file was 3-9 ms of a demo
    hour's ~0.1 s.
    """
    if lake.is_s3:
        # Spooled locally and sent in one PUT (or a multipart upload completed at the end).
        with lake.open(rel, "wb") as f:
            yield f
        return
    scratch = Path(lake.path(_SCRATCH))
    target = Path(lake.path(rel))
    scratch.mkdir(parents=True, exist_ok=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=scratch)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def known_vehicles_from(vehicle_ids: Iterable[str]) -> pa.Array:
    """The fleet-core vehicle ids as validation matches them (lowercase, unique), checked."""
    ids = tuple(vehicle_ids)
    try:
        return _known_vehicles(ids)
    except TypeError:  # an unhashable entry: checked (and refused) without the cache
        return _known_vehicles.__wrapped__(ids)


# A range run passes the same fleet list for every hour: checked and converted once.
@lru_cache(maxsize=4)
def _known_vehicles(ids: tuple[str, ...]) -> pa.Array:
    if not ids:
        raise ValueError(
            "the fleet-core vehicle list is empty: every telemetry record would be "
            "dead-lettered as UNKNOWN_VEHICLE. Extract fleet-core first (or run the simulator), "
            "or pass known_vehicles=None to skip the vehicle check deliberately."
        )
    bad = [v for v in ids if not isinstance(v, str) or not _UUID.match(v.strip())]
    if bad:
        raise ValueError(
            f"{len(bad)} of {len(ids)} fleet-core vehicle ids are not UUID strings (first: "
            f"{bad[0]!r}); pass the `vehicle_id` column of the fleet-core vehicles table."
        )
    # Built through polars: pyarrow's pa.array() of Python values imports pandas (0.4-0.7 s
    # per process, more than staging a demo hour).
    unique = sorted({v.strip().lower() for v in ids})
    return pl.Series(unique, dtype=pl.String).to_arrow().cast(pa.string())


def _dump(obj: dict[str, Any]) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def _read_manifest(lake: Lake, rel: str) -> dict[str, Any] | None:
    try:
        data = lake.read_bytes(rel)
    except FileNotFoundError:
        return None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValueError(
            f"manifest {lake.uri(rel)} is not valid JSON ({exc}); re-run the step that "
            "writes it (stage the arrival hour, or build the event hour) to rewrite it"
        ) from None


@dataclass
class StageResult:
    """What staging one arrival hour did; also its manifest in the lake."""

    arrival_hour: datetime
    files: list[dict[str, Any]]
    received: int
    staged: int
    duplicates: int
    dead_lettered: int
    reasons: dict[str, int]
    event_hours: dict[datetime, int]
    removed_event_hours: list[datetime]
    staged_bytes: int
    dlq_bytes: int
    truncated_files: list[str] = field(default_factory=list)
    empty_files: list[str] = field(default_factory=list)
    # Listed but gone (or a dangling link) when read: nothing received, re-stage once back.
    unreadable_files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    staged_at: datetime | None = None
    elapsed_s: float = 0.0

    @property
    def landing_bytes(self) -> int:
        """Bytes of the landing files read."""
        return sum(int(f["size"]) for f in self.files)

    @property
    def affected_event_hours(self) -> list[datetime]:
        """Event hours whose processed partition must be rebuilt after this run."""
        return sorted(set(self.event_hours) | set(self.removed_event_hours))

    def check(self) -> None:
        """Raise ConservationError unless received == staged + duplicates + dead-lettered."""
        if self.received != self.staged + self.duplicates + self.dead_lettered:
            raise ConservationError(
                f"arrival hour {_iso(self.arrival_hour)}: received {self.received} != staged "
                f"{self.staged} + duplicates {self.duplicates} + dead-lettered "
                f"{self.dead_lettered}"
            )
        if sum(self.event_hours.values()) != self.staged:
            raise ConservationError(
                f"arrival hour {_iso(self.arrival_hour)}: {self.staged} rows staged but the "
                f"event hours hold {sum(self.event_hours.values())}"
            )

    def metadata(self) -> dict[str, Any]:
        """Flat, JSON-friendly figures for materialisation metadata: the manifest, lists counted."""
        figures = self.to_manifest()
        for name in ("notes", "staged_at"):
            del figures[name]
        for name in ("files", "truncated_files", "empty_files", "unreadable_files"):
            figures[name] = len(figures[name])
        figures["event_hours"] = list(figures["event_hours"])
        figures["landing_bytes"] = self.landing_bytes
        figures["conserved"] = self.received == self.staged + self.duplicates + self.dead_lettered
        return figures

    def to_manifest(self) -> dict[str, Any]:
        """The JSON manifest of the arrival hour."""
        return {
            "arrival_hour": _iso(self.arrival_hour),
            "files": self.files,
            "received": self.received,
            "staged": self.staged,
            "duplicates": self.duplicates,
            "dead_lettered": self.dead_lettered,
            "reasons": self.reasons,
            "event_hours": {_iso(h): n for h, n in sorted(self.event_hours.items())},
            "removed_event_hours": [_iso(h) for h in self.removed_event_hours],
            "staged_bytes": self.staged_bytes,
            "dlq_bytes": self.dlq_bytes,
            "truncated_files": self.truncated_files,
            "empty_files": self.empty_files,
            "unreadable_files": self.unreadable_files,
            "notes": self.notes,
            "staged_at": _iso(self.staged_at) if self.staged_at else None,
            "elapsed_s": round(self.elapsed_s, 3),
        }

    @classmethod
    def from_manifest(cls, data: dict[str, Any]) -> StageResult:
        """Read a manifest written by `to_manifest`."""
        return cls(
            arrival_hour=_parse_iso(data["arrival_hour"]),
            files=list(data["files"]),
            received=int(data["received"]),
            staged=int(data["staged"]),
            duplicates=int(data["duplicates"]),
            dead_lettered=int(data["dead_lettered"]),
            reasons={str(k): int(v) for k, v in data["reasons"].items()},
            event_hours={_parse_iso(k): int(v) for k, v in data["event_hours"].items()},
            removed_event_hours=[_parse_iso(h) for h in data["removed_event_hours"]],
            staged_bytes=int(data["staged_bytes"]),
            dlq_bytes=int(data["dlq_bytes"]),
            truncated_files=list(data.get("truncated_files", [])),
            empty_files=list(data.get("empty_files", [])),
            unreadable_files=list(data.get("unreadable_files", [])),
            notes=list(data.get("notes", [])),
            staged_at=_parse_iso(data["staged_at"]) if data.get("staged_at") else None,
            elapsed_s=float(data.get("elapsed_s", 0.0)),
        )


class _DecideAtBuild(Deduplicator):
    """Keeps every accepted row: duplicates are decided once per event hour by the build.

    The build sees every delivery of an event hour in arrival order and deduplicates with
    keys spilled to disk; deduplicating here too would hold every id of the arrival hour in
    memory (~64 bytes per event) and decide the same thing twice.
    """

    def keep_mask(self, table: pa.Table) -> np.ndarray:
        return np.ones(table.num_rows, dtype=bool)

    def filter(self, table: pa.Table) -> tuple[pa.Table, int]:
        return table, 0


def _parquet_writer(f: IO[bytes], schema: pa.Schema) -> pq.ParquetWriter:
    """zstd Parquet; dictionaries only where values repeat (a 25% faster write than everywhere)."""
    repeated = [n for n in schema.names if n in _REPEATED_VALUES]
    return pq.ParquetWriter(f, schema, compression="zstd", use_dictionary=repeated)


@dataclass
class _Sink:
    file: IO[bytes]
    writer: pq.ParquetWriter
    buffer: list[pa.Table] = field(default_factory=list)
    buffered_rows: int = 0
    buffered_bytes: int = 0
    rows: int = 0

    def flush(self) -> None:
        if self.buffer:
            # One row group per flush (about STAGE_FLUSH_ROWS rows), not a full one plus a sliver.
            self.writer.write_table(pa.concat_tables(self.buffer), row_group_size=2**30)
        self.buffer, self.buffered_rows, self.buffered_bytes = [], 0, 0


class _ParquetSinks:
    """Parquet files filled in row groups, published atomically when the exit stack closes."""

    def __init__(self, lake: Lake, stack: contextlib.ExitStack, schema: pa.Schema) -> None:
        self.lake = lake
        self.stack = stack
        self.schema = schema
        self.sinks: dict[str, _Sink] = {}

    def add(self, rel: str, table: pa.Table) -> None:
        if not table.num_rows:
            return
        sink = self.sinks.get(rel)
        if sink is None:
            f = self.stack.enter_context(_atomic_file(self.lake, rel))
            # Entered after its file, so it is closed first (closing twice is a no-op).
            writer = self.stack.enter_context(_parquet_writer(f, self.schema))
            sink = self.sinks[rel] = _Sink(f, writer)
        sink.buffer.append(table)
        sink.buffered_rows += table.num_rows
        sink.buffered_bytes += table.nbytes
        sink.rows += table.num_rows
        if sink.buffered_rows >= STAGE_FLUSH_ROWS:
            sink.flush()
        while sum(s.buffered_bytes for s in self.sinks.values()) > BUFFER_BYTES:
            max(self.sinks.values(), key=lambda s: s.buffered_bytes).flush()

    def close(self) -> dict[str, tuple[int, int]]:
        """Write what is buffered and close every writer; (rows, bytes) per file."""
        out = {}
        for rel, sink in self.sinks.items():
            sink.flush()
            sink.writer.close()
            out[rel] = (sink.rows, sink.file.tell())
        return out


def landing_files(lake: Lake, arrival_hour: datetime) -> list[LakeEntry]:
    """The landing files of one arrival hour in every `schema=` folder, sorted by path."""
    return _landing_listing(lake, arrival_hour)[0]


def _landing_listing(lake: Lake, arrival_hour: datetime) -> tuple[list[LakeEntry], list[LakeEntry]]:
    """An arrival hour's uploads, and what else its folders hold (hidden files, folders), by path."""
    hour = _on_the_hour(arrival_hour, "arrival_hour")
    found: list[LakeEntry] = []
    hidden: list[LakeEntry] = []
    for folder in lake.ls(LANDING_PREFIX):
        if not folder.is_dir or not folder.path.rsplit("/", 1)[-1].startswith("schema="):
            continue
        for entry in lake.ls(partition_path(folder.path, hour)):
            if _is_upload(entry) and _utf8_name(entry.path):
                found.append(entry)
            else:
                hidden.append(entry)
    return sorted(found, key=lambda e: e.path), sorted(hidden, key=lambda e: e.path)


def _not_read(entry: LakeEntry) -> str:
    """The manifest note for an entry of an hour folder that staging does not read."""
    path = entry.path
    if not _utf8_name(path):
        return f"{printable_path(path)}: not read: {_NOT_UTF8}"
    if path.rsplit("/", 1)[-1].startswith((".", "_")):
        return (
            f"{path}: not read (a name starting with '.' or '_' marks another tool's temporary "
            "or marker file, not a gateway upload); rename it to ingest it"
        )
    return (
        f"{path}: a folder, not read (uploads are files directly in the hour folder); "
        "move its files up to ingest them"
    )


def _is_upload(entry: LakeEntry) -> bool:
    # Hidden names are other tools' markers and temp files, never gateway uploads.
    return not entry.is_dir and not entry.path.rsplit("/", 1)[-1].startswith((".", "_"))


def _landing_file(
    lake: Lake, entry: LakeEntry, hour: datetime, notes: list[str], unreadable: dict[str, str]
) -> LandingFile:
    try:
        arrival = arrival_time_from_path(entry.path)
    except ValueError:
        arrival = _loose_arrival(entry.path)
        if arrival is not None:
            notes.append(
                f"{entry.path}: name does not end in .jsonl.gz; validated as arriving at "
                f"{_iso(arrival)} (the minute in its name), its bytes read as gzip or plain "
                "JSON lines"
            )
        else:
            # A file the gateways did not name still gets validated (it must not disappear);
            # the last minute of its folder's hour is the best arrival time it has.
            arrival = hour + timedelta(minutes=59)
            notes.append(
                f"{entry.path}: name has no -<YYYYMMDDTHHMM> arrival minute; validated as "
                f"arriving at {_iso(arrival)}"
            )
    if not hour <= arrival < hour + timedelta(hours=1):
        notes.append(
            f"{entry.path}: arrival minute {_iso(arrival)} in its name is outside its "
            f"arrival-hour folder {_iso(hour)}; its dead letters stay with the folder's hour"
        )
    return LandingFile(
        entry.path,
        arrival,
        _reader(lake, entry.path, unreadable),
        schema_folder_from_path(entry.path),
    )


# The gateways' minute before any other extension (`.json.gz`, `.JSONL.GZ`, `.gz`, none).
_LOOSE_NAME = re.compile(r"-(\d{8}T\d{4})(?:\.[A-Za-z0-9.]*)?$")


def _loose_arrival(path: str) -> datetime | None:
    m = _LOOSE_NAME.search(path.rsplit("/", 1)[-1])
    if not m:
        return None
    try:
        return datetime.strptime(m.group(1), "%Y%m%dT%H%M").replace(tzinfo=UTC)
    except ValueError:
        return None


def _reader(lake: Lake, rel: str, unreadable: dict[str, str]) -> Callable[[], bytes]:
    """A function reading one landing file's bytes; a file gone since the listing reads as none."""
    path = lake.path(rel)

    def read() -> bytes:
        try:
            # On disk without fsspec: its ~0.4 ms per call is a tenth of a gateway-minute
            # file's work.
            if lake.is_s3:
                return lake.read_bytes(rel)
            try:
                with open(path, "rb") as f:
                    return f.read()
            except PermissionError:
                return lake.read_bytes(rel)  # raises the lake's error, which says how to fix it
        except FileNotFoundError:
            # Deleted after the listing, or a link to nothing: no lines to count, and one
            # missing file must not stop the hour (its rerun reads it if it comes back).
            unreadable[rel] = (
                "listed but gone when read (deleted since, or a link to a missing file); "
                "nothing read from it: re-stage the hour once it is back"
            )
            return b""

    return read


def stage_arrival_hour(
    lake: Lake,
    arrival_hour: datetime,
    *,
    known_vehicles: Iterable[str] | pa.Array | None,
) -> StageResult:
    """Validate one arrival hour's landing files; stage accepted rows by event hour, DLQ the rest.

    Writes `staging/.../date=/hour=/arrival=<hour>.parquet` per touched event hour, the dead
    letters to the arrival hour's DLQ partition and the manifest last. A re-run rewrites
    exactly its own files and deletes the ones a previous run wrote that no longer apply.
    `known_vehicles=None` skips the fleet-core vehicle check.
    """
    started = time.perf_counter()
    hour = _on_the_hour(arrival_hour, "arrival_hour")
    known = None
    if known_vehicles is not None:
        known = (
            known_vehicles
            if isinstance(known_vehicles, pa.Array)
            else known_vehicles_from(known_vehicles)
        )
    previous = read_stage_manifest(lake, hour)
    entries, hidden = _landing_listing(lake, hour)
    # Not validated, so not counted as received, but never silently: the note says why.
    notes = [_not_read(entry) for entry in hidden]
    unreadable: dict[str, str] = {}
    files = [_landing_file(lake, e, hour, notes, unreadable) for e in entries]
    # Arrival order: the first delivery of an event wins, and files of one minute and folder
    # are validated together.
    files.sort(key=lambda f: (f.arrival_time, f.schema_folder or "", f.path))
    received = dead_lettered = duplicates = accepted = 0
    reasons: dict[str, int] = {}
    truncated: list[str] = []
    empty: list[str] = []
    with contextlib.ExitStack() as stack:
        staged_sinks = _ParquetSinks(lake, stack, PROCESSED_SCHEMA)
        dlq_sinks = _ParquetSinks(lake, stack, DLQ_SCHEMA)
        groups = validate_file_groups(files, known_vehicles=known, deduplicator=_DecideAtBuild())
        for group in groups:
            for res in group.results:
                received += res.received
                accepted += res.accepted.num_rows
                duplicates += res.duplicates
                dead_lettered += res.dead_lettered
                if res.truncated:
                    truncated.append(res.source_file)
                if res.empty and res.source_file not in unreadable:
                    empty.append(res.source_file)
            # Rows go to the sinks a group at a time: gateway-minute files hold a few dozen
            # events each, and splitting and buffering each one cost more than validating it.
            for event_hour, part in split_by_event_hour(group.accepted):
                staged_sinks.add(staged_path(event_hour, hour), part)
            if group.dead_letters.num_rows:
                counts = pc.value_counts(group.dead_letters.column("reason_code"))
                for code, n in zip(
                    counts.field("values").to_pylist(),
                    counts.field("counts").to_pylist(),
                    strict=True,
                ):
                    reasons[code] = reasons.get(code, 0) + n
                dlq_sinks.add(dlq_path(hour), group.dead_letters)
        staged = staged_sinks.close()
        dlq = dlq_sinks.close()
        written = sum(rows for rows, _ in staged.values())
        dlq_rows = sum(rows for rows, _ in dlq.values())
        if written != accepted or dlq_rows != dead_lettered:
            # Leaving the stack with an error publishes nothing.
            raise ConservationError(
                f"arrival hour {_iso(hour)}: validated {accepted} accepted and {dead_lettered} "
                f"dead-lettered rows but wrote {written} staged and {dlq_rows} DLQ rows"
            )
    # Read when validation reached them, so a file gone by then is noted here.
    notes += [f"{path}: {why}" for path, why in unreadable.items()]
    event_hours = {hour_of_path(rel): rows for rel, (rows, _) in staged.items()}
    removed = _remove_stale_staging(lake, hour, set(staged), previous, set(event_hours))
    if not dlq:
        lake.rm(dlq_path(hour), missing_ok=True)
    result = StageResult(
        arrival_hour=hour,
        files=[{"path": e.path, "size": e.size} for e in entries],
        received=received,
        staged=accepted,
        duplicates=duplicates,
        dead_lettered=dead_lettered,
        reasons=dict(sorted(reasons.items())),
        event_hours={h: n for h, n in sorted(event_hours.items()) if h is not None},
        removed_event_hours=removed,
        staged_bytes=sum(size for _, size in staged.values()),
        dlq_bytes=sum(size for _, size in dlq.values()),
        truncated_files=truncated,
        empty_files=empty,
        unreadable_files=sorted(unreadable),
        notes=notes,
        staged_at=datetime.now(UTC).replace(microsecond=0),
    )
    result.check()
    result.elapsed_s = time.perf_counter() - started
    # Written last: a manifest means the whole arrival hour is staged.
    lake.write_bytes(arrival_manifest_path(hour), _dump(result.to_manifest()))
    return result


def _remove_stale_staging(
    lake: Lake,
    arrival_hour: datetime,
    keep: set[str],
    previous: StageResult | None,
    touched: set[datetime | None],
) -> list[datetime]:
    """Delete staged files of this arrival hour for event hours it no longer touches.

    Returns those event hours, plus hours emptied by an earlier run whose processed file
    still holds rows of this arrival hour (the rebuild has not happened yet): re-running a
    stage twice must not make a needed rebuild disappear from `affected_event_hours`.
    """
    removed: set[datetime] = set()
    for path in _staged_of_arrival(lake, arrival_hour):
        if path not in keep:
            lake.rm(path, missing_ok=True)
            hour = hour_of_path(path)
            if hour is not None:
                removed.add(hour)
    if previous is not None:
        earlier = set(previous.event_hours) | set(previous.removed_event_hours)
        for hour in earlier - touched - removed:
            built = read_build_manifest(lake, hour)
            if built is not None and arrival_hour in built.arrival_hours:
                removed.add(hour)
    return sorted(removed)


def _staged_of_arrival(lake: Lake, arrival_hour: datetime) -> list[str]:
    """Every staged file of one arrival hour, whatever event hour holds it."""
    name = staged_path(arrival_hour, arrival_hour).rsplit("/", 1)[-1]
    if lake.is_s3:
        return [e.path for e in lake.glob(f"{STAGING_PREFIX}/date=*/hour=*/{name}")]
    # On disk, fsspec's glob stats every staged file of the lake (0.15 s per stage on a
    # week-old lake, growing with its age); looking for the one name per hour folder does not.
    found = []
    for day in _subfolders(Path(lake.path(STAGING_PREFIX)), "date="):
        for hour in _subfolders(day, "hour="):
            if (hour / name).is_file():
                found.append(f"{STAGING_PREFIX}/{day.name}/{hour.name}/{name}")
    return sorted(found)


def _subfolders(folder: Path, prefix: str) -> list[Path]:
    try:
        with os.scandir(folder) as it:
            return [Path(e.path) for e in it if e.name.startswith(prefix) and e.is_dir()]
    except FileNotFoundError:
        return []


def read_stage_manifest(lake: Lake, arrival_hour: datetime) -> StageResult | None:
    """The manifest of a staged arrival hour, or None if it was never staged."""
    data = _read_manifest(lake, arrival_manifest_path(_on_the_hour(arrival_hour, "arrival_hour")))
    return None if data is None else StageResult.from_manifest(data)


def affected_event_hours(lake: Lake, arrival_hour: datetime) -> list[datetime]:
    """Event hours the last stage run of an arrival hour wrote or emptied: the ones to rebuild."""
    manifest = read_stage_manifest(lake, arrival_hour)
    if manifest is None:
        raise FileNotFoundError(
            f"arrival hour {_iso(_on_the_hour(arrival_hour, 'arrival_hour'))} has no stage "
            f"manifest at {lake.uri(arrival_manifest_path(arrival_hour))}; stage it first "
            "(stage_arrival_hour)"
        )
    return manifest.affected_event_hours


def is_staged(lake: Lake, arrival_hour: datetime) -> bool:
    """True when the arrival hour's manifest lists exactly its current landing files and sizes."""
    manifest = read_stage_manifest(lake, arrival_hour)
    if manifest is None:
        return False
    current = [{"path": e.path, "size": e.size} for e in landing_files(lake, arrival_hour)]
    return current == manifest.files


@dataclass
class BuildResult:
    """What building one processed event hour did; also its manifest in the lake."""

    event_hour: datetime
    arrival_hours: list[datetime]
    staged: int
    accepted: int
    duplicates: int
    accepted_by_arrival: dict[datetime, int]
    duplicates_by_arrival: dict[datetime, int]
    checksum: str
    processed_file: str | None
    processed_bytes: int
    buckets: int = 0
    published_at: datetime | None = None
    elapsed_s: float = 0.0

    @property
    def late_rows(self) -> int:
        """Accepted rows delivered in a later arrival hour than their event hour."""
        return sum(n for a, n in self.accepted_by_arrival.items() if a > self.event_hour)

    def check(self) -> None:
        """Raise ConservationError unless staged == accepted + duplicates (also per arrival hour)."""
        if self.staged != self.accepted + self.duplicates:
            raise ConservationError(
                f"event hour {_iso(self.event_hour)}: staged {self.staged} != accepted "
                f"{self.accepted} + duplicates {self.duplicates}"
            )
        if sum(self.accepted_by_arrival.values()) != self.accepted or (
            sum(self.duplicates_by_arrival.values()) != self.duplicates
        ):
            raise ConservationError(
                f"event hour {_iso(self.event_hour)}: per-arrival counts do not add up"
            )

    def metadata(self) -> dict[str, Any]:
        """Flat, JSON-friendly figures for materialisation metadata: the manifest's totals."""
        figures = self.to_manifest()
        for name in ("accepted_by_arrival", "duplicates_by_arrival", "processed_file"):
            del figures[name]
        figures["dedup_buckets"] = figures.pop("buckets")
        figures["conserved"] = self.staged == self.accepted + self.duplicates
        return figures

    def to_manifest(self) -> dict[str, Any]:
        """The JSON manifest of the event hour."""
        return {
            "event_hour": _iso(self.event_hour),
            "arrival_hours": [_iso(a) for a in self.arrival_hours],
            "staged": self.staged,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "accepted_by_arrival": {_iso(a): n for a, n in self.accepted_by_arrival.items()},
            "duplicates_by_arrival": {_iso(a): n for a, n in self.duplicates_by_arrival.items()},
            "late_rows": self.late_rows,
            "checksum": self.checksum,
            "processed_file": self.processed_file,
            "processed_bytes": self.processed_bytes,
            "buckets": self.buckets,
            "published_at": _iso(self.published_at) if self.published_at else None,
            "elapsed_s": round(self.elapsed_s, 3),
        }

    @classmethod
    def from_manifest(cls, data: dict[str, Any]) -> BuildResult:
        """Read a manifest written by `to_manifest`."""
        return cls(
            event_hour=_parse_iso(data["event_hour"]),
            arrival_hours=[_parse_iso(a) for a in data["arrival_hours"]],
            staged=int(data["staged"]),
            accepted=int(data["accepted"]),
            duplicates=int(data["duplicates"]),
            accepted_by_arrival={
                _parse_iso(a): int(n) for a, n in data["accepted_by_arrival"].items()
            },
            duplicates_by_arrival={
                _parse_iso(a): int(n) for a, n in data["duplicates_by_arrival"].items()
            },
            checksum=str(data["checksum"]),
            processed_file=data.get("processed_file"),
            processed_bytes=int(data["processed_bytes"]),
            buckets=int(data.get("buckets", 0)),
            published_at=_parse_iso(data["published_at"]) if data.get("published_at") else None,
            elapsed_s=float(data.get("elapsed_s", 0.0)),
        )


def staged_files(lake: Lake, event_hour: datetime) -> list[tuple[datetime, str]]:
    """(arrival hour, path) of every staged file of an event hour, in arrival order."""
    hour = _on_the_hour(event_hour, "event_hour")
    out = []
    for entry in lake.ls(partition_path(STAGING_PREFIX, hour)):
        m = _ARRIVAL_NAME.match(entry.path.rsplit("/", 1)[-1])
        if m and not entry.is_dir:
            out.append((datetime.fromisoformat(f"{m.group(1)}:00:00+00:00"), entry.path))
    return sorted(out)


def read_build_manifest(lake: Lake, event_hour: datetime) -> BuildResult | None:
    """The manifest of a built event hour, or None if it was never built."""
    data = _read_manifest(lake, event_manifest_path(_on_the_hour(event_hour, "event_hour")))
    return None if data is None else BuildResult.from_manifest(data)


def build_event_hour(
    lake: Lake,
    event_hour: datetime,
    *,
    bucket_rows: int = BUCKET_ROWS,
    work_dir: str | Path | None = None,
) -> BuildResult:
    """Rebuild one processed event hour from all its staged deliveries, without duplicates.

    Staged files are read in arrival order so the first delivery of an event wins; rows
    whose telemetry_id, or whose vehicle, recorded_at and content, came earlier are dropped.
    Dedup keys are spilled to `work_dir` (the system temp folder by default) in buckets of
    about `bucket_rows`, so memory does not grow with the hour. The hour is one Parquet file
    replaced in one step: readers see the old hour or the new one.
    """
    started = time.perf_counter()
    hour = _on_the_hour(event_hour, "event_hour")
    if bucket_rows < 1:
        raise ValueError(f"bucket_rows must be at least 1, got {bucket_rows}")
    sources = staged_files(lake, hour)
    out_rel = processed_path(hour)
    staged = _StagedFiles(lake, sources)
    total = staged.total
    accepted_by: dict[datetime, int] = {}
    dups_by: dict[datetime, int] = {}
    checksum = 0
    buckets = max(1, math.ceil(total / bucket_rows))
    processed_file: str | None = None
    size = 0
    if total:
        id_dups, shared_slots = _scan_keys(staged, hour, buckets, work_dir)
        contents = _SeenContents()
        with _atomic_file(lake, out_rel) as f:
            base = 0
            with (
                _parquet_writer(f, PROCESSED_SCHEMA) as writer,
                _RowGroups(writer) as groups,
            ):
                for arrival, rel in sources:
                    for batch in staged.batches(rel):
                        n = batch.num_rows
                        keep = np.ones(n, dtype=bool)
                        keep[_within(id_dups, base, n)] = False
                        keep[contents.duplicates(batch, _within(shared_slots, base, n))] = False
                        base += n
                        kept = batch if keep.all() else batch.filter(arrow_mask(keep))
                        accepted_by[arrival] = accepted_by.get(arrival, 0) + kept.num_rows
                        dups_by[arrival] = dups_by.get(arrival, 0) + n - kept.num_rows
                        groups.add(kept)
                checksum = groups.close()
            size = f.tell()
            if base != total:
                raise ConservationError(
                    f"event hour {_iso(hour)}: staged files declare {total} rows but "
                    f"{base} were read; nothing was published"
                )
        processed_file = out_rel
    _remove_other_parts(lake, hour, keep=processed_file)
    accepted = sum(accepted_by.values())
    result = BuildResult(
        event_hour=hour,
        arrival_hours=[a for a, _ in sources],
        staged=total,
        accepted=accepted,
        duplicates=total - accepted,
        accepted_by_arrival=accepted_by,
        duplicates_by_arrival=dups_by,
        checksum=f"{checksum:016x}",
        processed_file=processed_file,
        processed_bytes=size,
        buckets=buckets if total else 0,
        published_at=datetime.now(UTC),
    )
    result.check()
    result.elapsed_s = time.perf_counter() - started
    lake.write_bytes(event_manifest_path(hour), _dump(result.to_manifest()))
    return result


def _parquet_file(f: Any) -> pq.ParquetFile:
    # Without pre-buffering a reader holds one column chunk at a time: reading a staged hour
    # of 3.5 M events peaked at 600 MB with it, 420 MB without.
    return pq.ParquetFile(f, pre_buffer=False)


class _StagedFiles:
    """The staged files of an event hour: held in memory when they total one batch, else streamed.

    A demo hour is ~4,000 rows in 3-5 files: opening each file three times (row count, keys,
    rows) cost more than reading it. A larger hour is streamed a batch at a time as before,
    so memory stays bounded by a batch either way.
    """

    def __init__(self, lake: Lake, sources: list[tuple[datetime, str]]) -> None:
        self.lake = lake
        self.sources = sources
        self.total = 0
        self.tables: dict[str, pa.Table] | None = {}
        fs = lake.pyarrow_filesystem()
        for _, rel in sources:
            with fs.open_input_file(lake.path(rel)) as f:
                parquet = _parquet_file(f)
                self.total += parquet.metadata.num_rows
                if self.tables is not None and self.total <= BATCH_ROWS:
                    self.tables[rel] = parquet.read()
                else:
                    self.tables = None

    def uri(self, rel: str) -> str:
        """Where a staged file is, for messages."""
        return self.lake.uri(rel)

    def batches(self, rel: str, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
        """A staged file's rows in file order; whole PROCESSED_SCHEMA rows unless `columns`."""
        if self.tables is not None:
            table = self.tables[rel]
            found = table.select(columns) if columns else table
            batches: Iterable[pa.RecordBatch] = found.to_batches(max_chunksize=BATCH_ROWS)
            yield from batches if columns else map(_conform, batches)
            return
        fs = self.lake.pyarrow_filesystem()
        with fs.open_input_file(self.lake.path(rel)) as f:
            for batch in _parquet_file(f).iter_batches(batch_size=BATCH_ROWS, columns=columns):
                yield batch if columns else _conform(batch)


class _RowGroups:
    """Kept rows written in row groups of up to BATCH_ROWS, and their content checksum."""

    # A row group per staged batch made a demo hour 4-5 groups of ~1,000 rows, each write
    # ~5 ms of fixed cost; the checksum is a sum over rows, so grouping does not change it.
    # Each group is written in a thread of its own while the next is read and deduplicated
    # (the Parquet encoder and zstd release the GIL; the build used 1.2 of 2 cores): a
    # 3.5 M-row hour 7.4-7.7 -> 5.8-6.1 s. One write at a time, in order, so memory holds
    # the group being written and the one being gathered.
    def __init__(self, writer: pq.ParquetWriter) -> None:
        self.writer = writer
        self.pending: list[pa.RecordBatch] = []
        self.rows = 0
        self.checksum = 0
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="atlasmesh-build")
        self.writing: Future[None] | None = None

    def __enter__(self) -> _RowGroups:
        return self

    def __exit__(self, *exc: object) -> None:
        # The writer must not be closed under a write in flight, even when leaving on an error.
        try:
            if self.writing is not None and exc[0] is None:
                self.writing.result()
        finally:
            self.pool.shutdown(wait=True)

    def add(self, batch: pa.RecordBatch) -> None:
        if not batch.num_rows:
            return
        if self.rows + batch.num_rows > BATCH_ROWS:
            self.flush()
        self.pending.append(batch)
        self.rows += batch.num_rows

    def flush(self) -> None:
        if self.pending:
            table = pa.Table.from_batches(self.pending, schema=PROCESSED_SCHEMA)
            self.checksum = (self.checksum + _row_hash_sum(table)) % 2**64
            if self.writing is not None:
                self.writing.result()  # in order, and a failed write stops the build here
            self.writing = self.pool.submit(
                self.writer.write_table, table, row_group_size=BATCH_ROWS
            )
        self.pending, self.rows = [], 0

    def close(self) -> int:
        """Write what is pending and wait for it; the checksum of every row written."""
        self.flush()
        if self.writing is not None:
            self.writing.result()
            self.writing = None
        return self.checksum


def _conform(batch: pa.RecordBatch) -> pa.RecordBatch:
    if batch.schema.equals(PROCESSED_SCHEMA, check_metadata=False):
        return batch
    names = set(batch.schema.names)
    arrays = [
        batch.column(f.name).cast(f.type) if f.name in names else pa.nulls(batch.num_rows, f.type)
        for f in PROCESSED_SCHEMA
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=PROCESSED_SCHEMA)


_ID = ["telemetry_id"]
_SLOT = ["vehicle_id", "recorded_at"]


def _scan_keys(
    staged: _StagedFiles, hour: datetime, buckets: int, work_dir: str | Path | None
) -> tuple[np.ndarray, np.ndarray]:
    """Positions (arrival order) of repeated telemetry_ids, and of rows sharing a vehicle and time.

    Reads only the three key columns. A repeated id after its first delivery is a
    duplicate; rows that share (vehicle, recorded_at) with another row are only candidates,
    decided on content by `_SeenContents` while the hour is written (they are few: a
    vehicle records one event per instant).
    """
    with contextlib.ExitStack() as stack:
        # One bucket is kept in memory (it is at most bucket_rows keys, what a bucket read
        # back from disk holds anyway); only several buckets are spilled to disk.
        tmp = None
        if buckets > 1:
            tmp = Path(
                stack.enter_context(
                    tempfile.TemporaryDirectory(prefix="atlasmesh-dedup-", dir=work_dir)
                )
            )
        spills = {"id": _Spill(tmp, "id", buckets), "slot": _Spill(tmp, "slot", buckets)}
        base = 0
        start_ms = int(hour.timestamp() * 1000)
        for _, rel in staged.sources:
            for batch in staged.batches(rel, columns=_ID + _SLOT):
                recorded = batch.column("recorded_at").cast(pa.timestamp("ms", tz="UTC"))
                low, high = pc.min_max(recorded).values()
                # Compared as epoch milliseconds: a zoned TimestampScalar.as_py() imports pandas.
                if low.value < start_ms or high.value >= start_ms + 3_600_000:
                    raise ValueError(
                        f"staged file {staged.uri(rel)} holds rows recorded between {low} and "
                        f"{high}, outside its event hour {_iso(hour)}; delete it and re-stage "
                        "its arrival hour"
                    )
                n = batch.num_rows
                keys = pl.from_arrow(batch).with_columns(
                    pl.int_range(base, base + n, dtype=pl.Int64).alias("row")
                )
                base += n
                spills["id"].add(keys.select(*_ID, "row"), _ID)
                spills["slot"].add(keys.select(*_SLOT, "row"), _SLOT)
        # Rows of a bucket are in arrival order: the first distinct one is the first delivery.
        repeated = _positions(spills["id"], ~pl.col("telemetry_id").is_first_distinct())
        shared = _positions(spills["slot"], pl.struct(_SLOT).is_duplicated())
    return repeated, shared


def _positions(buckets: Iterable[pl.DataFrame], where: pl.Expr) -> np.ndarray:
    """Sorted positions of the rows matching `where`, one bucket in memory at a time."""
    # Copied out as numpy: a filtered polars frame keeps the bucket's string buffers alive.
    found = [f.filter(where)["row"].to_numpy().copy() for f in buckets]
    return np.unique(np.concatenate([np.zeros(0, dtype=np.int64), *found]))


def _within(positions: np.ndarray, base: int, n: int) -> np.ndarray:
    """The sorted positions falling in [base, base + n), relative to base."""
    lo, hi = np.searchsorted(positions, [base, base + n])
    return positions[lo:hi] - base


class _SeenContents:
    """(vehicle, recorded_at, content hash) of candidate rows already delivered in this hour."""

    def __init__(self) -> None:
        self.seen: pl.DataFrame | None = None

    def duplicates(self, batch: pa.RecordBatch, rows: np.ndarray) -> np.ndarray:
        """Of `rows` (positions in the batch, ascending), those whose content came earlier."""
        if not len(rows):
            return rows
        key = [*_SLOT, "content"]
        frame = pl.from_arrow(batch.take(arrow_indices(rows))).select(
            *_SLOT,
            # 64 bits suffice: a collision must also share the vehicle and the millisecond.
            pl.struct(_CONTENT).hash(seed=_SEED).alias("content"),
        )
        first = frame.select(pl.struct(key).is_first_distinct()).to_series().to_numpy()
        dup = ~first
        if self.seen is not None:
            hit = frame.with_row_index("i").join(self.seen, on=key, how="semi")["i"]
            dup[hit.to_numpy()] = True
        new = frame.filter(pl.Series(first)).select(key)
        self.seen = new if self.seen is None else pl.concat([self.seen, new])
        return rows[dup]


class _Spill:
    """Key frames hash-partitioned into bucket files on disk, read back one bucket at a time.

    With one bucket (`tmp` None) the frames stay in memory: a bucket is read whole anyway.
    """

    def __init__(self, tmp: Path | None, name: str, buckets: int) -> None:
        self.folder = None if tmp is None else tmp / name
        if self.folder is not None:
            self.folder.mkdir(parents=True)
        self.n = buckets
        self.writers: dict[int, pa.ipc.RecordBatchFileWriter] = {}
        self.frames: list[pl.DataFrame] = []

    def add(self, frame: pl.DataFrame, key: list[str]) -> None:
        if self.folder is None:
            self.frames.append(frame)
            return
        if self.n == 1:
            self._write(0, frame)
            return
        bucket = pl.struct(key).hash(seed=_SEED) % self.n
        parts = frame.with_columns(bucket.alias("__bucket")).partition_by(
            "__bucket", as_dict=True, include_key=False
        )
        for (b,), part in parts.items():
            self._write(int(b), part)

    def _write(self, bucket: int, frame: pl.DataFrame) -> None:
        assert self.folder is not None
        table = frame.to_arrow()
        writer = self.writers.get(bucket)
        if writer is None:
            writer = pa.ipc.new_file(str(self.folder / f"{bucket}.arrow"), table.schema)
            self.writers[bucket] = writer
        writer.write_table(table)

    def __iter__(self) -> Iterator[pl.DataFrame]:
        if self.folder is None:
            if self.frames:
                yield pl.concat(self.frames)
            return
        for writer in self.writers.values():
            writer.close()
        for bucket in sorted(self.writers):
            with pa.memory_map(str(self.folder / f"{bucket}.arrow")) as source:
                yield pl.from_arrow(pa.ipc.open_file(source).read_all())


def content_checksum(table: pa.Table) -> str:
    """The checksum `build_event_hour` reports, for any rows in PROCESSED_SCHEMA (order-free)."""
    total = sum(_row_hash_sum(b) for b in table.cast(PROCESSED_SCHEMA).to_batches())
    return f"{total % 2**64:016x}"


def _row_hash_sum(batch: pa.RecordBatch | pa.Table) -> int:
    """Order-independent content checksum of rows: the wrapping sum of their row hashes."""
    hashes = pl.from_arrow(batch).hash_rows(seed=_SEED).to_numpy()
    return int(hashes.sum(dtype=np.uint64))


def _remove_other_parts(lake: Lake, hour: datetime, keep: str | None) -> None:
    """Delete Parquet files of the hour other than the one just built (earlier layouts, writers)."""
    for entry in lake.ls(partition_path(PROCESSED_PREFIX, hour)):
        if not entry.is_dir and entry.path.endswith(".parquet") and entry.path != keep:
            lake.rm(entry.path, missing_ok=True)


@dataclass(frozen=True)
class LandingChanges:
    """Landing files new since a cursor, the arrival hours they fall in, and the next cursor."""

    files: list[LakeEntry]
    arrival_hours: list[datetime]
    cursor: str
    # New files no arrival hour will read (outside schema=/date=/hour=HH/, or in a folder that
    # names no real hour), each with what is wrong and how to fix it.
    misplaced: list[tuple[LakeEntry, str]] = field(default_factory=list)


def _file_key(entry: LakeEntry) -> str:
    mtime = entry.mtime.timestamp() if entry.mtime else 0.0
    text = f"{entry.path}\x00{entry.size}\x00{mtime:.6f}"
    # surrogateescape: a name that is not UTF-8 is still a file to fingerprint, not a crash.
    data = text.encode("utf-8", "surrogateescape")
    return hashlib.sha1(data, usedforsecurity=False).hexdigest()[:16]


def _parse_cursor(cursor: str | None) -> tuple[datetime | None, set[str]]:
    if not cursor:
        return None, set()
    try:
        data = orjson.loads(cursor)
        after = _parse_iso(data["after"]) if data["after"] else None
        return after, set(data["seen"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        raise ValueError(
            f"landing cursor {cursor[:80]!r} was not made by list_arrival_hours; reset the "
            "sensor cursor (an empty cursor re-lists every landing file)"
        ) from None


def _landing_entries(
    lake: Lake, min_date: date | None
) -> tuple[list[LakeEntry], list[tuple[LakeEntry, str]]]:
    """Uploads in `schema=*/date=/hour=HH/`, and the other files of the landing tree with why."""
    entries: list[LakeEntry] = []
    misplaced: list[tuple[LakeEntry, str]] = []

    def stray(folder: str, why: str) -> None:
        # A folder no stage reads: its files are reported, not passed over in silence.
        for e in lake.find(folder):
            if _is_upload(e):
                misplaced.append((e, why))

    for folder in lake.ls(LANDING_PREFIX):
        name = folder.path.rsplit("/", 1)[-1]
        if not folder.is_dir or not name.startswith("schema="):
            where = "a file" if not folder.is_dir else f"folder {name}"
            why = (
                f"{where} directly under {LANDING_PREFIX}/: uploads go to schema=vN/date=/hour=HH/"
            )
            if folder.is_dir:
                stray(folder.path, why)
            elif _is_upload(folder):
                misplaced.append((folder, why))
            continue
        for day in lake.ls(folder.path):
            day_name = day.path.rsplit("/", 1)[-1]
            if not day.is_dir or not _is_day(day_name):
                why = (
                    f"folder {day_name!r} under {name} is not date=YYYY-MM-DD of a real day"
                    if day.is_dir
                    else f"directly in {name}, outside any date=YYYY-MM-DD/hour=HH folder"
                )
                if day.is_dir:
                    stray(day.path, why)
                elif _is_upload(day):
                    misplaced.append((day, why))
                continue
            if min_date is not None and day_name.removeprefix("date=") < min_date.isoformat():
                continue
            # One recursive listing per day (one paginated LIST on S3), classified here.
            for e in lake.find(day.path):
                if not _is_upload(e):
                    continue
                inside = e.path[len(day.path) + 1 :].split("/")
                if not _utf8_name(e.path):
                    misplaced.append((e, _NOT_UTF8))
                elif len(inside) == 2 and _HOUR_NAME.match(inside[0]):
                    entries.append(e)
                elif len(inside) == 1:
                    misplaced.append(
                        (e, f"directly in {day_name}, outside any hour=HH folder (00-23)")
                    )
                elif not _HOUR_NAME.match(inside[0]):
                    misplaced.append(
                        (e, f"folder {inside[0]!r} is not an hour=HH folder (two digits, 00-23)")
                    )
                else:
                    misplaced.append((e, f"in a sub-folder of {inside[0]}; stages read files only"))
    return entries, misplaced


_HOUR_NAME = re.compile(r"^hour=(?:[01]\d|2[0-3])$")
_NOT_UTF8 = (
    "its name is not valid UTF-8, so no manifest, DLQ row or lineage column can name it; "
    "rename it (UTF-8) to ingest it"
)


def _utf8_name(path: str) -> bool:
    """False for a path holding bytes that are not UTF-8 (listed as surrogate escapes)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable_path(path: str) -> str:
    """A landing path safe to log or write to JSON: undecodable bytes shown as `\\xNN`."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _is_day(name: str) -> bool:
    """True for a `date=YYYY-MM-DD` folder naming a real day."""
    if not re.fullmatch(r"date=\d{4}-\d{2}-\d{2}", name):
        return False
    try:
        date.fromisoformat(name.removeprefix("date="))
    except ValueError:
        return False
    return True


def list_arrival_hours(
    lake: Lake, since_cursor: str | None = None, *, min_date: date | None = None
) -> LandingChanges:
    """Landing files added or changed since `since_cursor` (path, size, mtime) and their arrival hours.

    The cursor is a small JSON string: the newest modification time seen and fingerprints
    of the files inside `DISCOVERY_MARGIN` before it. Pass the returned cursor next time;
    None lists everything. `min_date` skips older date folders on large lakes. New files
    that no arrival hour reads come back in `misplaced` with what to do, once each.
    """
    after, seen = _parse_cursor(since_cursor)
    entries, misplaced = _landing_entries(lake, min_date)
    floor = None if after is None else after - DISCOVERY_MARGIN

    def is_new(e: LakeEntry) -> bool:
        return (floor is None or e.mtime is None or e.mtime > floor) and _file_key(e) not in seen

    new = [e for e in entries if is_new(e)]
    # Misplaced files count in the cursor too, so each one is reported once.
    entries = entries + [e for e, _ in misplaced]
    times = [e.mtime for e in entries if e.mtime is not None]
    newest = max([*times, *([after] if after else [])], default=None)
    recent = []
    if newest is not None:
        recent = sorted(
            _file_key(e) for e in entries if e.mtime and e.mtime > newest - DISCOVERY_MARGIN
        )
    cursor = orjson.dumps({"after": _iso_precise(newest), "seen": recent}).decode()
    hours = sorted({h for e in new if (h := hour_of_path(e.path)) is not None})
    return LandingChanges(
        files=new,
        arrival_hours=hours,
        cursor=cursor,
        misplaced=[(e, why) for e, why in misplaced if is_new(e)],
    )


def _iso_precise(ts: datetime | None) -> str | None:
    return None if ts is None else ts.astimezone(UTC).isoformat().replace("+00:00", "Z")
