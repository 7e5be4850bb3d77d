"""Alerts against hostile receivers and readings: Retry-After, redirects, impossible batteries."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from atlasmesh import alerts
from tests.integration import test_alerts as base
from tests.integration.test_alerts import NOW, T0, _settings_for, _spec, _telemetry

# The alert store and crafted fleet of the main alert tests, shared as fixtures.
ops = base.ops
fleet_dbs = base.fleet_dbs

pytestmark = pytest.mark.integration


class Planned:
    """A receiver answering planned (status, headers) pairs, then 200; records what it got."""

    def __init__(self, plan: list[tuple[int, dict[str, str]]]) -> None:
        self.plan = list(plan)
        self.requests: list[tuple[str, int, dict[str, Any] | None]] = []
        planned = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, method: str, body: dict[str, Any] | None) -> None:
                status, headers = planned.plan.pop(0) if planned.plan else (200, {})
                planned.requests.append((method, status, body))
                self.send_response(status)
                for name, value in {"Content-Length": "0", **headers}.items():
                    self.send_header(name, value)
                self.end_headers()

            def do_POST(self) -> None:
                self._answer(
                    "POST", json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                )

            def do_GET(self) -> None:
                self._answer("GET", None)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T0/B0/secret-token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def planned() -> Iterator[Any]:
    made: list[Planned] = []

    def make(plan: list[tuple[int, dict[str, str]]]) -> Planned:
        made.append(Planned(plan))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


def test_a_429_is_retried_no_sooner_than_its_retry_after(ops, warehouse_service, planned):
    client, db = ops
    receiver = planned([(429, {"Retry-After": "120"})])
    settings = _settings_for(warehouse_service, receiver.url)
    alerts.raise_alert(client, _spec(), now=T0, database=db)

    def deliver(offset_s: float) -> alerts.DeliveryReport:
        return alerts.deliver_pending(
            client, settings, now=T0 + timedelta(seconds=offset_s), database=db
        )

    assert deliver(0).failed == 1
    (row,) = alerts.list_deliveries(client, database=db)
    assert row.status == "pending" and "HTTP 429" in row.last_error
    # The receiver asked for two minutes: the 15 s backoff must not hammer it sooner.
    assert row.next_attempt_at == T0 + timedelta(seconds=120)
    assert deliver(60).attempted == 0
    assert deliver(120).delivered == 1
    assert [status for _, status, _ in receiver.requests] == [429, 200]


@pytest.mark.parametrize("status", [301, 302])
def test_a_redirecting_webhook_keeps_the_alert_pending_instead_of_losing_it(
    ops, warehouse_service, planned, status
):
    client, db = ops
    receiver = planned([(status, {"Location": "/elsewhere"})])
    settings = _settings_for(warehouse_service, receiver.url)
    alert = alerts.raise_alert(client, _spec(), now=T0, database=db)

    report = alerts.deliver_pending(client, settings, now=T0, database=db)

    # Followed, the redirect became a GET without the alert, and the row said "delivered".
    assert (report.delivered, report.failed) == (0, 1)
    assert [method for method, _, _ in receiver.requests] == ["POST"]
    (row,) = alerts.list_deliveries(client, database=db)
    assert row.status == "pending" and f"HTTP {status}, a redirect" in row.last_error
    assert "secret-token" not in row.last_error
    # Once the URL answers (here: the next call), the alert arrives with its body.
    later = alerts.deliver_pending(client, settings, now=T0 + timedelta(minutes=1), database=db)
    assert later.delivered == 1
    assert receiver.requests[-1][2]["alert"]["alert_id"] == alert.alert_id


@pytest.mark.parametrize("reading", [float("nan"), float("inf"), -5.0, 150.0])
def test_an_impossible_battery_reading_neither_pages_nor_hides_the_last_real_one(
    fleet_dbs, reading
):
    client, tdb, fdb = fleet_dbs
    # a2's last real reading is critical; a1's is healthy. Each then sends an impossible one.
    _telemetry(client, tdb, "a2", timedelta(minutes=40), battery=6.0)
    _telemetry(client, tdb, "a2", timedelta(minutes=20), battery=reading)
    _telemetry(client, tdb, "a1", timedelta(minutes=40), battery=70.0)
    _telemetry(client, tdb, "a1", timedelta(minutes=20), battery=reading)

    specs = alerts.evaluate_telemetry_rules(
        client, NOW, telemetry_database=tdb, fleet_core_database=fdb
    )

    battery = [s for s in specs if s.alert_type == "battery_critical"]
    assert [s.context["battery_level_percent"] for s in battery] == [6.0]
    assert "nan" not in battery[0].message.lower()
