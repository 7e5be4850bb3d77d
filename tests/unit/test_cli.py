"""The top-level command line: bad options are one clear line and a non-zero exit."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from atlasmesh import analytics
from atlasmesh.cli import app


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["docs", "--no-serve", "--port", "-1"], "--port"),
        (["docs", "--port", "70000"], "--port"),
        (["docs", "--no-serve", "--schema", ""], "is not a database name"),
        (["docs", "--no-serve", "--schema", "a`b"], "is not a database name"),
        (["dbt", "--schema", "x y", "--", "ls"], "is not a database name"),
    ],
)
def test_bad_docs_and_dbt_options_stop_before_any_work(
    args: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def must_not_run(*_a: object, **_k: object) -> None:
        raise AssertionError("dbt ran despite a bad option")

    monkeypatch.setenv("ATLASMESH_HOME", str(tmp_path))
    monkeypatch.setattr(analytics, "generate_dbt_docs", must_not_run)
    monkeypatch.setattr(analytics, "dbt_passthrough", must_not_run)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and message in result.output, result.output


def test_docs_on_a_taken_port_is_one_line_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ATLASMESH_HOME", str(tmp_path))
    monkeypatch.setattr(analytics, "generate_dbt_docs", lambda *_a, **_k: tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, ["docs", "--port", str(port)])
    assert result.exit_code == 1, result.output
    assert f"error: cannot serve on 127.0.0.1:{port}" in result.output
    assert not isinstance(result.exception, OSError)


@pytest.mark.parametrize("timeout", ["-1", "nan", "-inf"])
def test_warehouse_stop_refuses_a_wait_that_would_skip_the_graceful_stop(
    timeout: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from atlasmesh.warehouse import service

    def must_not_stop(*_a: object, **_k: object) -> bool:
        raise AssertionError("the service was stopped despite a bad --timeout")

    monkeypatch.setenv("ATLASMESH_HOME", str(tmp_path))
    monkeypatch.setattr(service, "stop", must_not_stop)
    result = CliRunner().invoke(app, ["warehouse", "stop", "--timeout", timeout])
    assert result.exit_code == 2 and "must be 0 or more seconds" in result.output, result.output
