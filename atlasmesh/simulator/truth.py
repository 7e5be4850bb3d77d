"""The hidden ground truth of a run: component health, true failures and every injected fault.

It lives under `$ATLASMESH_HOME/simulator/ground_truth/<run_id>/`, outside the lake and
the fleet-core database, and is read only to score models and to prove that ingestion
put every faulty line where its fault class says.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from atlasmesh.simulator.catalog import COMPONENT_NAMES
from atlasmesh.telemetry.reasons import FaultClass

_TS = pa.timestamp("ms", tz="UTC")
FAULTS_SCHEMA = pa.schema(
    [
        ("fault_class", pa.string()),
        ("disposition", pa.string()),
        ("telemetry_id", pa.string()),
        ("vehicle_id", pa.string()),
        ("recorded_at", _TS),
        ("schema", pa.int8()),
        ("file", pa.string()),
        ("line", pa.int32()),
        ("arrival_at", _TS),
        ("detail", pa.string()),
    ]
)
HEALTH_SCHEMA = pa.schema(
    [("vehicle_id", pa.string()), ("at", _TS)]
    + [(name, pa.float32()) for name in COMPONENT_NAMES]
    + [("operational_status", pa.string())]
)
FAILURES_SCHEMA = pa.schema(
    [
        ("vehicle_id", pa.string()),
        ("component", pa.string()),
        ("failed_at", _TS),
        ("repaired_at", _TS),
        ("maintenance_id", pa.string()),
        ("trip_id", pa.string()),
    ]
)
_FLUSH_ROWS = 100_000
# What callers pass to add_faults (times as epoch ms); disposition is derived from the class.
_FAULT_INPUT = ("fault_class", "telemetry_id", "vehicle_id", "recorded_at_ms", "schema", "file", "line",
                "arrival_at_ms", "detail")  # fmt: skip


def truth_root(home: Path) -> Path:
    """Folder holding the ground truth of every run under a state folder."""
    return home / "simulator" / "ground_truth"


class TruthWriter:
    """Streams ground-truth tables to Parquet in a scratch folder, published by `finish`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.scratch = directory.with_name(directory.name + ".partial")
        if self.scratch.exists():
            shutil.rmtree(self.scratch)
        self.scratch.mkdir(parents=True)
        self._faults: dict[str, list[Any]] = {name: [] for name in _FAULT_INPUT}
        self._writers: dict[str, pq.ParquetWriter] = {}
        self.fault_counts: dict[str, int] = {}

    def _writer(self, name: str, schema: pa.Schema) -> pq.ParquetWriter:
        if name not in self._writers:
            self._writers[name] = pq.ParquetWriter(
                self.scratch / f"{name}.parquet", schema, compression="zstd"
            )
        return self._writers[name]

    def add_faults(self, rows: dict[str, list[Any]]) -> None:
        """Injected faults: one row per faulty line (or per truncated file)."""
        for name, values in rows.items():
            self._faults[name].extend(values)
        for fault in rows["fault_class"]:
            self.fault_counts[fault] = self.fault_counts.get(fault, 0) + 1
        if len(self._faults["fault_class"]) >= _FLUSH_ROWS:
            self._flush_faults()

    def _flush_faults(self) -> None:
        columns = dict(self._faults)
        if not columns["fault_class"]:
            return
        columns["disposition"] = [FaultClass(f).disposition.value for f in columns["fault_class"]]
        columns["recorded_at"] = columns.pop("recorded_at_ms")
        columns["arrival_at"] = columns.pop("arrival_at_ms")
        table = pa.table(
            {
                name: pa.array(columns[name], type=FAULTS_SCHEMA.field(name).type)
                for name in FAULTS_SCHEMA.names
            }
        )
        self._writer("faults", FAULTS_SCHEMA).write_table(table)
        self._faults = {name: [] for name in self._faults}

    def add_health(self, table: pa.Table) -> None:
        """Component health of every vehicle on the hourly grid."""
        if table.num_rows:
            self._writer("health", HEALTH_SCHEMA).write_table(table.cast(HEALTH_SCHEMA))

    def finish(
        self, failures: list[dict[str, Any]], vehicles: pa.Table, manifest: dict[str, Any]
    ) -> Path:
        """Write the last tables and the manifest, then publish the folder in one rename."""
        self._flush_faults()
        self._writer("faults", FAULTS_SCHEMA)
        self._writer("health", HEALTH_SCHEMA)
        for writer in self._writers.values():
            writer.close()
        failures_table = pa.Table.from_pylist(failures, schema=FAILURES_SCHEMA)
        pq.write_table(failures_table, self.scratch / "failures.parquet", compression="zstd")
        pq.write_table(vehicles, self.scratch / "vehicles.parquet", compression="zstd")
        (self.scratch / "manifest.json").write_bytes(
            orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
        )
        if self.directory.exists():
            shutil.rmtree(self.directory)
        self.scratch.rename(self.directory)
        return self.directory

    def abort(self) -> None:
        """Drop the scratch folder after a failed run."""
        for writer in self._writers.values():
            # The run already failed: its error matters, not a close error after it.
            with contextlib.suppress(Exception):
                writer.close()
        shutil.rmtree(self.scratch, ignore_errors=True)
