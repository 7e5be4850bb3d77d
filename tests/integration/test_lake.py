"""The lake on both backends: local files and a real authenticated S3 gateway."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest

from atlasmesh.lake import Lake, LakeError
from tests.fixtures.s3 import S3Server, run_s3_gateway
from tests.fixtures.services import free_port, port_open

pytestmark = pytest.mark.integration

DATASET = "processed/vehicle_telemetry"
SCHEMA = pa.schema(
    [
        ("telemetry_id", pa.string()),
        ("vehicle_id", pa.string()),
        ("recorded_at", pa.timestamp("ms", tz="UTC")),
        ("speed_kmh", pa.float64()),
        ("battery_level_percent", pa.float64()),
        ("date", pa.string()),
        ("hour", pa.int32()),
    ]
)
START = datetime(2026, 11, 1, 0, 0, tzinfo=UTC)


def telemetry(hours: list[int], rows_per_hour: int = 5, speed_offset: float = 0.0) -> pa.Table:
    """Telemetry-like rows for the given hours since START, with date/hour partition columns."""
    rows = []
    for h in hours:
        for i in range(rows_per_hour):
            at = START + timedelta(hours=h, minutes=i)
            rows.append(
                {
                    "telemetry_id": f"t-{h:03d}-{i:02d}",
                    "vehicle_id": f"veh-{i % 3}",
                    "recorded_at": at,
                    "speed_kmh": 10.0 * i + h + speed_offset,
                    "battery_level_percent": None if i == 0 else 50.0 + i,
                    "date": at.strftime("%Y-%m-%d"),
                    "hour": at.hour,
                }
            )
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def by_id(table: pa.Table) -> list[dict]:
    return table.select(SCHEMA.names).sort_by("telemetry_id").to_pylist()


@pytest.fixture(params=["file", "s3"])
def lake(request: pytest.FixtureRequest, tmp_path: Path) -> Lake:
    if request.param == "file":
        return Lake(f"file://{tmp_path}/lake")
    server: S3Server = request.getfixturevalue("s3_server")
    # A fresh prefix per test: the gateway is shared by the whole session.
    return Lake.from_settings(server.settings(prefix=f"t-{uuid.uuid4().hex[:8]}"))


def test_dataset_round_trips_through_pyarrow_and_polars(lake: Lake) -> None:
    table = telemetry([0, 1, 25])  # two dates, three partitions
    before = datetime.now(UTC) - timedelta(seconds=5)

    written = lake.write_parquet_dataset(table, DATASET, ["date", "hour"])

    dirs = sorted({f.rsplit("/", 1)[0] for f in written})
    assert dirs == [
        f"{DATASET}/date=2026-11-01/hour=0",
        f"{DATASET}/date=2026-11-01/hour=1",
        f"{DATASET}/date=2026-11-02/hour=1",
    ]
    listed = lake.glob(f"{DATASET}/**/*.parquet")
    assert [e.path for e in listed] == written
    for entry in listed:
        assert not entry.is_dir and entry.size > 0 and entry.mtime is not None
        assert before <= entry.mtime <= datetime.now(UTC) + timedelta(seconds=5)

    assert by_id(lake.read_parquet_dataset(DATASET, schema=SCHEMA)) == by_id(table)

    frame = (
        pl.scan_parquet(lake.uri(f"{DATASET}/"), storage_options=lake.storage_options())
        .with_columns(pl.col("date").cast(pl.String), pl.col("hour").cast(pl.Int32))
        .collect()
    )
    assert by_id(frame.to_arrow()) == by_id(table)


def test_rewriting_a_partition_replaces_it_and_keeps_the_others(lake: Lake) -> None:
    lake.write_parquet_dataset(telemetry([0, 1, 2]), DATASET, ["date", "hour"])
    old_files = {e.path for e in lake.glob(f"{DATASET}/date=2026-11-01/hour=1/*.parquet")}

    fresh = telemetry([1], rows_per_hour=2, speed_offset=1000.0)
    lake.write_parquet_dataset(fresh, DATASET, ["date", "hour"])

    result = lake.read_parquet_dataset(DATASET, schema=SCHEMA)
    hour1 = result.filter(pc.field("hour") == 1)
    assert by_id(hour1) == by_id(fresh)
    others = result.filter(pc.field("hour") != 1)
    assert by_id(others) == by_id(telemetry([0, 2]))
    now_files = {e.path for e in lake.glob(f"{DATASET}/date=2026-11-01/hour=1/*.parquet")}
    assert not old_files & now_files, "the replaced partition's old files must be gone"


def test_append_adds_files_and_error_mode_refuses_existing_data(lake: Lake) -> None:
    lake.write_parquet_dataset(telemetry([3]), DATASET, ["date", "hour"])
    extra = telemetry([3], rows_per_hour=2)
    extra = extra.set_column(0, "telemetry_id", pa.array(["late-1", "late-2"]))

    lake.write_parquet_dataset(extra, DATASET, ["date", "hour"], "overwrite_or_ignore")

    assert lake.read_parquet_dataset(DATASET).num_rows == 7
    with pytest.raises(LakeError, match="already holds Parquet files"):
        lake.write_parquet_dataset(extra, DATASET, ["date", "hour"], "error")


def test_filters_prune_partitions(lake: Lake) -> None:
    lake.write_parquet_dataset(telemetry([0, 1, 2, 26]), DATASET, ["date", "hour"])

    dnf = lake.read_parquet_dataset(DATASET, filters=[("date", "=", "2026-11-02")], schema=SCHEMA)
    assert by_id(dnf) == by_id(telemetry([26]))
    expr = lake.read_parquet_dataset(
        DATASET, filters=ds.field("hour") >= 1, columns=["telemetry_id", "hour"]
    )
    assert expr.column_names == ["telemetry_id", "hour"]
    assert sorted(set(expr.column("hour").to_pylist())) == [1, 2]


def test_deleting_a_dataset_removes_every_file(lake: Lake) -> None:
    lake.write_parquet_dataset(telemetry([0, 1]), DATASET, ["date", "hour"])
    lake.write_bytes("processed/keep.txt", b"keep")

    lake.rm(DATASET, recursive=True)

    assert not lake.exists(DATASET)
    assert lake.glob(f"{DATASET}/**") == []
    assert lake.read_bytes("processed/keep.txt") == b"keep"
    with pytest.raises(FileNotFoundError, match="no Parquet dataset"):
        lake.read_parquet_dataset(DATASET)
    with pytest.raises(FileNotFoundError):
        lake.rm(DATASET, recursive=True)
    lake.rm(DATASET, recursive=True, missing_ok=True)


def test_files_write_list_overwrite_and_delete(lake: Lake) -> None:
    rel = "landing/telemetry/schema=v1/date=2026-11-01/hour=00/gw-1-20261101T0000.jsonl.gz"
    lake.write_bytes(rel, b"first")
    lake.write_bytes(rel, b"second version")
    with lake.open("landing/notes.txt", "w") as f:
        f.write("naïve café\n")

    assert lake.read_bytes(rel) == b"second version"
    with lake.open("landing/notes.txt", "r") as f:
        assert f.read() == "naïve café\n"
    (entry,) = lake.glob("landing/telemetry/**/*.jsonl.gz")
    assert (entry.path, entry.size, entry.is_dir) == (rel, len(b"second version"), False)
    top = lake.ls("landing")
    assert [(e.path, e.is_dir) for e in top] == [
        ("landing/notes.txt", False),
        ("landing/telemetry", True),
    ]
    assert lake.ls("nothing/here") == []

    lake.rm(rel)
    assert not lake.exists(rel)
    with pytest.raises(FileNotFoundError):
        lake.read_bytes(rel)


def test_failed_write_leaves_no_partial_file(lake: Lake) -> None:
    rel = "snapshots/fleet_core/vehicles/part.jsonl"
    lake.write_bytes(rel, b"complete old content")

    with pytest.raises(RuntimeError, match="crash"), lake.open(rel, "wb") as f:
        f.write(b"half of the new")
        raise RuntimeError("crash mid-write")
    with pytest.raises(RuntimeError, match="crash"), lake.open("snapshots/new.jsonl", "wb") as f:
        f.write(b"half")
        f.flush()
        assert [e.path for e in lake.glob("snapshots/**") if not e.is_dir] == [rel]
        raise RuntimeError("crash mid-write")

    assert lake.read_bytes(rel) == b"complete old content"
    assert not lake.exists("snapshots/new.jsonl")
    assert [e.path for e in lake.glob("**") if not e.is_dir] == [rel]
    if not lake.is_s3:
        leftovers = [p.name for p in Path(lake.path("snapshots")).rglob("*") if p.is_file()]
        assert leftovers == ["part.jsonl"], "no temp files may remain"


def test_crash_during_dataset_write_keeps_the_old_partitions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = Lake(str(tmp_path / "lake"))
    lake.write_parquet_dataset(telemetry([0, 1]), DATASET, ["date", "hour"])
    real_write = ds.write_dataset

    def write_then_crash(*args: object, **kwargs: object) -> None:
        real_write(*args, **kwargs)
        raise OSError("disk full")

    monkeypatch.setattr(ds, "write_dataset", write_then_crash)
    with pytest.raises(OSError, match="disk full"):
        lake.write_parquet_dataset(telemetry([1], speed_offset=500), DATASET, ["date", "hour"])

    assert by_id(lake.read_parquet_dataset(DATASET, schema=SCHEMA)) == by_id(telemetry([0, 1]))
    assert not any(p.name != "lake" for p in (tmp_path / "lake" / ".staging").glob("*"))


def test_clickhouse_reads_the_dataset(lake: Lake) -> None:
    lake.write_parquet_dataset(telemetry([0, 1, 25]), DATASET, ["date", "hour"])
    if lake.is_s3:
        opts = lake.storage_options()
        url = f"{opts['aws_endpoint_url']}/{lake.path(DATASET)}/**/*.parquet"
        source = (
            f"s3('{url}', '{opts['aws_access_key_id']}', '{opts['aws_secret_access_key']}', "
            "'Parquet')"
        )
    else:
        source = f"file('{lake.path(DATASET)}/**/*.parquet', 'Parquet')"
    # chDB runs in a child process: one chDB per process, and the suite's warehouse owns its own.
    script = textwrap.dedent(
        f"""
        import json, chdb
        sql = '''SELECT date, hour, count() AS n, round(sum(speed_kmh), 3) AS speed
                 FROM {source} GROUP BY date, hour ORDER BY date, hour
                 SETTINGS use_hive_partitioning = 1'''
        rows = json.loads(chdb.query(sql, "JSON").bytes())["data"]
        print(json.dumps([list(r.values()) for r in rows]))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    expected = (
        pl.from_arrow(telemetry([0, 1, 25]))
        .group_by("date", "hour")
        .agg(pl.len(), pl.col("speed_kmh").sum().round(3))
        .sort("date", "hour")
        .rows()
    )
    assert [tuple(r) for r in json.loads(out.stdout)] == expected


def test_wrong_credentials_give_a_clear_error(s3_server: S3Server) -> None:
    settings = s3_server.settings(s3_secret_access_key="not-the-right-secret")
    with pytest.raises(LakeError) as err:
        Lake.from_settings(settings).write_bytes("x.txt", b"x")
    message = str(err.value)
    assert "ATLASMESH_S3_SECRET_ACCESS_KEY" in message
    assert s3_server.endpoint_url in message
    assert "not-the-right-secret" not in message and s3_server.secret_key not in message
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_missing_bucket_gives_a_clear_error(s3_server: S3Server) -> None:
    lake = Lake.from_settings(s3_server.settings(lake_url="s3://no-such-bucket/lake"))
    with pytest.raises(
        LakeError, match=r"bucket 'no-such-bucket' does not exist.*ATLASMESH_LAKE_URL"
    ):
        lake.ls()


def test_unreachable_endpoint_gives_a_clear_error(s3_server: S3Server) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    lake = Lake.from_settings(s3_server.settings(s3_endpoint_url=dead))
    with pytest.raises(
        LakeError, match=f"S3 endpoint {dead} is unreachable.*ATLASMESH_S3_ENDPOINT_URL"
    ):
        lake.read_parquet_dataset(DATASET)


def test_s3_gateway_requires_auth_and_leaves_no_process(tmp_path: Path) -> None:
    from urllib.error import HTTPError
    from urllib.request import urlopen

    workdir = tmp_path / "gw"
    with run_s3_gateway(workdir, bucket="probe") as server:
        port = int(server.endpoint_url.rsplit(":", 1)[1])
        with pytest.raises(HTTPError) as anonymous:
            urlopen(f"{server.endpoint_url}/probe", timeout=5)
        assert anonymous.value.code == 403
        assert server.client().list_objects_v2(Bucket="probe")["KeyCount"] == 0

    assert not port_open("127.0.0.1", port)
    leftovers = [
        p for p in Path("/proc").glob("[0-9]*/cmdline") if str(workdir).encode() in _read(p)
    ]
    assert leftovers == []


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # the process exited while we looked
        return b""
