"""The demo's sizes and the hour it corrupts work for any span a user asks for."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from orchestration.demo import _size, fault_hour


def test_the_fault_goes_to_10_00_of_the_second_day_when_that_hour_has_passed():
    now = datetime(2026, 11, 28, 19, 26, tzinfo=UTC)
    assert fault_hour(date(2026, 11, 8), now) == datetime(2026, 11, 9, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    ("first", "now", "expected"),
    [
        # One day simulated: the last whole hour before now.
        (date(2026, 11, 28), datetime(2026, 11, 28, 19, 26), datetime(2026, 11, 28, 18)),
        # Two days, now before 10:00 of the second: still an hour that was delivered.
        (date(2026, 11, 27), datetime(2026, 11, 28, 9, 5), datetime(2026, 11, 28, 8)),
        # Just after midnight of a one-day span: the first hour, never one before it.
        (date(2026, 11, 28), datetime(2026, 11, 28, 0, 20), datetime(2026, 11, 28, 0)),
    ],
)
def test_a_short_span_gets_a_fault_hour_inside_it(first, now, expected):
    hour = fault_hour(first, now.replace(tzinfo=UTC))
    assert hour == expected.replace(tzinfo=UTC)
    assert (
        datetime(first.year, first.month, first.day, tzinfo=UTC) <= hour <= now.replace(tzinfo=UTC)
    )


@pytest.mark.parametrize("text", ["0", "-3", "abc", "2.5", "367"])
def test_a_bad_demo_size_stops_with_the_variable_and_range(monkeypatch, text):
    monkeypatch.setenv("ATLASMESH_DEMO_DAYS", text)
    with pytest.raises(
        SystemExit, match=r"ATLASMESH_DEMO_DAYS must be a whole number from 1 to 366"
    ):
        _size("ATLASMESH_DEMO_DAYS", 21, 1, 366)


def test_a_demo_size_is_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("ATLASMESH_DEMO_VEHICLES", "5")
    assert _size("ATLASMESH_DEMO_VEHICLES", 36, 1, 10_000) == 5
    monkeypatch.delenv("ATLASMESH_DEMO_VEHICLES")
    assert _size("ATLASMESH_DEMO_VEHICLES", 36, 1, 10_000) == 36
