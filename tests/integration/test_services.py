"""The machine's real services answer their own protocols, not just a TCP handshake."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import pytest

from tests.fixtures.services import SERVICES, Service, ensure_service, free_port, port_open

pytestmark = pytest.mark.integration


def test_postgres_answers_a_query(postgres_up: Service) -> None:
    import psycopg

    with psycopg.connect(
        host=postgres_up.host, port=postgres_up.port, user="postgres", connect_timeout=5
    ) as conn:
        assert conn.execute("SELECT 1 + 1").fetchone() == (2,)


def test_redis_round_trips_a_value(redis_up: Service) -> None:
    import redis

    client = redis.Redis(host=redis_up.host, port=redis_up.port, socket_timeout=5)
    try:
        key = "atlasmesh:test:services"
        client.set(key, "ok", ex=10)
        assert client.get(key) == b"ok"
        client.delete(key)
    finally:
        client.close()


def test_mosquitto_accepts_an_mqtt_connect(mqtt_up: Service) -> None:
    # MQTT 3.1.1 CONNECT (clean session, keep-alive 10 s, client id "atlasmesh-t"); the broker
    # must answer CONNACK with return code 0.
    client_id = b"atlasmesh-t"
    variable = b"\x00\x04MQTT\x04\x02\x00\x0a"
    payload = len(client_id).to_bytes(2, "big") + client_id
    packet = b"\x10" + bytes([len(variable) + len(payload)]) + variable + payload
    with socket.create_connection((mqtt_up.host, mqtt_up.port), timeout=5) as sock:
        sock.sendall(packet)
        assert sock.recv(4) == b"\x20\x02\x00\x00"
        sock.sendall(b"\xe0\x00")  # DISCONNECT


def test_unknown_service_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown service 'kafka'"):
        ensure_service("kafka")


def test_a_down_service_is_started_with_its_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    port, pidfile = free_port(), tmp_path / "redis.pid"
    command = (
        f"redis-server --daemonize yes --bind 127.0.0.1 --port {port} --save '' "
        f"--appendonly no --dir {tmp_path} --pidfile {pidfile} --logfile {tmp_path}/redis.log"
    )
    monkeypatch.setitem(SERVICES, "spare-redis", Service("spare-redis", "127.0.0.1", port, command))
    try:
        assert not port_open("127.0.0.1", port)
        assert ensure_service("spare-redis").port == port
        assert port_open("127.0.0.1", port)
    finally:
        if pidfile.exists():
            os.kill(int(pidfile.read_text()), signal.SIGTERM)


@pytest.mark.parametrize(
    ("ci", "outcome"), [("true", pytest.fail.Exception), ("", pytest.skip.Exception)]
)
def test_a_service_that_cannot_start_fails_in_ci_and_skips_elsewhere(
    monkeypatch: pytest.MonkeyPatch, ci: str, outcome: type[BaseException]
) -> None:
    port = free_port()
    monkeypatch.setitem(SERVICES, "broken", Service("broken", "127.0.0.1", port, "exit 3"))
    monkeypatch.setattr("tests.fixtures.services._START_TIMEOUT_S", 0.5)
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match=rf"broken is not answering on 127.0.0.1:{port}.*exit 3"):
        ensure_service("broken")
