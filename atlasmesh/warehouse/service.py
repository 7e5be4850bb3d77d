"""Lifecycle of the embedded warehouse service: one detached process per $ATLASMESH_HOME."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from atlasmesh.settings import Settings

log = logging.getLogger("atlasmesh.warehouse")

START_TIMEOUT_S = 60.0


class WarehouseServiceError(RuntimeError):
    """The embedded warehouse service could not be started, reached or stopped."""


@dataclass(frozen=True)
class ServicePaths:
    """Where the service keeps its pidfile, lock and log."""

    pidfile: Path
    lockfile: Path
    logfile: Path

    @classmethod
    def of(cls, settings: Settings) -> ServicePaths:
        home = settings.home_dir
        return cls(home / "warehouse.pid", home / "warehouse.lock", home / "logs" / "warehouse.log")


def ping(url: str, timeout: float = 1.0) -> bool:
    """True when a ClickHouse HTTP interface answers /ping at `url`."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/ping", timeout=timeout) as resp:
            return resp.status == 200 and resp.read().startswith(b"Ok.")
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _read_pidfile(paths: ServicePaths) -> dict | None:
    try:
        return json.loads(paths.pidfile.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}


def _alive(pid: int) -> bool:
    import psutil

    try:
        proc = psutil.Process(pid)
        # The command line check guards against a recycled pid belonging to something else.
        return proc.status() != psutil.STATUS_ZOMBIE and "atlasmesh" in " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _running(paths: ServicePaths) -> dict | None:
    """The live service's pidfile record; a stale pidfile (dead process) is removed."""
    record = _read_pidfile(paths)
    if record is None:
        return None
    if not record or not _alive(int(record.get("pid", 0))):
        if not _lock_held(paths):
            paths.pidfile.unlink(missing_ok=True)
        return None
    return record


def _lock_held(paths: ServicePaths) -> bool:
    if not paths.lockfile.exists():
        return False
    with open(paths.lockfile, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def status(settings: Settings) -> str | None:
    """The warehouse URL if it answers, else None (a configured server is pinged, not managed)."""
    if not settings.embedded_warehouse:
        return settings.clickhouse_url if ping(settings.clickhouse_url) else None
    record = _running(ServicePaths.of(settings))
    if record and ping(record["url"]):
        return str(record["url"])
    return None


def pid(settings: Settings) -> int | None:
    """The process id of this home's running service, if one runs."""
    record = _running(ServicePaths.of(settings))
    return int(record["pid"]) if record else None


def stop(settings: Settings, timeout: float = 30.0) -> bool:
    """Stop this home's service gracefully; True if one was running. SIGKILL only after `timeout`."""
    paths = ServicePaths.of(settings)
    record = _running(paths)
    if not record:
        return False
    pid = int(record["pid"])
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            break
        time.sleep(0.05)
    else:
        log.warning("warehouse service %s did not stop within %.0f s: killing it", pid, timeout)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    # Reap it if it is our own child, so it does not linger as a zombie.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    if not _lock_held(paths):
        paths.pidfile.unlink(missing_ok=True)
    return True


def ensure_running(settings: Settings) -> str:
    """The warehouse URL; starts the embedded service if nothing answers (never with a server URL)."""
    if not settings.embedded_warehouse:
        return settings.clickhouse_url
    return status(settings) or serve(settings, foreground=False)


def serve(settings: Settings, foreground: bool = False) -> str:
    """Start the service (detached unless `foreground`) and return its URL; reuse a running one."""
    if not settings.embedded_warehouse:
        raise WarehouseServiceError(
            f"ATLASMESH_CLICKHOUSE_URL is set ({settings.clickhouse_url}): the platform uses that "
            "server and the embedded warehouse service is not started. Unset it to use the embedded one."
        )
    running = status(settings)
    if running:
        return running
    if foreground:
        run_foreground(settings, log_to_stderr=True)
        return settings.warehouse_url
    return _start_detached(settings)


def _child_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("ATLASMESH_CLICKHOUSE_URL", None)
    env.update(
        {
            "ATLASMESH_HOME": str(settings.home_dir),
            "ATLASMESH_WAREHOUSE_PORT": str(settings.warehouse_port),
            "ATLASMESH_WAREHOUSE_QUERY_TIMEOUT_S": str(settings.warehouse_query_timeout_s),
            "ATLASMESH_CLICKHOUSE_USER": settings.clickhouse_user,
            # The password travels in the environment, never on the command line (visible in ps).
            "ATLASMESH_CLICKHOUSE_PASSWORD": settings.clickhouse_password.get_secret_value(),
        }
    )
    return env


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _start_detached(settings: Settings) -> str:
    paths = ServicePaths.of(settings)
    paths.logfile.parent.mkdir(parents=True, exist_ok=True)
    with open(paths.logfile, "ab") as logfile:
        child = subprocess.Popen(
            [sys.executable, "-m", "atlasmesh.warehouse.service"],
            env=_child_env(settings),
            stdin=subprocess.DEVNULL,
            stdout=logfile,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # survives the terminal or make target that started it
            cwd=settings.home_dir,
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        url = status(settings)
        if url:
            return url
        if child.poll() is not None and not _lock_held(paths):
            break  # it exited, and no other instance is coming up in its place
        time.sleep(0.05)
    if child.poll() is None:
        child.terminate()
    raise WarehouseServiceError(
        f"The embedded warehouse service did not come up on {settings.warehouse_url} "
        f"(exit code {child.poll()}). Log: {paths.logfile}\n{_tail(paths.logfile)}\n"
        "If the port is taken, set ATLASMESH_WAREHOUSE_PORT to a free one."
    )


def _configure_logging(logfile: Path, to_stderr: bool) -> None:
    logfile.parent.mkdir(parents=True, exist_ok=True)
    handlers: list[logging.Handler] = [logging.FileHandler(logfile)]
    if to_stderr:
        handlers.append(logging.StreamHandler(sys.stderr))
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s")
    root = logging.getLogger("atlasmesh")
    for handler in handlers:
        handler.setFormatter(fmt)
        root.addHandler(handler)
    root.setLevel(logging.INFO)


def run_foreground(settings: Settings, log_to_stderr: bool = False) -> None:
    """Run the service in this process until SIGTERM/SIGINT; one per home, enforced by a lock."""
    from atlasmesh.warehouse.server import ServerConfig, load_chdb
    from atlasmesh.warehouse.server import serve as serve_http

    paths = ServicePaths.of(settings)
    settings.home_dir.mkdir(parents=True, exist_ok=True)
    _configure_logging(paths.logfile, log_to_stderr)
    with open(paths.lockfile, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WarehouseServiceError(
                f"Another warehouse service already owns {settings.home_dir} (lock {paths.lockfile})."
            ) from None
        load_chdb()  # before our handlers: importing chDB installs its own
        stop_event = threading.Event()

        def _stop(signum: int, _frame: object) -> None:
            log.info("received %s", signal.Signals(signum).name)
            stop_event.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        config = ServerConfig(
            data_dir=settings.warehouse_dir,
            port=settings.warehouse_port,
            user=settings.clickhouse_user,
            password=settings.clickhouse_password.get_secret_value(),
            query_timeout_s=settings.warehouse_query_timeout_s,
        )

        def _ready(port: int) -> None:
            record = {
                "pid": os.getpid(),
                "port": port,
                "url": f"http://127.0.0.1:{port}",
                "data_dir": str(settings.warehouse_dir),
                "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            tmp = paths.pidfile.with_suffix(".tmp")
            tmp.write_text(json.dumps(record))
            tmp.replace(paths.pidfile)

        try:
            serve_http(config, ready=_ready, stop=stop_event)
        finally:
            paths.pidfile.unlink(missing_ok=True)


def main() -> None:
    """Entry point of the detached service process."""
    try:
        run_foreground(Settings())
    except WarehouseServiceError as exc:
        print(f"warehouse service: {exc}", file=sys.stderr)
        sys.exit(3)
    except OSError as exc:
        print(f"warehouse service: cannot start: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
