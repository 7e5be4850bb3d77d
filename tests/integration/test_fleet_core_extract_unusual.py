"""Fleet-core extraction of rows other writers leave: odd timestamps, clocks, values."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from atlasmesh.fleet_core.db import connect
from atlasmesh.fleet_core.extract import ExtractError, extract_table
from atlasmesh.fleet_core.store import FleetCoreStore
from atlasmesh.lake import Lake

pytestmark = pytest.mark.integration


@pytest.fixture
def store(fleet_core_url: str) -> Iterator[FleetCoreStore]:
    with FleetCoreStore(fleet_core_url) as opened:
        yield opened


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[FleetCoreStore]:
    with FleetCoreStore(f"sqlite:///{tmp_path / 'fleet_core.db'}") as opened:
        yield opened


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake(f"file://{tmp_path / 'lake'}")


def _organization(store: FleetCoreStore, name: str = "Acme") -> str:
    org = str(uuid.uuid4())
    store.upsert("organizations", [{"organization_id": org, "name": name, "sector": "logistics"}])
    return org


def _names(client: Any, database: str) -> dict[str, tuple[str, datetime]]:
    rows = client.query(
        f"SELECT toString(organization_id), name, updated_at "
        f"FROM `{database}`.organizations_current"
    ).result_rows
    return {key: (name, stamp.replace(tzinfo=UTC)) for key, name, stamp in rows}


def test_sqlite_timestamps_without_offset_or_in_other_layouts_are_extracted(
    sqlite_store: FleetCoreStore, lake: Lake, ch_client: Any, ch_database: str
) -> None:
    url = sqlite_store.url
    orgs = [_organization(sqlite_store, f"org {i}") for i in range(4)]
    first = extract_table(
        url, "organizations", lake, ch_client, now=datetime.now(UTC), database=ch_database
    )
    watermark = first.watermark_after
    assert watermark is not None
    # What another writer leaves in SQLite: CURRENT_TIMESTAMP's naive UTC text, 'T' and
    # 'Z', and an offset west of UTC (whose text sorts hours before its instant).
    moment = watermark + timedelta(seconds=5)
    layouts = [
        moment.strftime("%Y-%m-%d %H:%M:%S"),
        moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        moment.astimezone(timezone(timedelta(hours=-5))).isoformat(),
    ]
    with sqlite3.connect(url.removeprefix("sqlite:///")) as raw:
        for org, text in zip(orgs, layouts, strict=False):
            raw.execute(
                "UPDATE organizations SET name = ?, updated_at = ? WHERE organization_id = ?",
                (f"renamed {text}", text, org),
            )

    later = extract_table(
        url,
        "organizations",
        lake,
        ch_client,
        now=moment + timedelta(seconds=1),
        overlap=timedelta(0),
        database=ch_database,
    )

    assert later.rows_written == 3
    names = _names(ch_client, ch_database)
    for org, text in zip(orgs, layouts, strict=False):
        assert names[org][0] == f"renamed {text}"
        assert names[org][1] == moment.replace(microsecond=names[org][1].microsecond)


def test_an_unreadable_source_value_is_a_clear_error(
    sqlite_store: FleetCoreStore, lake: Lake, ch_client: Any, ch_database: str
) -> None:
    org = _organization(sqlite_store)
    with sqlite3.connect(sqlite_store.url.removeprefix("sqlite:///")) as raw:
        raw.execute(
            "UPDATE organizations SET configuration = '{not json' WHERE organization_id = ?",
            (org,),
        )
    with pytest.raises(
        ExtractError,
        match=rf"organizations.configuration of organization_id {org}: value '\{{not json'"
        r".*not a JSON document.*fix the value in the source",
    ):
        extract_table(
            sqlite_store.url,
            "organizations",
            lake,
            ch_client,
            now=datetime.now(UTC),
            database=ch_database,
        )


def test_an_update_whose_updated_at_moved_backwards_still_wins(
    store: FleetCoreStore, lake: Lake, ch_client: Any, ch_database: str
) -> None:
    org = _organization(store)
    first = extract_table(
        store.url, "organizations", lake, ch_client, now=datetime.now(UTC), database=ch_database
    )
    assert first.watermark_after is not None
    # A writer whose clock runs behind: the newest state carries an older updated_at.
    behind = first.watermark_after - timedelta(minutes=2)
    store.upsert(
        "organizations",
        [
            {
                "organization_id": org,
                "name": "Acme ✓ (renamed)",
                "sector": "logistics",
                "updated_at": behind,
            }
        ],
    )

    again = extract_table(
        store.url, "organizations", lake, ch_client, now=datetime.now(UTC), database=ch_database
    )

    assert again.rows_written == 1
    assert _names(ch_client, ch_database)[org] == ("Acme ✓ (renamed)", behind)
    assert again.watermark_after == first.watermark_after


def test_json_numbers_beyond_64_bits_are_extracted(
    store: FleetCoreStore, lake: Lake, ch_client: Any, ch_database: str
) -> None:
    org = _organization(store)
    # The store refuses such a number, but another writer can put it in a JSON column.
    document = '{"quota": 123456789012345678901234567890}'
    postgres = store.url.startswith("postgresql")
    table = "fleet_core.organizations" if postgres else "organizations"
    value = "CAST(:doc AS jsonb)" if postgres else ":doc"
    with connect(store.url) as connection, connection.begin():
        connection.execute(
            sa.text(f"UPDATE {table} SET configuration = {value} WHERE organization_id = :org"),
            {"doc": document, "org": org},
        )

    result = extract_table(
        store.url, "organizations", lake, ch_client, now=datetime.now(UTC), database=ch_database
    )

    assert result.rows_written == 1
    text = ch_client.command(
        f"SELECT configuration FROM `{ch_database}`.organizations_current "
        f"WHERE organization_id = '{org}'"
    )
    # SQLite's reader turns it into a float; PostgreSQL's keeps every digit.
    assert text.startswith('{"quota":1') and "23456789" in text
