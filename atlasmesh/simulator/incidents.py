"""Deliberate bad data for demos and drills: a GPS fault no single record can reveal.

Every line stays valid on its own (coordinates in range, types right), so validation
accepts it; only the quality gate, which compares consecutive fixes, sees vehicles jumping
hundreds of kilometres in seconds. The landing files are rewritten in place, as a faulty
gateway would have delivered them.
"""

from __future__ import annotations

import gzip
import json
import zlib
from dataclasses import dataclass
from datetime import datetime

from atlasmesh.lake import Lake

LANDING_PREFIX = "landing/telemetry"
# Half a degree of latitude is ~55 km: a jump no road vehicle makes in one sampling interval.
JUMP_DEGREES = 0.5


@dataclass(frozen=True)
class GpsFault:
    """What `inject_gps_jumps` changed: files rewritten and lines whose position jumps."""

    files: int
    lines: int


def _jump(line: bytes, seen: dict[str, int]) -> bytes:
    try:
        record = json.loads(line)
    except ValueError:
        return line  # an already broken line stays as it is: validation dead-letters it
    location = record.get("location") if isinstance(record, dict) else None
    if not isinstance(location, dict) or not isinstance(location.get("lat"), int | float):
        return line
    vehicle = str(record.get("vehicle_id"))
    seen[vehicle] = seen.get(vehicle, 0) + 1
    if seen[vehicle] % 2:
        return line
    lat = float(location["lat"])
    # Toward the equator keeps the latitude in range whatever the fleet's city.
    location["lat"] = round(lat - JUMP_DEGREES if lat > 0 else lat + JUMP_DEGREES, 6)
    return json.dumps(record, separators=(",", ":")).encode()


def inject_gps_jumps(lake: Lake, arrival_hour: datetime) -> GpsFault:
    """Make every second fix of each vehicle in one arrival hour's landing files jump ~55 km."""
    folder = f"date={arrival_hour:%Y-%m-%d}/hour={arrival_hour:%H}"
    files = lines = 0
    seen: dict[str, int] = {}
    for entry in lake.glob(f"{LANDING_PREFIX}/schema=*/{folder}/*.jsonl.gz"):
        try:
            raw = gzip.decompress(lake.read_bytes(entry.path))
        except (EOFError, OSError, zlib.error):
            continue  # a cut upload stays cut: its own fault, already counted by validation
        out = []
        for line in raw.split(b"\n"):
            changed = _jump(line, seen) if line else line
            lines += changed != line
            out.append(changed)
        lake.write_bytes(entry.path, gzip.compress(b"\n".join(out), mtime=0))
        files += 1
    if not files:
        raise FileNotFoundError(
            f"no landing files under {LANDING_PREFIX}/schema=*/{folder}: simulate that hour first"
        )
    return GpsFault(files=files, lines=lines)
