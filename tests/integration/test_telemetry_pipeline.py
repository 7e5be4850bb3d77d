"""Landing -> processed over the lake: staging by event hour, dead letters, dedup, late data, re-runs."""

from __future__ import annotations

import hashlib
import uuid
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from atlasmesh.fleet_core.store import FleetCoreStore
from atlasmesh.lake import Lake
from atlasmesh.simulator import SimConfig, simulate
from atlasmesh.telemetry import pipeline
from atlasmesh.telemetry.pipeline import (
    BuildResult,
    StageResult,
    affected_event_hours,
    build_event_hour,
    is_staged,
    known_vehicles_from,
    list_arrival_hours,
    stage_arrival_hour,
)
from atlasmesh.telemetry.reasons import Disposition, FaultClass
from atlasmesh.telemetry.registry import PROCESSED_SCHEMA

pytestmark = pytest.mark.integration

START = datetime(2026, 11, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)
# Late arrivals are held back 1-6 h: weight them up so a 4-hour run surely has several.
MIX = {f: 1.0 for f in FaultClass if f is not FaultClass.TRUNCATED_FILE} | {
    FaultClass.LATE_ARRIVAL: 4.0
}


@dataclass
class Run:
    """One pass of the pipeline as the sensor drives it: stage each arrival hour, rebuild what it touched."""

    stages: dict[datetime, StageResult] = field(default_factory=dict)
    builds: dict[datetime, BuildResult] = field(default_factory=dict)
    # (arrival hour that triggered it, event hour, telemetry ids in the hour after the build)
    history: list[tuple[datetime, datetime, set[str]]] = field(default_factory=list)


@dataclass
class Fleet:
    lake: Lake
    known: list[str]
    truth: pl.DataFrame
    arrival_hours: list[datetime]
    run: Run


def drive(lake: Lake, known: list[str], hours: list[datetime]) -> Run:
    run = Run()
    for arrival in hours:
        run.stages[arrival] = stage_arrival_hour(lake, arrival, known_vehicles=known)
        for event_hour in affected_event_hours(lake, arrival):
            run.builds[event_hour] = build_event_hour(lake, event_hour)
            run.history.append((arrival, event_hour, _ids(lake, event_hour)))
    return run


def _ids(lake: Lake, event_hour: datetime) -> set[str]:
    rel = pipeline.processed_path(event_hour)
    if not lake.exists(rel):
        return set()
    with lake.open(rel) as f:
        return set(pq.read_table(f, columns=["telemetry_id"]).column(0).to_pylist())


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    """Eight vehicles over four hours, 5% faults of every class, staged and built once."""
    tmp = tmp_path_factory.mktemp("pipeline")
    lake = Lake(f"file://{tmp / 'lake'}")
    config = SimConfig(
        seed=11,
        vehicles=8,
        days=4 / 24,
        start=START,
        interval_s=20.0,
        # Ten-minute gateway batches: fewer, larger files validate faster, and re-sent copies
        # (up to two batches later) often cross an arrival hour.
        batch_s=600,
        fault_rate=0.05,
        fault_mix=MIX,
        firmware_update=START + 2 * HOUR,
        firmware_update_share=0.5,
    )
    with FleetCoreStore(f"sqlite:///{tmp / 'fleet_core.db'}") as store:
        summary = simulate(config, lake=lake, store=store, truth_dir=tmp / "truth")
        known = [row["vehicle_id"] for row in store.read("vehicles")]
    truth = pl.read_parquet(summary.ground_truth_dir / "faults.parquet")
    hours = list_arrival_hours(lake).arrival_hours
    return Fleet(lake, known, truth, hours, drive(lake, known, hours))


def _landing_lines(data: bytes) -> int:
    """Records a landing file holds: its lines, plus one for the tail of a cut gzip stream."""
    d = zlib.decompressobj(wbits=31)
    text = d.decompress(data)
    complete = text.count(b"\n")
    if not d.eof:
        return complete + 1
    return complete + (1 if text and not text.endswith(b"\n") else 0)


def _processed(lake: Lake) -> pl.DataFrame:
    return pl.scan_parquet(
        lake.uri(f"{pipeline.PROCESSED_PREFIX}/"),
        hive_partitioning=True,
        storage_options=lake.storage_options() or None,
    ).collect()


def _dlq(lake: Lake) -> pl.DataFrame:
    table = ds.dataset(
        lake.path(pipeline.DLQ_PREFIX),
        filesystem=lake.pyarrow_filesystem(),
        format="parquet",
        partitioning="hive",
    ).to_table()
    return pl.from_arrow(table)


def _digest(lake: Lake, prefix: str) -> dict[str, str]:
    return {
        e.path: hashlib.sha256(lake.read_bytes(e.path)).hexdigest()
        for e in lake.glob(f"{prefix}/**/*.parquet")
    }


def test_every_record_is_accepted_duplicate_or_dead_lettered(fleet: Fleet) -> None:
    lake, run = fleet.lake, fleet.run
    landing = sum(
        _landing_lines(lake.read_bytes(e.path)) for e in lake.glob("landing/telemetry/**/*.gz")
    )
    assert landing > 5_000
    # Per arrival hour: everything read is staged, counted as a duplicate, or dead-lettered.
    for arrival, stage in run.stages.items():
        stage.check()
        lines = sum(_landing_lines(lake.read_bytes(f["path"])) for f in stage.files)
        assert stage.received == lines
        accepted = sum(b.accepted_by_arrival.get(arrival, 0) for b in run.builds.values())
        dups = sum(b.duplicates_by_arrival.get(arrival, 0) for b in run.builds.values())
        assert stage.received == accepted + dups + stage.duplicates + stage.dead_lettered
        dlq = lake.path(pipeline.dlq_path(arrival))
        assert (pq.read_metadata(dlq).num_rows if stage.dead_lettered else 0) == (
            stage.dead_lettered
        )
    # Per event hour: staged = accepted + cross-arrival duplicates, and the file holds the accepted.
    processed = _processed(lake)
    for hour, build in run.builds.items():
        build.check()
        assert build.staged == sum(s.event_hours.get(hour, 0) for s in run.stages.values())
        in_file = processed.filter(
            (pl.col("date") == hour.date()) & (pl.col("hour") == hour.hour)
        ).height
        assert in_file == build.accepted > 0
    # Overall, from what is actually in the lake.
    dlq = _dlq(lake)
    dups = sum(b.duplicates for b in run.builds.values())
    assert landing == processed.height + dups + dlq.height
    assert dups == fleet.truth.filter(pl.col("fault_class") == "DUPLICATE").height
    assert processed["telemetry_id"].n_unique() == processed.height


def test_every_injected_fault_ends_where_its_class_says(fleet: Fleet) -> None:
    processed = _processed(fleet.lake)
    dlq = _dlq(fleet.lake)
    truth = fleet.truth
    assert set(truth["fault_class"]) == {f.value for f in FaultClass}
    where = ["file", "line"]
    lineage = processed.select(
        pl.col("source_file").alias("file"), pl.col("line_number").cast(pl.Int32).alias("line")
    )

    refused = truth.filter(pl.col("disposition") == Disposition.DEAD_LETTER.value)
    got = dlq.select(
        pl.col("source_file").alias("file"),
        pl.col("line_number").cast(pl.Int32).alias("line"),
        pl.col("reason_code"),
    )
    joined = refused.join(got, on=where, how="left")
    wrong = joined.filter(pl.col("reason_code") != pl.col("fault_class"))
    assert wrong.is_empty(), wrong.select("fault_class", "reason_code", "file", "line", "detail")
    # ... and nothing clean was refused.
    assert dlq.height == refused.height

    dups = truth.filter(pl.col("disposition") == Disposition.DUPLICATE.value)
    assert dups.join(lineage, on=where, how="semi").is_empty()
    assert dups.join(got, on=where, how="semi").is_empty()
    assert dups.join(processed, on="telemetry_id", how="anti").is_empty()

    accepted = truth.filter(pl.col("disposition") == Disposition.ACCEPTED.value)
    rows = accepted.join(processed, on="telemetry_id", how="inner", suffix="_p")
    assert rows.height == accepted.height
    assert set(rows["fault_class"]) == {"LATE_ARRIVAL", "OUT_OF_ORDER", "CLOCK_SKEW"}
    # Each lands in the partition of its own recorded_at hour, whatever its arrival.
    part = pl.datetime(pl.col("date").dt.year(), pl.col("date").dt.month(), pl.col("date").dt.day())
    part = part.dt.replace_time_zone("UTC") + pl.duration(hours=pl.col("hour"))
    misplaced = rows.filter(pl.col("recorded_at_p").dt.truncate("1h") != part)
    assert misplaced.is_empty()
    late = rows.filter(pl.col("fault_class") == "LATE_ARRIVAL")
    assert late.height >= 3
    assert (late["recorded_at_p"].dt.truncate("1h") < late["arrival_at"].dt.truncate("1h")).all()


def test_v1_and_v2_share_one_processed_schema(fleet: Fleet) -> None:
    table = ds.dataset(fleet.lake.path(pipeline.PROCESSED_PREFIX), format="parquet").to_table()
    assert table.schema.equals(PROCESSED_SCHEMA, check_metadata=False)
    df = pl.from_arrow(table)
    majors = df["schema_version"].str.slice(0, 2).value_counts()
    assert set(majors["schema_version"]) == {"1.", "2."}
    v1 = df.filter(pl.col("schema_version").str.starts_with("1."))
    v2 = df.filter(pl.col("schema_version").str.starts_with("2."))
    assert v1["odometer_km"].null_count() == v1.height
    assert v2["odometer_km"].null_count() == 0
    assert v2["firmware_version"].null_count() == 0


def test_a_late_file_reopens_its_event_hour(fleet: Fleet) -> None:
    run, truth = fleet.run, fleet.truth
    late = truth.filter(pl.col("fault_class") == "LATE_ARRIVAL")
    reopened = 0
    for arrival, event_hour, ids in run.history:
        if arrival - event_hour < 2 * HOUR:
            continue  # the hour before an arrival hour is re-opened by boundary stragglers
        before = [i for a, e, i in run.history if e == event_hour and a < arrival]
        assert before, f"{event_hour} was first built by a late arrival hour {arrival}"
        arrived_now = set(
            late.filter(
                (pl.col("arrival_at").dt.truncate("1h") == arrival)
                & (pl.col("recorded_at").dt.truncate("1h") == event_hour)
            )["telemetry_id"]
        )
        assert arrived_now, "only late events re-open an hour two hours back"
        assert arrived_now <= ids
        assert not arrived_now & before[-1]
        assert ids > before[-1]
        reopened += 1
    assert reopened >= 1
    # The manifest says so too: a late arrival hour lists the old event hour as affected.
    last = max(run.stages)
    assert min(affected_event_hours(fleet.lake, last)) < last - HOUR


def test_three_runs_give_identical_counts_and_content(fleet: Fleet) -> None:
    lake = fleet.lake
    runs = [fleet.run]
    digests = [{p: _digest(lake, p) for p in ("processed", "staging", "dlq")}]
    for _ in range(2):
        runs.append(drive(lake, fleet.known, fleet.arrival_hours))
        digests.append({p: _digest(lake, p) for p in ("processed", "staging", "dlq")})

    def counts(run: Run) -> tuple:
        stage = {
            h: (s.received, s.staged, s.dead_lettered, s.reasons) for h, s in run.stages.items()
        }
        build = {h: (b.staged, b.accepted, b.duplicates, b.checksum) for h, b in run.builds.items()}
        return stage, build

    assert counts(runs[0]) == counts(runs[1]) == counts(runs[2])
    assert digests[0] == digests[1] == digests[2]
    assert all(b.checksum != f"{0:016x}" for b in runs[0].builds.values())


def test_a_rerun_removes_what_no_longer_applies(fleet: Fleet) -> None:
    lake = fleet.lake
    arrival = fleet.arrival_hours[1]
    elsewhere = fleet.arrival_hours[-1] + 5 * HOUR  # an event hour this arrival hour never touched
    good = build_event_hour(lake, fleet.arrival_hours[0])
    stale = pipeline.staged_path(elsewhere, arrival)
    rows = pq.read_table(lake.path(pipeline.staged_path(arrival, arrival)))
    shifted = pc.add(rows.column("recorded_at"), pa.scalar(elsewhere - arrival))
    rows = rows.set_column(rows.schema.get_field_index("recorded_at"), "recorded_at", shifted)
    with lake.open(stale, "wb") as f:
        pq.write_table(rows.cast(PROCESSED_SCHEMA), f)
    assert build_event_hour(lake, elsewhere).accepted > 0

    result = stage_arrival_hour(lake, arrival, known_vehicles=fleet.known)
    assert not lake.exists(stale)
    assert result.removed_event_hours == [elsewhere]
    # Staged again before the rebuild: the emptied hour must still be asked for.
    stage_arrival_hour(lake, arrival, known_vehicles=fleet.known)
    assert elsewhere in affected_event_hours(lake, arrival)
    emptied = build_event_hour(lake, elsewhere)
    assert (emptied.staged, emptied.accepted, emptied.processed_file) == (0, 0, None)
    assert not lake.exists(pipeline.processed_path(elsewhere))
    # A second re-run is back to the steady state and the real hours are untouched.
    assert stage_arrival_hour(lake, arrival, known_vehicles=fleet.known).removed_event_hours == []
    assert build_event_hour(lake, fleet.arrival_hours[0]).checksum == good.checksum


def test_duplicates_are_a_repeated_id_or_identical_content_first_delivery_wins(
    fleet: Fleet, tmp_path: Path
) -> None:
    lake = Lake(f"file://{tmp_path / 'lake'}")
    hour = fleet.arrival_hours[1]
    original = pipeline.staged_path(hour, hour)
    lake.write_bytes(original, fleet.lake.read_bytes(original))
    first = pl.read_parquet(lake.path(original))
    alone = build_event_hour(lake, hour)
    later = "landing/telemetry/schema=v1/later.jsonl.gz"
    # Re-sent an hour later: row 0 under a new id with the same content (a duplicate),
    # row 1 under a new id with another speed (a different reading, kept), row 2 under its
    # own id with another speed (a duplicate: same telemetry_id).
    resent = first.head(3).with_columns(
        pl.Series("telemetry_id", [str(uuid.uuid4()), str(uuid.uuid4()), first["telemetry_id"][2]]),
        pl.col("speed_kmh") + pl.Series([0.0, 1.0, 1.0]),
        pl.lit(later).alias("source_file"),
    )
    with lake.open(pipeline.staged_path(hour, hour + HOUR), "wb") as f:
        pq.write_table(resent.to_arrow().cast(PROCESSED_SCHEMA), f)

    build = build_event_hour(lake, hour)
    assert (build.staged, build.accepted) == (alone.staged + 3, alone.accepted + 1)
    assert build.duplicates_by_arrival == {hour: alone.duplicates, hour + HOUR: 2}
    out = pl.read_parquet(lake.path(pipeline.processed_path(hour)))
    assert out.filter(pl.col("source_file") == later)["telemetry_id"].to_list() == [
        resent["telemetry_id"][1]
    ]
    assert out["telemetry_id"].n_unique() == out.height


def test_spilled_dedup_decides_like_one_bucket(fleet: Fleet) -> None:
    hour = fleet.arrival_hours[1]
    whole = build_event_hour(fleet.lake, hour)
    spilled = build_event_hour(fleet.lake, hour, bucket_rows=97)
    assert spilled.buckets > 10 and whole.buckets == 1
    assert (spilled.accepted, spilled.duplicates, spilled.checksum) == (
        whole.accepted,
        whole.duplicates,
        whole.checksum,
    )


def test_a_streamed_build_writes_what_an_in_memory_build_writes(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    hour = fleet.arrival_hours[1]
    in_memory = build_event_hour(fleet.lake, hour)
    with fleet.lake.open(pipeline.processed_path(hour)) as f:
        expected = pq.read_table(f)
    # Batches of 50 rows: the hour no longer fits one batch, so it is read from the lake
    # batch by batch (as a large hour is) and written in several row groups.
    monkeypatch.setattr(pipeline, "BATCH_ROWS", 50)
    streamed = build_event_hour(fleet.lake, hour, bucket_rows=97)
    with fleet.lake.open(pipeline.processed_path(hour)) as f:
        parquet = pq.ParquetFile(f)
        groups = parquet.metadata.num_row_groups
        written = parquet.read()
    assert in_memory.staged > 50 and groups > 1
    assert written.equals(expected)
    assert (streamed.accepted, streamed.duplicates, streamed.checksum) == (
        in_memory.accepted,
        in_memory.duplicates,
        in_memory.checksum,
    )
    assert streamed.accepted_by_arrival == in_memory.accepted_by_arrival


def test_a_failed_build_or_stage_leaves_the_published_hour_alone(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = fleet.lake
    hour = fleet.arrival_hours[0]
    before = {p: _digest(lake, p) for p in ("processed", "staging", "dlq", "manifests")}
    calls = {"n": 0}

    def broken(batch: pa.RecordBatch) -> int:
        calls["n"] += 1
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(pipeline, "_row_hash_sum", broken)
    with pytest.raises(OSError, match="simulated"):
        build_event_hour(lake, hour)
    monkeypatch.setattr(pipeline, "split_by_event_hour", broken)
    with pytest.raises(OSError, match="simulated"):
        stage_arrival_hour(lake, hour, known_vehicles=fleet.known)
    assert calls["n"] == 2
    after = {p: _digest(lake, p) for p in ("processed", "staging", "dlq", "manifests")}
    assert after == before
    assert not list(Path(lake.path(".staging")).iterdir())


def test_a_row_group_write_failing_in_its_thread_fails_the_build_and_publishes_nothing(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = fleet.lake
    hour = fleet.arrival_hours[1]
    build_event_hour(lake, hour)
    before = _digest(lake, "processed"), _digest(lake, "manifests")
    writes = {"n": 0}
    write_table = pq.ParquetWriter.write_table

    def fails_second(self: pq.ParquetWriter, table: pa.Table, **kwargs: object) -> None:
        writes["n"] += 1
        if writes["n"] == 2:
            raise OSError("disk full (simulated)")
        write_table(self, table, **kwargs)

    # Groups of 50 rows: several writes, the second fails while the third group is gathered.
    monkeypatch.setattr(pipeline, "BATCH_ROWS", 50)
    monkeypatch.setattr(pq.ParquetWriter, "write_table", fails_second)
    with pytest.raises(OSError, match="simulated"):
        build_event_hour(lake, hour)
    assert writes["n"] == 2
    assert (_digest(lake, "processed"), _digest(lake, "manifests")) == before
    assert not list(Path(lake.path(".staging")).iterdir())


def test_the_sensor_sees_new_files_once(fleet: Fleet, tmp_path: Path) -> None:
    lake = Lake(f"file://{tmp_path / 'lake'}")
    source = fleet.lake
    first = fleet.arrival_hours[0]
    for entry in pipeline.landing_files(source, first):
        lake.write_bytes(entry.path, source.read_bytes(entry.path))
    seen = list_arrival_hours(lake)
    assert seen.arrival_hours == [first]
    assert list_arrival_hours(lake, seen.cursor).files == []
    assert not is_staged(lake, first)
    stage_arrival_hour(lake, first, known_vehicles=fleet.known)
    assert is_staged(lake, first)

    # A gateway re-delivers into an old arrival hour, and an odd file appears there.
    late = pipeline.landing_files(source, fleet.arrival_hours[2])[0]
    moved = late.path.replace(
        f"date={fleet.arrival_hours[2]:%Y-%m-%d}/hour={fleet.arrival_hours[2]:%H}",
        f"date={first:%Y-%m-%d}/hour={first:%H}",
    )
    lake.write_bytes(moved, source.read_bytes(late.path))
    odd = f"landing/telemetry/schema=v1/date={first:%Y-%m-%d}/hour={first:%H}/notes.txt"
    lake.write_bytes(odd, b"not telemetry\n\xff\xfe\n")
    lake.write_bytes(odd.replace("notes.txt", "_SUCCESS"), b"")  # a tool's marker: ignored
    changes = list_arrival_hours(lake, seen.cursor)
    assert sorted(e.path for e in changes.files) == sorted([moved, odd])
    assert changes.arrival_hours == [first]
    assert not is_staged(lake, first)
    assert list_arrival_hours(lake, changes.cursor).files == []

    result = stage_arrival_hour(lake, first, known_vehicles=fleet.known)
    result.check()
    assert any("notes.txt" in n for n in result.notes)
    # The marker is not read, but the stage says so instead of passing over it in silence.
    assert any(n.startswith(odd.replace("notes.txt", "_SUCCESS")) for n in result.notes)
    dlq = _dlq(lake)
    assert dlq.filter(pl.col("source_file") == odd).height == 2  # kept, never dropped
    with pytest.raises(ValueError, match="reset the sensor cursor"):
        list_arrival_hours(lake, "{not json")


def test_bad_arguments_get_clear_errors(fleet: Fleet) -> None:
    with pytest.raises(ValueError, match="on the hour"):
        stage_arrival_hour(fleet.lake, START + timedelta(minutes=5), known_vehicles=fleet.known)
    with pytest.raises(ValueError, match="aware UTC"):
        build_event_hour(fleet.lake, datetime(2026, 11, 1))
    with pytest.raises(ValueError, match="empty"):
        known_vehicles_from([])
    with pytest.raises(ValueError, match="not UUID"):
        known_vehicles_from(["truck-7"])
    assert known_vehicles_from([fleet.known[0].upper()]).to_pylist() == [fleet.known[0].lower()]
    with pytest.raises(FileNotFoundError, match="stage it first"):
        affected_event_hours(fleet.lake, START + 30 * HOUR)


def test_on_s3_the_same_landing_gives_the_same_hours(fleet: Fleet, s3_server) -> None:
    lake = Lake.from_settings(s3_server.settings(prefix=f"pipeline-{uuid.uuid4().hex[:8]}"))
    source = fleet.lake
    hours = fleet.arrival_hours[:2]
    for hour in hours:
        for entry in pipeline.landing_files(source, hour):
            lake.write_bytes(entry.path, source.read_bytes(entry.path))
    assert list_arrival_hours(lake).arrival_hours == hours
    run = drive(lake, fleet.known, hours)
    for hour in hours:
        assert run.stages[hour].to_manifest() | {"staged_at": None, "elapsed_s": 0} == (
            fleet.run.stages[hour].to_manifest() | {"staged_at": None, "elapsed_s": 0}
        )
    # The first event hour as it was after these two arrival hours, on disk: same content.
    first = hours[0]
    on_disk = pl.read_parquet(source.path(pipeline.processed_path(first))).filter(
        pl.col("ingested_at") < hours[-1] + HOUR
    )
    assert run.builds[first].accepted == on_disk.height
    assert run.builds[first].checksum == pipeline.content_checksum(on_disk.to_arrow())
    processed = _processed(lake)
    assert processed.height == sum(b.accepted for b in run.builds.values())
    table = lake.read_parquet_dataset(pipeline.PROCESSED_PREFIX)
    assert table.num_rows == processed.height
    assert _dlq(lake).height == sum(s.dead_lettered for s in run.stages.values())
