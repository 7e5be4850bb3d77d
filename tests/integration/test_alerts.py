"""Alerts against the warehouse service: dedup, auto-resolve, audited ack/resolve, webhook
delivery with retry against a local receiver, telemetry and freshness rules, the CLI."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from atlasmesh import alerts
from atlasmesh.alerts_cli import app as alerts_app
from atlasmesh.fleet_core import extract
from atlasmesh.warehouse import telemetry as hot

pytestmark = pytest.mark.integration

# Recent, whole milliseconds: the telemetry table drops rows older than 90 days.
T0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)


@pytest.fixture
def ops(warehouse_service) -> Iterator[tuple[Any, str]]:
    """A client and a throwaway alert-store database, dropped afterwards."""
    database = f"ops_test_{uuid.uuid4().hex[:10]}"
    client = warehouse_service.client()
    yield client, database
    client.command(f"DROP DATABASE IF EXISTS `{database}` SYNC")
    client.close()


def _spec(key: str = "brakes", **overrides: Any) -> alerts.AlertSpec:
    fields: dict[str, Any] = {
        "alert_type": "quality_gate_failed",
        "message": f"check {key} failed",
        "fingerprint": alerts.fingerprint("quality_gate_failed", "processed/x", key),
        "source": "quality_gates",
        "context": {"check_name": key},
        "dagster_run_id": "8d1e5c0a-run",
    }
    return alerts.AlertSpec(**{**fields, **overrides})


# --- store: dedup, lifecycle, audit ------------------------------------------------------


def test_same_problem_twice_is_one_alert_with_two_occurrences(ops):
    client, db = ops
    first = alerts.raise_alert(client, _spec(), now=T0, database=db)
    again = alerts.raise_alert(client, _spec(), now=T0 + timedelta(minutes=5), database=db)

    assert again.alert_id == first.alert_id
    assert (again.occurrences, again.status) == (2, "triggered")
    assert again.triggered_at == T0
    assert again.last_seen_at == T0 + timedelta(minutes=5)
    assert [a.alert_id for a in alerts.list_alerts(client, database=db)] == [first.alert_id]
    # One notification and one audit row for the problem, not one per raise.
    assert [d.event for d in alerts.list_deliveries(client, database=db)] == ["triggered"]
    assert [e.action for e in alerts.read_audit(client, database=db)] == ["alert.triggered"]
    assert first.runbook == "docs/runbooks/quality_gate_failed.md"


def test_a_batch_of_raises_dedups_within_itself_and_against_the_store(ops):
    client, db = ops
    a, b = _spec("a"), _spec("b")
    first = alerts.raise_alerts(client, [a, b, a], now=T0, database=db)
    assert [x.fingerprint for x in first] == [a.fingerprint, b.fingerprint, a.fingerprint]
    assert first[0].alert_id == first[2].alert_id != first[1].alert_id
    (again,) = alerts.raise_alerts(client, [a], now=T0 + timedelta(minutes=1), database=db)
    assert (again.alert_id, again.occurrences) == (first[0].alert_id, 2)
    assert len(alerts.list_alerts(client, database=db)) == 2


def test_problem_that_returns_after_resolution_opens_a_new_alert(ops):
    client, db = ops
    first = alerts.raise_alert(client, _spec(), now=T0, database=db)
    alerts.resolve(client, first.alert_id, "erin", now=T0 + timedelta(minutes=1), database=db)
    second = alerts.raise_alert(client, _spec(), now=T0 + timedelta(minutes=2), database=db)

    assert second.alert_id != first.alert_id
    assert second.occurrences == 1
    statuses = {a.alert_id: a.status for a in alerts.list_alerts(client, "all", database=db)}
    assert statuses == {first.alert_id: "resolved", second.alert_id: "triggered"}


def test_concurrent_raises_of_a_new_problem_make_one_alert(ops, warehouse_service):
    client, db = ops
    alerts.ensure_schema(client, db)
    n, rounds = 4, 5
    errors: list[BaseException] = []

    def raise_one(barrier: threading.Barrier, key: str) -> None:
        own = warehouse_service.client()
        try:
            barrier.wait()
            alerts.raise_alert(own, _spec(key), now=T0, database=db)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            own.close()

    # Several rounds: each is one new problem raised by four evaluators at once.
    for r in range(rounds):
        barrier = threading.Barrier(n)
        threads = [threading.Thread(target=raise_one, args=(barrier, f"k{r}")) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors
    found = alerts.list_alerts(client, "all", database=db)
    assert sorted(a.context["check_name"] for a in found) == [f"k{r}" for r in range(rounds)]
    assert {a.occurrences for a in found} == {n}
    assert len(alerts.list_deliveries(client, database=db)) == rounds


def test_ack_and_resolve_record_who_and_when_in_the_audit_log(ops):
    client, db = ops
    alert = alerts.raise_alert(client, _spec(), now=T0, database=db)
    t_ack, t_res = T0 + timedelta(minutes=3), T0 + timedelta(minutes=40)

    acked = alerts.acknowledge(
        client, alert.alert_id[:8], "alice", note="looking", now=t_ack, database=db
    )
    assert (acked.status, acked.acknowledged_by, acked.acknowledged_at) == (
        "acknowledged",
        "alice",
        t_ack,
    )
    with pytest.raises(alerts.AlertStateError, match="already acknowledged by alice"):
        alerts.acknowledge(client, alert.alert_id, "bob", database=db)

    done = alerts.resolve(
        client, alert.alert_id, "bob", note="re-ran the hour", now=t_res, database=db
    )
    assert (done.status, done.resolved_by, done.resolved_at) == ("resolved", "bob", t_res)
    assert done.acknowledged_by == "alice"
    assert done.resolution_note == "re-ran the hour"
    with pytest.raises(alerts.AlertStateError, match="already resolved by bob"):
        alerts.resolve(client, alert.alert_id, "carol", database=db)
    with pytest.raises(alerts.AlertStateError, match="already resolved"):
        alerts.acknowledge(client, alert.alert_id, "carol", database=db)

    log = alerts.read_audit(client, resource_type="alert", resource_id=alert.alert_id, database=db)
    assert [(e.action, e.actor, e.performed_at) for e in log] == [
        ("alert.triggered", "auto:quality_gates", T0),
        ("alert.acknowledged", "alice", t_ack),
        ("alert.resolved", "bob", t_res),
    ]
    assert log[1].before_state == {"status": "triggered"}
    assert log[1].after_state["status"] == "acknowledged"
    assert log[2].context["note"] == "re-ran the hour"
    assert {e.correlation_id for e in log} == {"8d1e5c0a-run"}


def test_unknown_or_ambiguous_ids_are_refused(ops):
    client, db = ops
    alerts.raise_alert(client, _spec(), now=T0, database=db)
    with pytest.raises(alerts.AlertNotFoundError):
        alerts.acknowledge(client, str(uuid.uuid4()), "alice", database=db)
    with pytest.raises(alerts.AlertNotFoundError, match="at least 6"):
        alerts.acknowledge(client, "ab", "alice", database=db)


def test_auto_resolve_closes_what_recovered_and_only_that(ops):
    client, db = ops
    a, b = _spec("a"), _spec("b")
    other = _spec("c", alert_type="run_failed", source="runs")
    first = alerts.reconcile(client, "quality_gates", [a, b], now=T0, database=db)
    alerts.raise_alert(client, other, now=T0, database=db)
    assert (len(first.raised), first.repeated, first.resolved) == (2, [], [])

    t1 = T0 + timedelta(minutes=10)
    second = alerts.reconcile(client, "quality_gates", [a], now=t1, database=db)

    assert [x.fingerprint for x in second.repeated] == [a.fingerprint]
    assert [x.fingerprint for x in second.resolved] == [b.fingerprint]
    resolved = second.resolved[0]
    assert (resolved.status, resolved.resolved_by, resolved.resolved_at) == (
        "resolved",
        "auto:quality_gates",
        t1,
    )
    open_now = {x.fingerprint: x for x in alerts.list_alerts(client, database=db)}
    # Another source's alert is not this evaluation's business.
    assert set(open_now) == {a.fingerprint, other.fingerprint}
    assert open_now[a.fingerprint].occurrences == 2
    audit = alerts.read_audit(client, resource_id=resolved.alert_id, database=db)
    assert [(e.action, e.actor, e.context.get("auto")) for e in audit][-1] == (
        "alert.resolved",
        "auto:quality_gates",
        True,
    )

    kept = alerts.resolve_missing(client, "quality_gates", [], keep=lambda x: True, database=db)
    assert kept == []
    assert alerts.resolve_fingerprint(client, a.fingerprint, who="auto:gate", database=db)
    assert alerts.resolve_fingerprint(client, a.fingerprint, who="auto:gate", database=db) is None


def test_alerts_are_logged_and_skipped_without_a_webhook(ops, warehouse_service, caplog):
    client, db = ops
    settings = warehouse_service.settings.model_copy(update={"alert_webhook_url": SecretStr("")})
    with caplog.at_level(logging.INFO, logger="atlasmesh.alerts"):
        alert = alerts.raise_alert(client, _spec(), now=T0, database=db)
    record = next(r for r in caplog.records if getattr(r, "alert", None))
    assert record.levelno == logging.ERROR  # critical severity
    assert record.alert["alert_id"] == alert.alert_id
    assert record.alert["runbook"] == "docs/runbooks/quality_gate_failed.md"

    report = alerts.deliver_pending(client, settings, now=T0, database=db)
    assert report.skipped == 1
    assert [d.status for d in alerts.list_deliveries(client, database=db)] == ["skipped"]
    # Nothing is left to flood a webhook configured later.
    assert alerts.deliver_pending(client, settings, now=T0, database=db).skipped == 0


# --- webhook delivery against a real local receiver --------------------------------------


class Receiver:
    """A local HTTP endpoint answering planned statuses (then 200) and recording JSON bodies."""

    def __init__(self, statuses: list[int], delay_s: float = 0.0):
        self.statuses = list(statuses)
        self.delay_s = delay_s
        self.requests: list[tuple[int, dict[str, Any]]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                time.sleep(receiver.delay_s)
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                receiver.requests.append((status, body))
                payload = b"ok" if status == 200 else b"unavailable"
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T000/B000/secret-token"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver_factory() -> Iterator[Any]:
    made: list[Receiver] = []

    def make(statuses: list[int], delay_s: float = 0.0) -> Receiver:
        made.append(Receiver(statuses, delay_s))
        return made[-1]

    yield make
    for r in made:
        r.close()


def _settings_for(warehouse_service, url: str):
    return warehouse_service.settings.model_copy(
        update={
            "alert_webhook_url": SecretStr(url),
            "dagster_url": "http://dagster.example:3000",
            "runbook_base_url": "https://git.example/atlasmesh/blob/main",
        }
    )


def test_webhook_down_then_up_retries_with_backoff_and_delivers_once(
    ops, warehouse_service, receiver_factory, caplog
):
    client, db = ops
    receiver = receiver_factory([500, 503])
    settings = _settings_for(warehouse_service, receiver.url)
    alert = alerts.raise_alert(client, _spec(), now=T0, database=db)

    def deliver(offset_s: float) -> alerts.DeliveryReport:
        return alerts.deliver_pending(
            client, settings, now=T0 + timedelta(seconds=offset_s), database=db
        )

    with caplog.at_level(logging.INFO, logger="atlasmesh.alerts"):
        assert deliver(0).failed == 1  # down: HTTP 500
        (row,) = alerts.list_deliveries(client, database=db)
        assert (row.status, row.attempts) == ("pending", 1)
        assert row.next_attempt_at == T0 + timedelta(seconds=15)
        assert "HTTP 500" in row.last_error

        assert deliver(10).attempted == 0  # backing off: the receiver is not called
        assert deliver(15).failed == 1  # still down: HTTP 503, the delay doubles
        (row,) = alerts.list_deliveries(client, database=db)
        assert row.next_attempt_at == T0 + timedelta(seconds=45)
        assert deliver(44).attempted == 0
        assert deliver(45).delivered == 1  # up again
        assert deliver(600).attempted == 0  # delivered once, never again

    assert [status for status, _ in receiver.requests] == [500, 503, 200]
    (row,) = alerts.list_deliveries(client, database=db)
    assert (row.status, row.attempts, row.delivered_at) == (
        "delivered",
        3,
        T0 + timedelta(seconds=45),
    )
    # The webhook URL holds a token: it never reaches the log.
    assert "secret-token" not in caplog.text
    assert "HTTP 500" in caplog.text

    body = receiver.requests[-1][1]
    assert alert.message in body["text"]
    assert body["alert"]["alert_id"] == alert.alert_id
    assert body["alert"]["event"] == "triggered"
    assert body["attachments"][0]["color"] == "#d1242f"
    rendered = json.dumps(body["blocks"])
    assert (
        "https://git.example/atlasmesh/blob/main/docs/runbooks/quality_gate_failed.md" in rendered
    )
    assert "http://dagster.example:3000/runs/8d1e5c0a-run" in rendered
    assert "*Severity*\\ncritical" in rendered


def test_resolution_is_sent_after_the_trigger_even_when_the_trigger_needed_a_retry(
    ops, warehouse_service, receiver_factory
):
    client, db = ops
    receiver = receiver_factory([500])
    settings = _settings_for(warehouse_service, receiver.url)
    alert = alerts.raise_alert(client, _spec(), now=T0, database=db)
    alerts.resolve(client, alert.alert_id, "erin", now=T0 + timedelta(seconds=1), database=db)

    first = alerts.deliver_pending(client, settings, now=T0 + timedelta(seconds=2), database=db)
    assert (first.attempted, first.waiting) == (1, 2)
    # The resolution is due, but waits for its trigger's retry.
    assert (
        alerts.deliver_pending(
            client, settings, now=T0 + timedelta(seconds=3), database=db
        ).attempted
        == 0
    )
    last = alerts.deliver_pending(client, settings, now=T0 + timedelta(seconds=20), database=db)
    assert (last.delivered, last.waiting) == (2, 0)
    assert [(s, b["alert"]["event"]) for s, b in receiver.requests] == [
        (500, "triggered"),
        (200, "triggered"),
        (200, "resolved"),
    ]
    resolved = receiver.requests[-1][1]
    assert resolved["text"].startswith(":white_check_mark: Resolved:")
    assert resolved["attachments"][0]["color"] == "#2da44e"


def test_a_hanging_webhook_costs_the_timeout_not_the_tick(ops, warehouse_service, receiver_factory):
    client, db = ops
    receiver = receiver_factory([], delay_s=6.0)
    settings = _settings_for(warehouse_service, receiver.url)
    alerts.raise_alert(client, _spec(), now=T0, database=db)

    started = time.monotonic()
    report = alerts.deliver_pending(client, settings, now=T0, database=db, timeout_s=0.5)
    elapsed = time.monotonic() - started

    assert report.failed == 1
    assert elapsed < 4.0  # the receiver answers after 6 s
    (row,) = alerts.list_deliveries(client, database=db)
    assert row.status == "pending"
    assert "did not answer within 0.5 s" in row.last_error or "timed out" in row.last_error


def test_a_raised_alert_reaches_the_webhook_within_60_seconds(
    ops, warehouse_service, receiver_factory
):
    client, db = ops
    receiver = receiver_factory([])
    settings = _settings_for(warehouse_service, receiver.url)
    started = time.monotonic()
    alert = alerts.raise_alert(client, _spec(), database=db)
    alerts.deliver_pending(client, settings, database=db)
    assert time.monotonic() - started < 60
    assert [b["alert"]["alert_id"] for _, b in receiver.requests] == [alert.alert_id]


# --- telemetry rules on crafted tables ---------------------------------------------------

NOW = T0
ORG = str(uuid.uuid4())
FLEET_A, FLEET_B, FLEET_PAUSED, FLEET_NEW = (str(uuid.uuid4()) for _ in range(4))
V = {name: str(uuid.uuid4()) for name in ("a1", "a2", "a3", "a4", "b1", "p1", "n1")}
FLEET_OF = {
    "a1": FLEET_A,
    "a2": FLEET_A,
    "a3": FLEET_A,
    "a4": FLEET_A,
    "b1": FLEET_B,
    "p1": FLEET_PAUSED,
    "n1": FLEET_NEW,
}


@pytest.fixture
def fleet_dbs(warehouse_service) -> Iterator[tuple[Any, str, str]]:
    """A crafted hot-path table and fleet-core views in throwaway databases."""
    tag = uuid.uuid4().hex[:8]
    tdb, fdb = f"tel_{tag}", f"fc_{tag}"
    client = warehouse_service.client()
    hot.ensure_schema(client, tdb)
    for table in ("fleets", "vehicles"):
        for statement in extract.clickhouse_ddl(table, database=fdb):
            client.command(statement)
    long_ago = NOW - timedelta(days=30)
    fleets = [
        [uuid.UUID(f), uuid.UUID(ORG), name, "logistics", status, long_ago, long_ago]
        for f, name, status in (
            (FLEET_A, "Alpha", "active"),
            (FLEET_B, "Bravo", "active"),
            (FLEET_PAUSED, "Paused", "inactive"),
            (FLEET_NEW, "New", "active"),
        )
    ]
    client.insert(
        "fleets",
        fleets,
        column_names=[
            "fleet_id",
            "organization_id",
            "name",
            "sector",
            "status",
            "created_at",
            "updated_at",
        ],
        database=fdb,
    )
    vehicles = [
        [
            uuid.UUID(V[n]),
            uuid.UUID(FLEET_OF[n]),
            f"AM-{n.upper()}",
            "Ford",
            "E-Transit 390",
            f"SN-{n}",
            "{}",
            NOW - timedelta(minutes=30) if n == "n1" else long_ago,
            long_ago,
        ]
        for n in V
    ]
    client.insert(
        "vehicles",
        vehicles,
        column_names=[
            "vehicle_id",
            "fleet_id",
            "asset_tag",
            "manufacturer",
            "model",
            "serial_number",
            "vehicle_profile",
            "created_at",
            "updated_at",
        ],
        database=fdb,
    )
    yield client, tdb, fdb
    for db in (tdb, fdb):
        client.command(f"DROP DATABASE IF EXISTS `{db}` SYNC")
    client.close()


def _telemetry(
    client: Any,
    tdb: str,
    vehicle: str,
    ago: timedelta,
    *,
    battery: float | None = None,
    fuel: float | None = None,
    codes: tuple[str, ...] = (),
) -> None:
    at = NOW - ago
    client.insert(
        hot.TELEMETRY_TABLE,
        [
            [
                uuid.uuid4(),
                uuid.UUID(V[vehicle]),
                at,
                at + timedelta(seconds=40),
                battery,
                fuel,
                list(codes),
                "driving",
            ]
        ],
        column_names=[
            "telemetry_id",
            "vehicle_id",
            "recorded_at",
            "ingested_at",
            "battery_level_percent",
            "fuel_level_percent",
            "diagnostic_codes",
            "operational_status",
        ],
        database=tdb,
    )


def _seed_telemetry(client: Any, tdb: str) -> None:
    def m(minutes: int) -> timedelta:
        return timedelta(minutes=minutes)

    # a1: a critical brake code in its latest hours; an older critical code outside the window.
    _telemetry(client, tdb, "a1", m(7 * 60), battery=80, codes=("P0A93",))
    _telemetry(client, tdb, "a1", m(50), battery=72, codes=("C1513", "C0750"))
    _telemetry(client, tdb, "a1", m(20), battery=70)
    # a2: battery fell to 6% (critical); a3: non-critical codes only, an ICE vehicle.
    _telemetry(client, tdb, "a2", m(90), battery=25)
    _telemetry(client, tdb, "a2", m(30), battery=6.0)
    _telemetry(client, tdb, "a3", m(25), fuel=40, codes=("C0750", "P0562"))
    # a4: was critically low, charged since: only the latest reading counts.
    _telemetry(client, tdb, "a4", m(100), battery=4)
    _telemetry(client, tdb, "a4", m(15), battery=60)
    # Fleet Bravo's only vehicle went quiet 5 h ago; the paused fleet never sent anything.
    _telemetry(client, tdb, "b1", m(300), battery=55)
    # A reading after `now` (a later evaluation's data) is ignored.
    _telemetry(client, tdb, "a3", -m(10), fuel=40, codes=("P0217",))


def _found(specs: list[alerts.AlertSpec]) -> set[tuple[str, str | None, str | None]]:
    names = {v: k for k, v in V.items()}
    fleets = {FLEET_A: "A", FLEET_B: "B", FLEET_PAUSED: "P", FLEET_NEW: "N"}
    return {
        (
            s.alert_type,
            names.get(s.vehicle_id or "") or fleets.get(s.fleet_id or ""),
            s.context.get("dtc"),
        )
        for s in specs
    }


def test_telemetry_rules_find_critical_codes_low_batteries_and_stale_fleets(fleet_dbs):
    client, tdb, fdb = fleet_dbs
    _seed_telemetry(client, tdb)

    specs = alerts.evaluate_telemetry_rules(
        client, NOW, telemetry_database=tdb, fleet_core_database=fdb
    )

    assert _found(specs) == {
        ("critical_dtc", "a1", "C1513"),
        ("battery_critical", "a2", None),
        ("telemetry_stale", "B", None),
    }
    by_type = {s.alert_type: s for s in specs}
    dtc = by_type["critical_dtc"]
    assert (dtc.fleet_id, dtc.organization_id, dtc.severity) == (FLEET_A, ORG, "critical")
    assert "AM-A1" in dtc.message and "brake pad wear limit" in dtc.message
    assert by_type["battery_critical"].context["battery_level_percent"] == 6.0
    stale = by_type["telemetry_stale"]
    assert (
        stale.context["last_ingested_at"]
        == (NOW - timedelta(minutes=300) + timedelta(seconds=40)).isoformat()
    )
    assert "Bravo" in stale.message
    # Fingerprints say what and where, not when: the same condition later is the same problem.
    later = alerts.evaluate_telemetry_rules(
        client, NOW + timedelta(minutes=5), telemetry_database=tdb, fleet_core_database=fdb
    )
    assert {s.fingerprint for s in later} >= {dtc.fingerprint, stale.fingerprint}


def test_telemetry_alerts_persist_as_one_and_resolve_when_the_data_recovers(fleet_dbs, ops):
    client, tdb, fdb = fleet_dbs
    _, db = ops
    _seed_telemetry(client, tdb)
    opts = {"telemetry_database": tdb, "fleet_core_database": fdb, "database": db}

    first = alerts.check_telemetry_rules(client, NOW, **opts)
    assert len(first.raised) == 3

    # a2 charged, Bravo's vehicle is back; a1 still reports its brake code.
    _telemetry(client, tdb, "a2", timedelta(minutes=-5), battery=45)
    _telemetry(client, tdb, "b1", timedelta(minutes=-5), battery=50)
    _telemetry(client, tdb, "a1", timedelta(minutes=-5), battery=69, codes=("C1513",))
    second = alerts.check_telemetry_rules(client, NOW + timedelta(minutes=10), **opts)

    assert {a.alert_type for a in second.resolved} == {"battery_critical", "telemetry_stale"}
    assert {a.resolved_by for a in second.resolved} == {"auto:telemetry_rules"}
    first_dtc = next(a for a in first.raised if a.alert_type == "critical_dtc")
    (dtc,) = second.repeated
    assert (dtc.alert_id, dtc.occurrences, dtc.status) == (first_dtc.alert_id, 2, "triggered")

    # A day later nothing new has arrived from a1: its code is not "recovered", a silent
    # vehicle is not judged, so its alert stays open (the fleet's silence alerts instead).
    third = alerts.check_telemetry_rules(client, NOW + timedelta(hours=25), **opts)
    assert third.resolved == []
    still = alerts.get_alert(client, dtc.alert_id, database=db)
    assert (still.status, still.occurrences) == ("triggered", 2)
    stale = {a.fleet_id for a in third.raised if a.alert_type == "telemetry_stale"}
    assert stale == {FLEET_A, FLEET_B, FLEET_NEW}
    assert any("no arrival in the last 24 h" in a.message for a in third.raised)


# --- freshness ---------------------------------------------------------------------------


def test_freshness_alerts_on_stale_or_missing_tables_and_resolves_when_fresh(ops):
    client, db = ops
    marts = f"marts_{uuid.uuid4().hex[:8]}"
    client.command(f"CREATE DATABASE `{marts}`")
    try:
        client.command(
            f"CREATE TABLE `{marts}`.fct_fleet_hours (hour DateTime('UTC'), n UInt32) "
            "ENGINE = MergeTree ORDER BY hour"
        )
        client.insert(
            "fct_fleet_hours",
            [[NOW - timedelta(hours=5), 1]],
            column_names=["hour", "n"],
            database=marts,
        )
        hours = alerts.FreshnessTarget(
            "marts.fct_fleet_hours", marts, "fct_fleet_hours", "hour", timedelta(hours=2)
        )
        never = alerts.FreshnessTarget(
            "marts.fct_missing", marts, "fct_missing", "day", timedelta(days=1)
        )

        specs = alerts.evaluate_freshness(client, NOW, [hours, never])
        assert {s.context["target"]: s.context["problem"] for s in specs} == {
            "marts.fct_fleet_hours": None,
            "marts.fct_missing": "the table does not exist (never built?)",
        }
        assert specs[0].context["age_hours"] == 5.0
        first = alerts.check_freshness(client, NOW, [hours, never], database=db)
        assert len(first.raised) == 2

        client.insert(
            "fct_fleet_hours",
            [[NOW - timedelta(minutes=30), 1]],
            column_names=["hour", "n"],
            database=marts,
        )
        second = alerts.check_freshness(client, NOW, [hours], database=db)
        assert [a.context["target"] for a in second.resolved] == ["marts.fct_fleet_hours"]
        # The target not evaluated this time keeps its alert.
        assert [a.context["target"] for a in alerts.list_alerts(client, database=db)] == [
            "marts.fct_missing"
        ]
    finally:
        client.command(f"DROP DATABASE IF EXISTS `{marts}` SYNC")


# --- CLI -------------------------------------------------------------------------------


def _cli_against(warehouse_service, monkeypatch) -> None:
    """Point the `atlasmesh alerts` commands at the test session's warehouse service."""
    monkeypatch.setenv("ATLASMESH_HOME", str(warehouse_service.home))
    monkeypatch.setenv("ATLASMESH_WAREHOUSE_PORT", str(warehouse_service.port))
    monkeypatch.setenv("ATLASMESH_CLICKHOUSE_URL", "")


def test_cli_lists_acks_and_resolves_with_who(ops, warehouse_service, monkeypatch):
    client, db = ops
    _cli_against(warehouse_service, monkeypatch)
    monkeypatch.setenv("LOGNAME", "dave")
    alert = alerts.raise_alert(client, _spec(), now=T0, database=db)
    short = alert.alert_id[:8]
    runner = CliRunner()

    listed = runner.invoke(alerts_app, ["--database", db, "list"])
    assert listed.exit_code == 0, listed.output
    assert short in listed.output and "quality_gate_failed" in listed.output
    assert "triggered" in listed.output

    acked = runner.invoke(alerts_app, ["--database", db, "ack", short, "--by", "carol"])
    assert acked.exit_code == 0, acked.output
    assert f"acknowledged {alert.alert_id}" in acked.output and "carol" in acked.output

    again = runner.invoke(alerts_app, ["--database", db, "ack", short, "--by", "carol"])
    assert again.exit_code == 1
    assert "already acknowledged by carol" in again.output

    resolved = runner.invoke(alerts_app, ["--database", db, "resolve", short, "--note", "fixed"])
    assert resolved.exit_code == 0, resolved.output
    assert "by dave" in resolved.output  # --by defaults to the OS user

    assert "no open alerts" in runner.invoke(alerts_app, ["--database", db, "list"]).output
    everything = runner.invoke(alerts_app, ["--database", db, "list", "--status", "all"])
    assert short in everything.output and "resolved" in everything.output

    shown = runner.invoke(alerts_app, ["--database", db, "show", short])
    assert shown.exit_code == 0, shown.output
    assert "alert.acknowledged   carol" in shown.output
    assert "alert.resolved       dave  (fixed)" in shown.output

    audit = alerts.read_audit(client, resource_id=alert.alert_id, database=db)
    assert [(e.action, e.actor) for e in audit] == [
        ("alert.triggered", "auto:quality_gates"),
        ("alert.acknowledged", "carol"),
        ("alert.resolved", "dave"),
    ]

    unknown = runner.invoke(alerts_app, ["--database", db, "resolve", "ffffffff", "--by", "x"])
    assert unknown.exit_code == 1 and "no alert" in unknown.output


def test_cli_refuses_a_bad_who_and_leaves_the_alert_as_it_was(ops, warehouse_service, monkeypatch):
    client, db = ops
    _cli_against(warehouse_service, monkeypatch)
    monkeypatch.setenv("LOGNAME", "dave")
    alert = alerts.raise_alert(client, _spec(), now=T0, database=db)
    runner = CliRunner()
    for by in ("", "   ", "carol\nmallory", "\x1b[31mred", "x" * 201):
        for command in ("ack", "resolve"):
            result = runner.invoke(
                alerts_app, ["--database", db, command, alert.alert_id, "--by", by]
            )
            assert result.exit_code == 1, (by, result.output)
            assert "needs a who (--by)" in result.output
    assert alerts.get_alert(client, alert.alert_id, database=db).status == "triggered"
    assert [
        e.action for e in alerts.read_audit(client, resource_id=alert.alert_id, database=db)
    ] == ["alert.triggered"]
    fine = runner.invoke(alerts_app, ["--database", db, "ack", alert.alert_id, "--by", "Zoë ✓"])
    assert fine.exit_code == 0 and "by Zoë ✓" in fine.output, fine.output


@pytest.mark.parametrize("database", ["", "a`b", "ops; DROP", "1ops", "ops.alerts"])
def test_cli_refuses_a_database_that_is_not_a_name(warehouse_service, monkeypatch, database):
    _cli_against(warehouse_service, monkeypatch)
    result = CliRunner().invoke(alerts_app, ["--database", database, "list"])
    assert result.exit_code == 2 and "is not a database name" in result.output, result.output
    client = warehouse_service.client()
    try:
        names = {r[0] for r in client.query("SHOW DATABASES").result_rows}
    finally:
        client.close()
    assert database not in names
