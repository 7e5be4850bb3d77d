"""Alerts without a warehouse: types, runbooks, fingerprints, specs, backoff, webhook body."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import SecretStr

from atlasmesh import alerts
from atlasmesh.alerts.delivery import Backoff, slack_payload
from atlasmesh.alerts.model import Alert
from atlasmesh.settings import Settings
from atlasmesh.simulator.catalog import COMPONENTS

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("alert_type", sorted(alerts.ALERT_TYPES))
def test_every_alert_type_has_a_runbook_that_says_what_to_do(alert_type):
    runbook = REPO / alerts.ALERT_TYPES[alert_type].runbook
    assert runbook.is_file(), f"{runbook} is missing"
    text = runbook.read_text()
    for section in (
        "## What it means",
        "## How to check",
        "## How to fix",
        "## Acknowledge and resolve",
    ):
        assert section in text, f"{runbook.name} lacks {section!r}"
    assert "atlasmesh alerts ack" in text and "atlasmesh alerts resolve" in text


def test_fingerprint_depends_on_what_and_where_only():
    a = alerts.fingerprint("critical_dtc", "v1", "C1513")
    assert a == alerts.fingerprint("critical_dtc", "v1", "C1513")
    assert len({a, alerts.fingerprint("critical_dtc", "v1", "P0A93"),
                alerts.fingerprint("critical_dtc", "v2", "C1513"),
                alerts.fingerprint("battery_critical", "v1", "C1513")}) == 4  # fmt: skip
    # Key boundaries matter: ("ab", "c") is not ("a", "bc").
    assert alerts.fingerprint("t", "ab", "c") != alerts.fingerprint("t", "a", "bc")


def test_spec_defaults_come_from_the_type_and_bad_input_is_refused():
    spec = alerts.AlertSpec("critical_dtc", "m", "fp", vehicle_id=str(uuid.uuid4()).upper())
    assert (spec.severity, spec.source) == ("critical", "telemetry_rules")
    assert spec.vehicle_id == spec.vehicle_id.lower()
    assert spec.runbook == "docs/runbooks/critical_dtc.md"
    with pytest.raises(ValueError, match="unknown alert type"):
        alerts.AlertSpec("disk_full", "m", "fp")
    with pytest.raises(ValueError, match="severity"):
        alerts.AlertSpec("run_failed", "m", "fp", severity="fatal")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="vehicle_id must be a UUID"):
        alerts.AlertSpec("critical_dtc", "m", "fp", vehicle_id="truck-7")
    with pytest.raises(ValueError, match="fingerprint"):
        alerts.AlertSpec("run_failed", "m", "")


def test_critical_codes_are_the_catalogue_components_that_strand_a_vehicle():
    codes = alerts.critical_dtcs()
    assert codes == {"C1513", "P0A93", "P0217", "P0A1B", "P0300"}
    for component in COMPONENTS:
        assert (component.dtc_ev in codes) is component.critical


def test_gate_and_run_specs_keep_one_fingerprint_per_problem_across_runs():
    one = alerts.quality_gate_failed(
        asset_key="processed/vehicle_telemetry", check_name="telemetry_ids_unique",
        partition="2026-11-27-06:00", dagster_run_id="run-1", description="12 duplicates",
    )  # fmt: skip
    two = alerts.quality_gate_failed(
        asset_key="processed/vehicle_telemetry", check_name="telemetry_ids_unique",
        partition="2026-11-27-06:00", dagster_run_id="run-2",
    )  # fmt: skip
    other_hour = alerts.quality_gate_failed(
        asset_key="processed/vehicle_telemetry", check_name="telemetry_ids_unique",
        partition="2026-11-27-07:00",
    )  # fmt: skip
    assert one.fingerprint == two.fingerprint != other_hour.fingerprint
    assert one.severity == "critical" and "12 duplicates" in one.message
    warn = alerts.quality_gate_failed(asset_key="a", check_name="c", blocking=False)
    assert warn.severity == "warning"
    failed = alerts.run_failed(
        job_name="publish_telemetry", dagster_run_id="r", error="boom\ntrace"
    )
    assert failed.message == "Run of publish_telemetry failed: boom"
    assert (
        failed.fingerprint
        == alerts.run_failed(job_name="publish_telemetry", dagster_run_id="s").fingerprint
    )


def test_backoff_doubles_from_the_base_up_to_the_cap():
    b = Backoff(base_s=15, max_s=600)
    assert [b.delay(n).total_seconds() for n in range(1, 8)] == [15, 30, 60, 120, 240, 480, 600]


def _alert(**overrides) -> Alert:
    at = datetime(2026, 11, 27, 6, 0, tzinfo=UTC)
    fields = dict(
        alert_id=str(uuid.uuid4()), alert_type="battery_critical", severity="critical",
        source="telemetry_rules", fingerprint="fp", message="Vehicle AM-1 battery at 6.0%",
        context={"battery_level_percent": 6.0}, runbook="docs/runbooks/battery_critical.md",
        organization_id=None, fleet_id=None, vehicle_id=str(uuid.uuid4()), trip_id=None,
        dagster_run_id="", status="triggered", triggered_at=at, last_seen_at=at, occurrences=1,
        acknowledged_at=None, acknowledged_by=None, resolved_at=None, resolved_by=None,
        resolution_note=None,
    )  # fmt: skip
    return Alert(**{**fields, **overrides})


def test_webhook_body_is_slack_compatible_and_links_paths_without_a_base_url():
    settings = Settings(alert_webhook_url=SecretStr("https://hooks.example/T/B/tok"))
    alert = _alert()
    body = slack_payload(alert, "triggered", settings)
    assert body["text"].startswith(":rotating_light: [CRITICAL] Battery critically low:")
    assert [b["type"] for b in body["blocks"]] == ["header", "section", "section", "context"]
    assert len(body["blocks"][0]["text"]["text"]) <= 150
    context = body["blocks"][3]["elements"][0]["text"]
    # No published repository: the runbook is a path, and no run link without a run.
    assert "`docs/runbooks/battery_critical.md`" in context
    assert "Dagster run" not in context
    assert body["alert"]["dagster_run_url"] is None
    assert "tok" not in str(body)

    with_run = slack_payload(_alert(dagster_run_id="abc123ef-0000"), "triggered", settings)
    assert (
        "<http://127.0.0.1:3000/runs/abc123ef-0000|abc123ef>"
        in with_run["blocks"][3]["elements"][0]["text"]
    )
    long = slack_payload(_alert(message="x" * 5000), "triggered", settings)
    assert len(long["blocks"][1]["text"]["text"]) <= 3000


def test_alert_settings_keep_the_webhook_secret(monkeypatch):
    monkeypatch.setenv(
        "ATLASMESH_ALERT_WEBHOOK_URL", "https://hooks.slack.com/services/T0/B0/xyzzy"
    )
    s = Settings()
    assert s.alert_webhook_url.get_secret_value().endswith("xyzzy")
    assert "xyzzy" not in repr(s) + str(s.model_dump())
    assert Settings.model_fields["alert_webhook_url"].default.get_secret_value() == ""


@pytest.mark.parametrize(
    "url",
    [
        "not a url tok3n",
        "http://[::1/tok3n",
        "file:///etc/hostname?tok3n",
        "ftp://hooks.example/tok3n",
        "http://127.0.0.1:abc/tok3n",
        "http://127.0.0.1:99999/tok3n",
        "http://127.0.0.1:9/a tok3n",
        "https:///tok3n",
    ],
)
def test_a_malformed_webhook_url_fails_delivery_without_echoing_it(url):
    from atlasmesh.alerts.delivery import post_webhook

    with pytest.raises(OSError, match="not an http:// or https:// URL") as info:
        post_webhook(url, {"text": "x"}, timeout_s=1)
    assert "tok3n" not in str(info.value)
