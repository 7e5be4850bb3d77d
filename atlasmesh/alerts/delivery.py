"""Alert delivery: a Slack-compatible webhook fed from an outbox, retried with backoff, never lost.

Raising or resolving an alert puts a notification into `ops.alert_deliveries` in the same
call (the log line is written there and then). `deliver_pending` sends what is due, oldest
first; a failed send is retried after an exponentially growing delay, and the row stays
pending until the webhook accepts it. Called every ~30 s (a Dagster sensor), it delivers an
alert within one tick of being raised: well inside the 60 s the platform promises.
Delivery is at least once: a crash between the send and the outbox write sends it again,
so payloads carry `alert_id` and `event` for receivers that deduplicate.
"""

from __future__ import annotations

import contextlib
import email.utils
import http.client
import logging
import math
import socket
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson

from atlasmesh.alerts.model import Alert, AlertNotFoundError
from atlasmesh.alerts.store import (
    DATABASE,
    DELIVERIES_TABLE,
    DELIVERY_COLUMNS,
    _now,
    _opt_utc,
    _utc,
    ensure_schema,
    get_alert,
)

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

    from atlasmesh.settings import Settings

log = logging.getLogger("atlasmesh.alerts.delivery")

# Slack's attachment colours per severity; green once resolved.
_COLORS = {"critical": "#d1242f", "warning": "#d4a72c", "info": "#0969da", "resolved": "#2da44e"}
_ICONS = {"critical": ":rotating_light:", "warning": ":warning:", "info": ":information_source:"}
# Slack truncates or rejects longer texts (header 150, section 3000 characters).
_HEADER_MAX = 150
_SECTION_MAX = 2900


@dataclass(frozen=True)
class Backoff:
    """Delay before retry n: base * 2^(n-1), capped, so a dead webhook costs one call per cap."""

    # The sensor ticks every ~30 s: a first retry on the next tick, then doubling to at
    # most 10 minutes, so an outage of hours costs a few requests per alert, not thousands.
    base_s: float = 15.0
    max_s: float = 600.0

    def delay(self, failures: int) -> timedelta:
        """Wait after the given number of consecutive failed attempts (1 = the first)."""
        return timedelta(seconds=min(self.base_s * 2 ** max(failures - 1, 0), self.max_s))

    def after(self, failures: int, retry_after_s: float | None) -> timedelta:
        """The delay, lengthened to a receiver's Retry-After (429/503) up to the cap."""
        asked = timedelta(seconds=min(retry_after_s or 0.0, self.max_s))
        return max(self.delay(failures), asked)


@dataclass(frozen=True)
class DeliveryReport:
    """What one `deliver_pending` call did."""

    attempted: int = 0
    delivered: int = 0
    failed: int = 0
    skipped: int = 0
    dropped: int = 0  # outbox rows naming an alert that does not exist
    waiting: int = 0  # still pending afterwards (backing off, or behind a failure)


def runbook_link(alert: Alert, settings: Settings) -> str:
    """The runbook as a URL when the repository is published (`runbook_base_url`), else its path."""
    base = settings.runbook_base_url.rstrip("/")
    return f"{base}/{alert.runbook}" if base else alert.runbook


def run_link(alert: Alert, settings: Settings) -> str | None:
    """The Dagster UI page of the run that raised the alert, if a run raised it."""
    if not alert.dagster_run_id:
        return None
    return f"{settings.dagster_url.rstrip('/')}/runs/{alert.dagster_run_id}"


def _mrkdwn_link(target: str, label: str) -> str:
    return f"<{target}|{label}>" if target.startswith(("http://", "https://")) else f"`{target}`"


def slack_payload(alert: Alert, event: str, settings: Settings) -> dict[str, Any]:
    """A Slack incoming-webhook body (`text`, `blocks`, `attachments`) plus an `alert` object."""
    runbook = runbook_link(alert, settings)
    run = run_link(alert, settings)
    resolved = event == "resolved"
    prefix = "Resolved: " if resolved else f"[{alert.severity.upper()}] "
    icon = ":white_check_mark:" if resolved else _ICONS.get(alert.severity, ":bell:")
    text = f"{icon} {prefix}{alert.title}: {alert.message}"
    links = [f"Runbook: {_mrkdwn_link(runbook, runbook)}"]
    if run:
        links.append(f"Dagster run: {_mrkdwn_link(run, alert.dagster_run_id[:8])}")
    links.append(f"alert `{alert.alert_id}`")
    state = alert.status
    if alert.resolved_by:
        state += f" by {alert.resolved_by}"
    elif alert.acknowledged_by:
        state += f" by {alert.acknowledged_by}"
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": f"{prefix}{alert.title}"[:_HEADER_MAX]},
        },
        {"type": "section", "text": {"type": "mrkdwn", "text": alert.message[:_SECTION_MAX]}},
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": f"*Severity*\n{alert.severity}"},
                {"type": "mrkdwn", "text": f"*Status*\n{state}"},
                {"type": "mrkdwn", "text": f"*Subject*\n{alert.subject or '-'}"},
                {"type": "mrkdwn", "text": f"*Occurrences*\n{alert.occurrences}"},
            ],
        },
        {"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(links)}]},
    ]
    fields = [
        {"title": "Severity", "value": alert.severity, "short": True},
        {"title": "Type", "value": alert.alert_type, "short": True},
        {"title": "Runbook", "value": runbook, "short": False},
    ]
    if run:
        fields.append({"title": "Dagster run", "value": run, "short": False})
    return {
        "text": text,
        "blocks": blocks,
        "attachments": [
            {
                "color": _COLORS["resolved" if resolved else alert.severity],
                "fallback": text,
                "fields": fields,
                "ts": int(alert.triggered_at.timestamp()),
            }
        ],
        "alert": {
            "alert_id": alert.alert_id,
            "event": event,
            "alert_type": alert.alert_type,
            "severity": alert.severity,
            "status": alert.status,
            "message": alert.message,
            "fingerprint": alert.fingerprint,
            "subject": alert.subject,
            "organization_id": alert.organization_id,
            "fleet_id": alert.fleet_id,
            "vehicle_id": alert.vehicle_id,
            "occurrences": alert.occurrences,
            "triggered_at": alert.triggered_at.isoformat(),
            "resolved_at": alert.resolved_at.isoformat() if alert.resolved_at else None,
            "runbook": runbook,
            "dagster_run_id": alert.dagster_run_id or None,
            "dagster_run_url": run,
            "context": alert.context,
        },
    }


class WebhookError(OSError):
    """A failed webhook POST; `retry_after_s` is how long the receiver asked us to wait, if it did."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """A Retry-After header (delay in seconds or an HTTP date) as seconds from now, else None."""
    if not value or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def post_webhook(url: str, payload: dict[str, Any], timeout_s: float) -> None:
    """POST the JSON body within `timeout_s` in all; raise OSError with a message free of the URL.

    Redirects are not followed: urllib would turn a POST answered 301/302 into a GET without
    the body, so the receiver would "accept" an alert it never saw. `timeout_s` bounds the
    whole exchange, not each socket read, so a receiver trickling its answer cannot hold
    the sensor's tick.
    """
    # A malformed URL's own error messages quote it (and it holds a token): refused here.
    malformed = WebhookError(
        "webhook URL (ATLASMESH_ALERT_WEBHOOK_URL) is not an http:// or https:// URL with a host"
    )
    try:
        parts = urllib.parse.urlsplit(url)
        # .port raises ValueError for a port that is not a number or out of range.
        if (
            parts.scheme.lower() not in ("http", "https")
            or not parts.hostname
            or parts.port == 0
            or any(ch.isspace() or not ch.isprintable() for ch in url)
        ):
            raise malformed
        https = parts.scheme.lower() == "https"
        connection_class = http.client.HTTPSConnection if https else http.client.HTTPConnection
        connection = connection_class(parts.hostname, parts.port, timeout=timeout_s)
    except ValueError:
        raise malformed from None
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    body = orjson.dumps(payload, default=str)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "atlasmesh-alerts",
        "Content-Length": str(len(body)),
    }
    expired = threading.Event()

    def give_up() -> None:
        # Shutting the socket down wakes a read blocked on a receiver that trickles bytes.
        expired.set()
        sock = connection.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    watchdog = threading.Timer(timeout_s, give_up)
    watchdog.daemon = True
    watchdog.start()
    try:
        connection.request("POST", target, body=body, headers=headers)
        response = connection.getresponse()
        status = response.status
        retry_after = response.getheader("Retry-After")
        if expired.is_set():
            # The cut-off socket read as the end of the headers: not a real answer.
            raise TimeoutError
    except TimeoutError:
        raise WebhookError(f"webhook did not answer within {timeout_s:g} s") from None
    except (ValueError, http.client.InvalidURL):
        raise malformed from None
    except http.client.RemoteDisconnected:
        if expired.is_set():
            raise WebhookError(f"webhook did not answer within {timeout_s:g} s") from None
        raise WebhookError("webhook closed the connection without answering") from None
    except http.client.HTTPException as exc:
        if expired.is_set():
            raise WebhookError(f"webhook did not answer within {timeout_s:g} s") from None
        raise WebhookError(
            f"webhook answered something other than HTTP ({type(exc).__name__})"
        ) from None
    except OSError as exc:
        if expired.is_set():
            raise WebhookError(f"webhook did not answer within {timeout_s:g} s") from None
        # strerror, not str(exc): no OS error names the URL's path, where the token is.
        raise WebhookError(f"webhook unreachable: {exc.strerror or type(exc).__name__}") from None
    finally:
        watchdog.cancel()
        # The body is not read: the status decides, and a huge or endless body costs nothing.
        connection.close()
    if 200 <= status < 300:
        return
    if 300 <= status < 400:
        raise WebhookError(
            f"webhook answered HTTP {status}, a redirect: set ATLASMESH_ALERT_WEBHOOK_URL to the "
            "final URL (redirects are not followed: a redirected POST may lose its body)"
        )
    raise WebhookError(
        f"webhook answered HTTP {status}", retry_after_s=retry_after_seconds(retry_after)
    )


@dataclass(frozen=True)
class _Pending:
    delivery_id: uuid.UUID
    alert_id: str
    event: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime


def _pending(client: Client, database: str, limit: int) -> list[_Pending]:
    rows = client.query(
        "SELECT delivery_id, alert_id, event, attempts, created_at, next_attempt_at "
        f"FROM `{database}`.`{DELIVERIES_TABLE}` FINAL WHERE status = 'pending' "
        "ORDER BY created_at, event = 'resolved', delivery_id LIMIT {limit:UInt32}",
        parameters={"limit": limit},
    ).result_rows
    return [_Pending(r[0], str(r[1]), r[2], int(r[3]), _utc(r[4]), _utc(r[5])) for r in rows]


def _write(
    client: Client,
    item: _Pending,
    database: str,
    *,
    status: str,
    attempts: int,
    next_attempt_at: datetime,
    last_attempt_at: datetime | None,
    delivered_at: datetime | None,
    error: str,
) -> None:
    row = [
        item.delivery_id,
        uuid.UUID(item.alert_id),
        item.event,
        "webhook",
        status,
        attempts,
        item.created_at,
        next_attempt_at,
        _opt_utc(last_attempt_at),
        _opt_utc(delivered_at),
        error,
        # Later writes must win in ReplacingMergeTree: wall-clock nanoseconds, not `now`,
        # which callers may set to any time.
        time.time_ns(),
    ]
    client.insert(DELIVERIES_TABLE, [row], column_names=list(DELIVERY_COLUMNS), database=database)


def deliver_pending(
    client: Client,
    settings: Settings,
    *,
    now: datetime | None = None,
    database: str = DATABASE,
    limit: int = 200,
    timeout_s: float = 10.0,
    backoff: Backoff | None = None,
) -> DeliveryReport:
    """Send every due notification in the outbox to the webhook, oldest first.

    Stops at the first failure (the webhook is down: one request per call is enough to
    find out when it is back) and schedules that notification's retry with backoff. A later
    notification of the same alert waits for the earlier one, so "resolved" never arrives
    before "triggered". Without a webhook URL, notifications are marked skipped: the log
    line written when the alert changed was their delivery.
    """
    ensure_schema(client, database)
    at = _now(now)
    backoff = backoff or Backoff()
    url = settings.alert_webhook_url.get_secret_value()
    pending = _pending(client, database, limit)
    if not url:
        for item in pending:
            _write(
                client, item, database, status="skipped", attempts=item.attempts,
                next_attempt_at=item.next_attempt_at, last_attempt_at=None,
                delivered_at=None, error="no webhook configured (ATLASMESH_ALERT_WEBHOOK_URL)",
            )  # fmt: skip
        return DeliveryReport(skipped=len(pending))
    attempted = delivered = failed = dropped = 0
    blocked: set[str] = set()
    stop = False
    for item in pending:
        if stop or item.alert_id in blocked or item.next_attempt_at > at:
            blocked.add(item.alert_id)
            continue
        try:
            alert = get_alert(client, item.alert_id, database=database)
        except AlertNotFoundError:
            log.error("outbox names alert %s, which does not exist: dropped", item.alert_id)
            _write(
                client, item, database, status="dropped", attempts=item.attempts,
                next_attempt_at=item.next_attempt_at, last_attempt_at=None,
                delivered_at=None, error="alert not found",
            )  # fmt: skip
            dropped += 1
            continue
        attempted += 1
        attempts = item.attempts + 1
        try:
            post_webhook(url, slack_payload(alert, item.event, settings), timeout_s)
        except OSError as exc:
            failed += 1
            retry_at = at + backoff.after(attempts, getattr(exc, "retry_after_s", None))
            _write(
                client, item, database, status="pending", attempts=attempts,
                next_attempt_at=retry_at, last_attempt_at=at, delivered_at=None,
                error=str(exc)[:500],
            )  # fmt: skip
            log.error(
                "alert %s notification (%s) failed, attempt %d: %s; retry at %s",
                alert.alert_id,
                item.event,
                attempts,
                exc,
                retry_at.isoformat(),
                extra={"alert_delivery": {"alert_id": alert.alert_id, "event": item.event,
                                          "attempts": attempts, "error": str(exc)}},
            )  # fmt: skip
            blocked.add(item.alert_id)
            stop = True
            continue
        delivered += 1
        _write(
            client, item, database, status="delivered", attempts=attempts,
            next_attempt_at=item.next_attempt_at, last_attempt_at=at, delivered_at=at, error="",
        )  # fmt: skip
        log.info(
            "alert %s notification (%s) delivered after %d attempt(s)",
            alert.alert_id,
            item.event,
            attempts,
        )
    return DeliveryReport(
        attempted=attempted,
        delivered=delivered,
        failed=failed,
        dropped=dropped,
        waiting=len(pending) - delivered - dropped,
    )


@dataclass(frozen=True)
class Delivery:
    """One notification in the outbox and where it stands."""

    delivery_id: str
    alert_id: str
    event: str
    status: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime
    last_attempt_at: datetime | None
    delivered_at: datetime | None
    last_error: str


def list_deliveries(
    client: Client, *, alert_id: str | None = None, database: str = DATABASE
) -> list[Delivery]:
    """The outbox, oldest first, optionally of one alert."""
    ensure_schema(client, database)
    where, params = "1", {}
    if alert_id is not None:
        where, params = "alert_id = {id:UUID}", {"id": alert_id}
    rows = client.query(
        "SELECT delivery_id, alert_id, event, status, attempts, created_at, next_attempt_at, "
        f"last_attempt_at, delivered_at, last_error FROM `{database}`.`{DELIVERIES_TABLE}` FINAL "
        f"WHERE {where} ORDER BY created_at, event = 'resolved'",
        parameters=params,
    ).result_rows
    return [
        Delivery(
            delivery_id=str(r[0]),
            alert_id=str(r[1]),
            event=r[2],
            status=r[3],
            attempts=int(r[4]),
            created_at=_utc(r[5]),
            next_attempt_at=_utc(r[6]),
            last_attempt_at=_opt_utc(r[7]),
            delivered_at=_opt_utc(r[8]),
            last_error=r[9],
        )
        for r in rows
    ]
