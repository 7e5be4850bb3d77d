"""The ClickHouse HTTP interface in front of one chDB data directory, multi-threaded, loopback only."""

from __future__ import annotations

import base64
import contextlib
import hmac
import itertools
import json
import logging
import select
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from atlasmesh.warehouse import protocol as p

log = logging.getLogger("atlasmesh.warehouse")

# URL parameters the front consumes; everything else is a setting for the engine, as in ClickHouse.
FRONT_PARAMS = frozenset(
    {
        "query",
        "database",
        "default_format",
        "user",
        "password",
        "quota_key",
        "session_id",
        "session_timeout",
        "session_check",
        "query_id",
        "compress",
        "decompress",
        "buffer_size",
        "wait_end_of_query",
        "client_protocol_version",
        "enable_http_compression",
        "http_zlib_compression_level",
        "send_progress_in_http_headers",
        "http_headers_progress_interval_ms",
        "http_response_buffer_size",
        "add_http_cors_header",
        "readonly",
        "stacktrace",
        "role",
    }
)
MAX_QUERY_BYTES = 64 << 20  # a statement without separable data is held in memory whole
HEAD_BYTES = 256 << 10  # ClickHouse's max_query_size: where an INSERT's data must have started
STREAM_APPEND_BYTES = 1 << 20
WHOLE_APPEND_BYTES = 8 << 20  # chDB buffers Parquet/Arrow inserts; fewer, larger appends are faster
SPOOL_MEMORY_BYTES = 16 << 20
MAX_SESSION_TIMEOUT_S = 3600
MAX_IDLE_PER_DATABASE = 8
MAX_SESSIONS = 512
MAX_CONCURRENT_QUERIES = 64
MAX_QUERY_ID_CHARS = 1024
IDLE_KEEPALIVE_S = 300.0
# ClickHouse's http_receive_timeout / http_send_timeout: a peer that stalls mid-request this long
# (a body shorter than its Content-Length, a client that stops reading) loses the connection.
RECEIVE_TIMEOUT_S = 30.0
# Settings of the buffered fast path: results above this size are streamed into a spool instead.
SMALL_RESULT_PIECES = 4
BUFFER_SETTINGS = {"max_result_bytes": str(32 << 20), "result_overflow_mode": "throw"}
READ_ONLY, MUTATING, MUTATING_GLOBAL, CONTROL, UNKNOWN = range(5)


@dataclass
class ServerConfig:
    """What the service needs to run: the data directory, the socket, credentials, the time limit."""

    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 18123
    user: str = "default"
    password: str = ""
    query_timeout_s: float = 300.0
    shutdown_grace_s: float = 20.0


def load_chdb() -> Any:
    """Import chDB's engine module, leaving signal handling to Python (call before installing
    signal handlers: the import installs ClickHouse's own)."""
    import chdb  # noqa: F401  (initialises the engine library)
    from chdb import _chdb

    # chDB installs ClickHouse's signal handlers; the service needs Python's own for SIGTERM.
    _chdb.set_signal_handlers_enabled(0)
    _chdb.reset_signal_handlers()
    return _chdb


class EngineConnection:
    """One chDB connection plus the database and URL settings the front put on it."""

    _ids = itertools.count(1)

    def __init__(self, engine: Engine, database: str = "default") -> None:
        self.engine = engine
        self.tag = f"atlasmesh-{engine.token}-{next(self._ids)}"
        self.raw = engine.chdb.connect(str(engine.config.data_dir))
        # Every query of this connection carries the tag, so the watchdog can KILL it by tag.
        self.baseline = {
            "log_comment": self.tag,
            "max_execution_time": str(engine.config.query_timeout_s),
            # A real server's default; clickhouse-connect reads it to decide on compression.
            "enable_http_compression": "0",
        }
        self.raw.query(
            "SET " + ", ".join(f"{k} = {p.quote_string(v)}" for k, v in self.baseline.items())
        )
        self.applied: dict[str, str] = {}
        self.database = "default"
        self.readonly = 0
        if database != "default":
            try:
                self.use(database)
            except BaseException:
                self.close()
                raise

    @property
    def kill_key(self) -> str:
        return self.applied.get("log_comment", self.tag)

    def use(self, database: str) -> None:
        self.raw.query("USE " + p.quote_identifier(database))
        self.database = database

    def prepare(self, database: str, settings: dict[str, str]) -> None:
        """Make the connection's settings equal to this request's URL settings, in one SET."""
        delta = [
            f"{k} = {p.quote_string(v)}" for k, v in settings.items() if self.applied.get(k) != v
        ]
        for k in self.applied.keys() - settings.keys():
            base = self.baseline.get(k)
            delta.append(f"{k} = {p.quote_string(base) if base is not None else 'DEFAULT'}")
        if delta:
            self.applied = {}  # unknown until the SET succeeds
            self.raw.query("SET " + ", ".join(delta))
            self.applied = dict(settings)
        if database != self.database:
            self.use(database)

    def forget_state(self) -> None:
        """After SET/USE in SQL, the front no longer knows the connection's settings or database."""
        self.applied = {k: "\0unknown" for k in self.applied}
        self.database = "\0unknown"

    def close(self) -> None:
        try:
            self.raw.close()
        except Exception:  # closing a broken connection must not stop shutdown
            log.debug("closing a chDB connection failed", exc_info=True)


@dataclass
class Session:
    """A ClickHouse HTTP session: its own connection (temporary tables, SET) and an idle timeout."""

    conn: EngineConnection
    timeout_s: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_used: float = field(default_factory=time.monotonic)


@dataclass
class Running:
    """A query in flight, as the watchdog sees it."""

    query_id: str
    conn: EngineConnection
    deadline: float
    client: socket.socket | None = None  # watched for a client that hangs up mid-query
    killed: str = ""  # why the watchdog killed it: "timeout", "hang-up" or "shutdown"
    active: bool = True
    # Held while a KILL is issued and while the query is unregistered, so a KILL (matched by the
    # connection's tag) can never hit the next query of the same connection.
    lock: threading.Lock = field(default_factory=threading.Lock)


class Engine:
    """Owns the chDB data directory: connection pool, sessions, running queries and the watchdog."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.chdb = load_chdb()
        self.token = uuid.uuid4().hex[:8]
        config.data_dir.mkdir(parents=True, exist_ok=True)
        # The admin connection keeps the engine open for the service's life and issues KILLs.
        self.admin = self.chdb.connect(str(config.data_dir))
        row = self.admin.query("SELECT version(), timezone()", "TabSeparated").bytes().decode()
        self.version, self.timezone = row.strip().split("\t")
        self._admin_lock = threading.Lock()
        self._lock = threading.Lock()
        self._pool: dict[tuple[str, int], list[EngineConnection]] = {}
        self._sessions: dict[str, Session] = {}
        self._running: dict[str, Running] = {}
        self._slots = threading.BoundedSemaphore(MAX_CONCURRENT_QUERIES)
        self._stopping = threading.Event()
        self._threads = [
            threading.Thread(target=self._watchdog, name="warehouse-watchdog", daemon=True),
            threading.Thread(target=self._reaper, name="warehouse-sessions", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    # -- connections --------------------------------------------------------------------------
    def acquire(self, database: str, readonly: int, settings: dict[str, str]) -> EngineConnection:
        """A connection for a request outside a session, from the pool when one fits."""
        with self._lock:
            idle = self._pool.get((database, readonly))
            conn = idle.pop() if idle else None
        # readonly=1 forbids changing settings, so such a connection only fits identical settings.
        if conn is not None and readonly == 1 and conn.applied != settings:
            conn.close()
            conn = None
        if conn is None:
            conn = EngineConnection(self, database)
            if readonly:
                try:
                    conn.prepare(database, settings)
                    conn.raw.query(f"SET readonly = {readonly}")
                except BaseException:
                    conn.close()
                    raise
                conn.readonly = readonly
        return conn

    def release(self, conn: EngineConnection, reusable: bool) -> None:
        """Return a session-less connection, or close it when it may carry request state."""
        if reusable and not self._stopping.is_set():
            with self._lock:
                idle = self._pool.setdefault((conn.database, conn.readonly), [])
                if len(idle) < MAX_IDLE_PER_DATABASE:
                    idle.append(conn)
                    return
        conn.close()

    def session(self, session_id: str, timeout_s: float, check: bool) -> Session:
        """The session `session_id`, locked for this request; created unless `check`."""
        with self._lock:
            sess = self._sessions.get(session_id)
            if sess is None:
                if check:
                    raise p.ClickHouseError(
                        p.SESSION_NOT_FOUND, f"Session {session_id} not found (session_check=1)."
                    )
                if len(self._sessions) >= MAX_SESSIONS:
                    raise p.ClickHouseError(
                        p.TOO_MANY_SIMULTANEOUS_QUERIES,
                        f"Too many open sessions ({MAX_SESSIONS}); close idle clients or lower session_timeout.",
                    )
                sess = Session(EngineConnection(self), timeout_s)
                self._sessions[session_id] = sess
            if not sess.lock.acquire(blocking=False):
                raise p.ClickHouseError(
                    p.SESSION_IS_LOCKED,
                    f"Session {session_id} is locked by a concurrent client: "
                    "send one query at a time per session, or use separate sessions.",
                )
            sess.timeout_s = timeout_s
            return sess

    def end_session_request(self, sess: Session) -> None:
        sess.last_used = time.monotonic()
        sess.lock.release()

    def _reaper(self) -> None:
        while not self._stopping.wait(1.0):
            now = time.monotonic()
            expired = []
            with self._lock:
                for sid, sess in list(self._sessions.items()):
                    if now - sess.last_used > sess.timeout_s and sess.lock.acquire(blocking=False):
                        del self._sessions[sid]
                        expired.append(sess)
            for sess in expired:
                sess.conn.close()

    # -- running queries ----------------------------------------------------------------------
    def register(
        self, query_id: str, conn: EngineConnection, client: socket.socket | None = None
    ) -> Running:
        run = Running(query_id, conn, time.monotonic() + self.config.query_timeout_s, client)
        with self._lock:
            if query_id in self._running:
                raise p.ClickHouseError(
                    p.QUERY_WITH_SAME_ID_IS_ALREADY_RUNNING,
                    f"Query with id = {query_id} is already running.",
                )
            self._running[query_id] = run
        return run

    def unregister(self, run: Running) -> None:
        with run.lock:
            run.active = False
        with self._lock:
            self._running.pop(run.query_id, None)

    def running_count(self) -> int:
        with self._lock:
            return len(self._running)

    def take_slot(self, query_id: str) -> None:
        """Wait (at most the per-request limit) until fewer than MAX_CONCURRENT_QUERIES run, as
        a server's queue_max_wait_ms: a burst of clients queues instead of failing."""
        if not self._slots.acquire(timeout=self.config.query_timeout_s):
            raise p.ClickHouseError(
                p.TOO_MANY_SIMULTANEOUS_QUERIES,
                f"Too many simultaneous queries: query {query_id} waited "
                f"{self.config.query_timeout_s:g} s for one of {MAX_CONCURRENT_QUERIES} slots.",
            )

    def free_slot(self) -> None:
        self._slots.release()

    def kill_by_query_id(self, query_id: str, sync: bool) -> bool:
        """Cancel the running request with this client query id; False if none runs."""
        with self._lock:
            run = self._running.get(query_id)
        if run is None:
            return False
        self.kill(run, "killed by KILL QUERY")
        deadline = time.monotonic() + 10.0
        while sync and run.active and time.monotonic() < deadline:
            time.sleep(0.02)
        return True

    def kill(self, run: Running, reason: str) -> None:
        """Cancel a running query from the admin connection (the only cross-connection cancel)."""
        sql = (
            f"KILL QUERY WHERE Settings['log_comment'] = {p.quote_string(run.conn.kill_key)} ASYNC"
        )
        with run.lock:
            if not run.active:
                return
            run.killed = reason
            try:
                with self._admin_lock:
                    self.admin.query(sql, "TabSeparated")
            except Exception:
                log.warning("could not kill query %s", run.query_id, exc_info=True)

    def _watchdog(self) -> None:
        while not self._stopping.wait(0.1):
            now = time.monotonic()
            with self._lock:
                runs = [r for r in self._running.values() if not r.killed]
            for run in runs:
                if now > run.deadline:
                    log.warning(
                        "query %s exceeded the %.0f s limit: killing it",
                        run.query_id,
                        self.config.query_timeout_s,
                    )
                    self.kill(run, "timeout")
                elif run.client is not None and _hung_up(run.client):
                    # As cancel_http_readonly_queries_on_client_close: nobody will read the result.
                    log.info("client of query %s hung up: cancelling it", run.query_id)
                    self.kill(run, "hang-up")

    # -- shutdown -----------------------------------------------------------------------------
    def kill_all(self) -> None:
        with self._lock:
            runs = list(self._running.values())
        for run in runs:
            self.kill(run, "shutdown")

    def close(self) -> None:
        """Close every connection; the engine shuts down cleanly when the admin one closes last."""
        self._stopping.set()
        with self._lock:
            conns = [c for idle in self._pool.values() for c in idle]
            conns += [s.conn for s in self._sessions.values()]
            self._pool.clear()
            self._sessions.clear()
        for conn in conns:
            conn.close()
        with self._admin_lock:
            self.admin.close()


@dataclass
class Stats:
    """What goes into X-ClickHouse-Summary."""

    read_rows: int = 0
    read_bytes: int = 0
    written_rows: int = 0
    written_bytes: int = 0
    result_rows: int = 0
    result_bytes: int = 0
    started: float = field(default_factory=time.perf_counter)

    def add(self, result: Any, result_bytes: int | None = None) -> None:
        """Count one chDB result; `result_bytes` is None for statements that return no rows."""
        self.read_rows += result.storage_rows_read()
        self.read_bytes += result.storage_bytes_read()
        self.written_rows += result.rows_written()
        self.written_bytes += result.bytes_written()
        if result_bytes is not None:
            self.result_rows += result.rows_read()
            self.result_bytes += result_bytes

    def header(self) -> str:
        return json.dumps(
            {
                "read_rows": str(self.read_rows),
                "read_bytes": str(self.read_bytes),
                "written_rows": str(self.written_rows),
                "written_bytes": str(self.written_bytes),
                "total_rows_to_read": "0",
                "result_rows": str(self.result_rows),
                "result_bytes": str(self.result_bytes),
                "elapsed_ns": str(int((time.perf_counter() - self.started) * 1e9)),
            },
            separators=(",", ":"),
        )


def _hung_up(sock: socket.socket) -> bool:
    """True when the peer closed the connection: readable, and a peek reads end of stream."""
    # poll first: a socket with a timeout would make even a MSG_DONTWAIT recv wait for data.
    poller = select.poll()
    try:
        poller.register(sock, select.POLLIN | select.POLLRDHUP)
        events = poller.poll(0)
        if not events:
            return False
        if events[0][1] & (select.POLLRDHUP | select.POLLHUP | select.POLLERR):
            return True
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (BlockingIOError, InterruptedError):
        return False
    except (OSError, ValueError):
        return True


def _header_value(value: str) -> str:
    """`value` without the control characters that would end or split a header line."""
    if value.isprintable():
        return value
    return "".join(c if c.isprintable() else " " for c in value)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


class _Collector:
    """A write-only file object pyarrow writes into; the bytes are taken out block by block."""

    closed = False

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: Any) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def take(self) -> bytes:
        out, self.parts = b"".join(self.parts), []
        return out


class Exchange:
    """One HTTP request: authenticate, run the statement, send a ClickHouse-shaped response."""

    def __init__(self, handler: Handler, params: dict[str, str], body: Iterator[bytes]) -> None:
        self.h = handler
        self.engine: Engine = handler.server.engine  # type: ignore[attr-defined]
        self.params = params
        self.body = body
        self.query_id = params.get("query_id") or str(uuid.uuid4())
        self.stats = Stats()
        self.run: Running | None = None
        self.has_secrets = False
        self.headers_sent = False
        self._release: Any = None
        self._reusable = False

    # -- request parsing ----------------------------------------------------------------------
    def authenticate(self) -> str:
        cfg = self.engine.config
        hdr = self.h.headers
        user = self.params.get("user") or hdr.get("X-ClickHouse-User") or ""
        password = self.params.get("password") or hdr.get("X-ClickHouse-Key") or ""
        auth = hdr.get("Authorization", "")
        if auth.lower().startswith("basic "):
            try:
                b_user, _, b_password = (
                    base64.b64decode(auth[6:].strip(), validate=True).decode().partition(":")
                )
            except Exception:
                raise p.ClickHouseError(
                    p.AUTHENTICATION_FAILED, "Malformed Basic authorization header."
                ) from None
            user, password = user or b_user, password or b_password
        user = user or "default"
        if user != cfg.user or not hmac.compare_digest(password.encode(), cfg.password.encode()):
            raise p.ClickHouseError(
                p.AUTHENTICATION_FAILED,
                f"{user}: Authentication failed: password is incorrect, or there is no user with such name",
            )
        return user

    def settings(self) -> dict[str, str]:
        out = {}
        for key, value in self.params.items():
            if key in FRONT_PARAMS or key.startswith("param_"):
                continue
            if not p.is_setting_name(key):
                raise p.ClickHouseError(
                    115,
                    f"Unknown setting '{key}' (URL parameters other than the protocol's are settings)",
                    "UNKNOWN_SETTING",
                )
            out[key] = value
        return out

    def readonly(self) -> int:
        raw = self.params.get("readonly", "0") or "0"
        if raw not in ("0", "1", "2"):
            raise p.ClickHouseError(p.BAD_ARGUMENTS, f"readonly must be 0, 1 or 2, got {raw!r}.")
        # As in ClickHouse, a GET request can only read.
        return max(int(raw), 2 if self.h.command == "GET" else 0)

    def session_timeout(self) -> float:
        raw = self.params.get("session_timeout", "60") or "60"
        try:
            value = float(raw)
        except ValueError:
            raise p.ClickHouseError(
                p.BAD_ARGUMENTS, f"session_timeout must be a number of seconds, got {raw!r}."
            ) from None
        if not 0 <= value <= MAX_SESSION_TIMEOUT_S:
            raise p.ClickHouseError(
                p.BAD_ARGUMENTS,
                f"session_timeout must be between 0 and {MAX_SESSION_TIMEOUT_S} s, got {raw}.",
            )
        return value

    def read_statement(self) -> tuple[str, p.InsertSplit | None, Iterator[bytes]]:
        """The statement, and for INSERT ... FORMAT/VALUES the split and its data stream."""
        url_query = self.params.get("query", "")
        prefix = (url_query + "\n").encode() if url_query else b""
        head = bytearray(prefix)
        chunks = iter(self.body)
        exhausted = False
        while len(head) < HEAD_BYTES + len(prefix):
            chunk = next(chunks, None)
            if chunk is None:
                exhausted = True
                break
            head += chunk
        split = p.split_insert(head.decode("latin-1"))
        if split is not None:
            # latin-1 maps bytes one to one, so string offsets are byte offsets.
            statement = self._utf8(bytes(head[: len(split.statement)]))
            first = bytes(head[split.data_start :])
            return statement, split, itertools.chain((first,) if first else (), chunks)
        if exhausted and len(head) == len(prefix):
            return url_query, None, iter(())
        while not exhausted:
            chunk = next(chunks, None)
            if chunk is None:
                break
            head += chunk
            if len(head) > MAX_QUERY_BYTES:
                raise p.ClickHouseError(
                    p.QUERY_IS_TOO_LARGE,
                    f"The query is larger than {MAX_QUERY_BYTES >> 20} MiB. Send bulk data as "
                    "'INSERT INTO t FORMAT <format>' followed by the data.",
                )
        return self._utf8(bytes(head)), None, iter(())

    @staticmethod
    def _utf8(data: bytes) -> str:
        try:
            return data.decode()
        except UnicodeDecodeError as exc:
            raise p.ClickHouseError(
                p.CANNOT_PARSE_TEXT,
                f"The query text is not valid UTF-8 at byte {exc.start}. Binary data must follow "
                "'INSERT INTO t FORMAT <format>' and a line break.",
            ) from None

    # -- execution ----------------------------------------------------------------------------
    def execute(self) -> None:
        """Run the request; engine errors become ClickHouse errors, overdue ones timeouts."""
        try:
            self._execute()
        except p.ClickHouseError as exc:
            raise self._timeout_error(exc) from None
        except RuntimeError as exc:
            raise self._timeout_error(p.ClickHouseError.from_engine(exc)) from None

    def _execute(self) -> None:
        if self.h.headers.get("Content-Type", "").startswith("multipart/form-data"):
            # Form fields carry the query and its parameters; there is no data body then.
            self.params.update(self.h.form_fields(b"".join(self.body)))
            self.body = iter(())
            self.query_id = self.params.get("query_id") or self.query_id
        self.authenticate()
        if not self.query_id.isprintable() or len(self.query_id) > MAX_QUERY_ID_CHARS:
            bad = self.query_id
            self.query_id = str(uuid.uuid4())
            raise p.ClickHouseError(
                p.BAD_ARGUMENTS,
                f"Invalid query_id {bad[:64]!r}: it must be printable text of at most "
                f"{MAX_QUERY_ID_CHARS} characters.",
            )
        if _truthy(self.params.get("compress")):
            raise p.ClickHouseError(
                p.NOT_IMPLEMENTED,
                "compress=1 (ClickHouse's block compression of responses) is not supported by the "
                "embedded warehouse: use HTTP compression (enable_http_compression=1 and Accept-Encoding).",
            )
        settings = self.settings()
        readonly = self.readonly()
        database = (
            self.params.get("database") or self.h.headers.get("X-ClickHouse-Database") or "default"
        )
        session_id = self.params.get("session_id")
        in_codec = (
            p.NativeBlockDecompress()
            if _truthy(self.params.get("decompress"))
            else p.decoder(self.h.headers.get("Content-Encoding"))
        )
        self.body = p.chain(in_codec, self.body)
        statement, split, data = self.read_statement()
        if not statement.strip():
            raise p.ClickHouseError(p.SYNTAX_ERROR, "Empty query.")
        second = p.multi_statement_at(statement) if split is None else None
        if second is not None:
            # chDB would run both and stream two results no client can decode as one.
            raise p.ClickHouseError(
                p.SYNTAX_ERROR,
                f"Multi-statements are not allowed: a second statement follows the ';' at "
                f"position {second}. Send one statement per request.",
            )

        if split is None:
            self._refuse_service_control(statement)
            if readonly == 0:
                statement = self._kill_by_client_id(statement)

        session = None
        if session_id:
            # Before waiting for a slot, so a concurrent use of the session is refused at once.
            session = self.engine.session(
                session_id, self.session_timeout(), _truthy(self.params.get("session_check"))
            )
        try:
            self.engine.take_slot(self.query_id)
            try:
                conn = (
                    session.conn
                    if session is not None
                    else self.engine.acquire(database, readonly, settings)
                )
            except BaseException:
                self.engine.free_slot()
                raise
        except BaseException:
            if session is not None:
                self.engine.end_session_request(session)
            raise
        self._reusable = False

        def release() -> None:
            if self.run is not None:
                self.engine.unregister(self.run)
            if session is not None:
                self.engine.end_session_request(session)
            else:
                self.engine.release(conn, self._reusable)
            self.engine.free_slot()

        self._release = release
        try:
            # Inserts still read the body, so only statements are watched for a hang-up.
            watch = self.h.connection if split is None else None
            self.run = self.engine.register(self.query_id, conn, watch)
            cls = MUTATING if split is not None else self._classify(conn, statement)
            # Outside sessions the engine enforces readonly too; this check gives the clear message.
            self._check_readonly(readonly, cls)
            fmt, kind = self._output(statement, cls)
            # A small buffered result is cheaper from one query() than from a stream; the
            # engine-side limit keeps a large one from being held in memory whole.
            fast = (
                split is None
                and cls == READ_ONLY
                and kind != "whole"
                and _truthy(self.params.get("wait_end_of_query"))
                and not settings.keys() & BUFFER_SETTINGS.keys()
                and readonly != 1  # readonly=1 forbids setting the limit
            )
            self._prepare(conn, database, {**settings, **BUFFER_SETTINGS} if fast else settings)
            if split is not None:
                self._reusable = True
                self.insert(conn, split, data)
            else:
                if cls == CONTROL:
                    conn.forget_state()
                self._reusable = cls == READ_ONLY
                if fast and self.query_buffered(conn, statement, fmt):
                    return
                if fast:
                    self._prepare(conn, database, settings)
                self.query(conn, statement, cls, fmt, kind)
        except BaseException:
            self._reusable = False
            raise
        finally:
            self.release_engine()

    @staticmethod
    def _prepare(conn: EngineConnection, database: str, settings: dict[str, str]) -> None:
        try:
            conn.prepare(database, settings)
        except Exception:
            conn.forget_state()
            raise

    def _output(self, sql: str, cls: int) -> tuple[str, str]:
        """The result format and how its blocks are joined."""
        default = (
            self.params.get("default_format")
            or self.h.headers.get("X-ClickHouse-Format")
            or "TabSeparated"
        )
        fmt = (p.output_format(sql) or default) if cls in (READ_ONLY, UNKNOWN) else default
        return fmt, p.stream_kind(fmt)

    def _query_params(self) -> dict[str, str]:
        return {k[6:]: v for k, v in self.params.items() if k.startswith("param_")}

    def query_buffered(self, conn: EngineConnection, sql: str, fmt: str) -> bool:
        """Answer from one query() call; False when the result outgrew the buffer limit."""
        try:
            result = conn.raw.query(sql, fmt, params=self._query_params())
        except RuntimeError as exc:
            if p.ClickHouseError.from_engine(exc).code == p.TOO_MANY_ROWS_OR_BYTES:
                return False
            raise
        data = result.bytes()
        self.stats.add(result, len(data))
        self.respond_whole(data, fmt)
        return True

    def release_engine(self) -> None:
        """Give the connection (or session) back; done before the response's last bytes leave,
        so a client's next request never finds its own session still locked."""
        release, self._release = self._release, None
        if release is not None:
            release()

    def _timeout_error(self, exc: p.ClickHouseError) -> p.ClickHouseError:
        # The engine's own max_execution_time (the same limit) may fire before the watchdog does.
        overdue = self.run is not None and (
            self.run.killed == "timeout" or time.monotonic() >= self.run.deadline - 0.1
        )
        if overdue and exc.code in (p.QUERY_WAS_CANCELLED, p.TIMEOUT_EXCEEDED):
            limit = self.engine.config.query_timeout_s
            return p.ClickHouseError(
                p.TIMEOUT_EXCEEDED,
                f"Timeout exceeded: the query ran longer than the warehouse service's per-request limit "
                f"of {limit:g} s and was cancelled (raise ATLASMESH_WAREHOUSE_QUERY_TIMEOUT_S if it is legitimate)",
            )
        return exc

    @staticmethod
    def _refuse_service_control(sql: str) -> None:
        first, second = itertools.islice(itertools.chain(p.tokens(sql), (None, None)), 2)
        if p.is_word(first, "SYSTEM") and p.is_word(second, "SHUTDOWN", "KILL"):
            # One client must not stop the warehouse every other client and pipeline shares.
            raise p.ClickHouseError(
                p.ACCESS_DENIED,
                f"SYSTEM {second.text.upper()} is not allowed through the embedded warehouse's "  # type: ignore[union-attr]
                "HTTP interface: stop the service with `atlasmesh warehouse stop`.",
            )

    def _kill_by_client_id(self, sql: str) -> str:
        """`KILL QUERY WHERE query_id = '<id>'` for an id this front runs, done here (the engine
        only knows its own ids), and answered by a SELECT of ClickHouse's KILL result columns."""
        target = p.kill_query_target(sql)
        if target is None:
            return sql
        query_id, sync, fmt = target
        if query_id == self.query_id or not self.engine.kill_by_query_id(query_id, sync):
            return sql
        return (
            f"SELECT {p.quote_string('finished' if sync else 'waiting')} AS kill_status, "
            f"{p.quote_string(query_id)} AS query_id, currentUser() AS user, '' AS query"
            + (f" FORMAT {p.quote_identifier(fmt)}" if fmt else "")
        )

    def _classify(self, conn: EngineConnection, sql: str) -> int:
        first = next(p.tokens(sql), None)
        if p.is_word(first, "SELECT", "WITH"):
            return READ_ONLY
        info = conn.raw.classify_query(sql)
        self.has_secrets = bool(info["has_secrets"])
        return int(info["query_class"])

    def _check_readonly(self, readonly: int, cls: int) -> None:
        if readonly and cls in (MUTATING, MUTATING_GLOBAL):
            raise p.ClickHouseError(
                p.READONLY,
                "Cannot execute query in readonly mode (readonly="
                f"{readonly}{', a GET request' if self.h.command == 'GET' else ''}); use POST without readonly to write",
            )

    def _check_deadline(self) -> None:
        if self.run is None:
            return
        if not self.run.killed and time.monotonic() > self.run.deadline:
            self.run.killed = "timeout"
        if self.run.killed:
            raise p.ClickHouseError(
                p.QUERY_WAS_CANCELLED, f"Query was cancelled ({self.run.killed})."
            )

    def insert(self, conn: EngineConnection, split: p.InsertSplit, data: Iterator[bytes]) -> None:
        handle = conn.raw.send_insert(split.statement, split.format)
        step = STREAM_APPEND_BYTES if p.stream_kind(split.format) != "whole" else WHOLE_APPEND_BYTES
        buf = bytearray()
        try:
            for chunk in data:
                buf += chunk
                if len(buf) >= step:
                    self._check_deadline()
                    conn.raw.insert_append(handle, bytes(buf))
                    buf.clear()
            if buf:
                conn.raw.insert_append(handle, bytes(buf))
            result = conn.raw.insert_done(handle)
        except BaseException:
            try:
                conn.raw.insert_cancel(handle)
            except Exception:
                log.debug("cancelling an insert failed", exc_info=True)
            raise
        self.stats.add(result)
        self.respond_whole(b"", None)

    def query(self, conn: EngineConnection, sql: str, cls: int, fmt: str, kind: str) -> None:
        params = self._query_params()
        if cls == READ_ONLY and kind != "whole":
            engine_fmt = "ArrowStream" if kind == "arrow" else fmt
            try:
                stream = conn.raw.send_query(sql, engine_fmt, params=params)
            except RuntimeError as exc:
                if "Streaming query is not supported" not in str(exc):
                    raise
            else:
                self.respond_stream(conn, stream, fmt, kind)
                return
        result = conn.raw.query(sql, fmt, params=params)
        data = result.bytes()
        self.stats.add(result, len(data) if cls == READ_ONLY else None)
        self.respond_whole(data, fmt if cls == READ_ONLY else None)

    def _blocks(self, conn: EngineConnection, stream: Any) -> Iterator[bytes]:
        done = False
        try:
            while True:
                self._check_deadline()
                result = conn.raw.streaming_fetch_result(stream)
                data = result.bytes() if result is not None else b""
                if not data:
                    done = True
                    return
                self.stats.add(result, len(data))
                yield data
        finally:
            if not done:
                try:
                    conn.raw.streaming_cancel_query(stream)
                except Exception:
                    log.debug("cancelling a streamed query failed", exc_info=True)

    @staticmethod
    def _joined(blocks: Iterator[bytes], fmt: str, kind: str) -> Iterator[bytes]:
        if kind == "concat":
            yield from blocks
        elif kind == "header":
            first = True
            for block in blocks:
                yield block if first else block[p.header_length(fmt, block) :]
                first = False
        else:
            import pyarrow as pa

            sink = _Collector()
            writer = None
            for block in blocks:
                # The statement's own FORMAT clause wins over the format asked of chDB.
                if block.startswith(b"ARROW1"):
                    file_reader = pa.ipc.open_file(block)
                    schema = file_reader.schema
                    batches = [
                        file_reader.get_batch(i) for i in range(file_reader.num_record_batches)
                    ]
                else:
                    stream_reader = pa.ipc.open_stream(block)
                    schema, batches = stream_reader.schema, list(stream_reader)
                if writer is None:
                    new = pa.ipc.new_file if fmt.lower() == "arrow" else pa.ipc.new_stream
                    writer = new(sink, schema)
                for batch in batches:
                    writer.write_batch(batch)
                yield sink.take()
            if writer is not None:
                writer.close()
                yield sink.take()

    # -- responses ----------------------------------------------------------------------------
    def _headers(self, fmt: str | None, encoding: str | None) -> dict[str, str]:
        headers = {
            "X-ClickHouse-Server-Display-Name": self.h.server.display_name,  # type: ignore[attr-defined]
            "X-ClickHouse-Query-Id": self.query_id,
            "X-ClickHouse-Timezone": self.engine.timezone,
            "Content-Type": p.content_type(fmt) if fmt else "text/plain; charset=UTF-8",
        }
        if fmt:
            headers["X-ClickHouse-Format"] = fmt
        if encoding:
            headers["Content-Encoding"] = encoding
        if _truthy(self.params.get("add_http_cors_header")):
            headers["Access-Control-Allow-Origin"] = "*"
        return headers

    def _encoding(self) -> str | None:
        if not _truthy(self.params.get("enable_http_compression")):
            return None
        return p.choose_encoding(self.h.headers.get("Accept-Encoding"))

    def _level(self) -> int:
        raw = self.params.get("http_zlib_compression_level", "3")
        return int(raw) if raw.isdigit() and 1 <= int(raw) <= 9 else 3

    def respond_whole(self, data: bytes, fmt: str | None) -> None:
        encoding = self._encoding()
        if encoding:
            codec = p.encoder(encoding, self._level())
            data = codec.feed(data) + codec.finish()
        headers = self._headers(fmt, encoding)
        headers["X-ClickHouse-Summary"] = self.stats.header()
        self.release_engine()
        self.h.send_bytes(200, headers, data)
        self.headers_sent = True

    def respond_stream(self, conn: EngineConnection, stream: Any, fmt: str, kind: str) -> None:
        pieces = self._joined(self._blocks(conn, stream), fmt, kind)
        try:
            self._send_pieces(pieces, fmt)
        finally:
            pieces.close()  # cancels the engine's stream now, not when garbage collected

    def _send_pieces(self, pieces: Iterator[bytes], fmt: str) -> None:
        encoding = self._encoding()
        codec = p.encoder(encoding, self._level())
        # Errors in planning surface on the first block: fetch it before committing to a 200.
        first = next(pieces, b"")
        headers = self._headers(fmt, encoding)
        if _truthy(self.params.get("wait_end_of_query")):
            # The client asked for the status after the end: spool (to disk past 16 MiB), then send.
            with tempfile.SpooledTemporaryFile(SPOOL_MEMORY_BYTES) as spool:
                for piece in itertools.chain((first,), pieces):
                    spool.write(codec.feed(piece))
                spool.write(codec.finish())
                headers["X-ClickHouse-Summary"] = self.stats.header()
                size = spool.tell()
                spool.seek(0)
                pieces.close()
                self.release_engine()
                self.h.send_file(200, headers, spool, size)
            self.headers_sent = True
            return
        # A result that ends within its first few pieces goes out as one sized response: one
        # write instead of three, and a complete summary header.
        buffered = [first]
        for piece in pieces:
            buffered.append(piece)
            if len(buffered) >= SMALL_RESULT_PIECES:
                break
        else:
            pieces.close()
            self.respond_whole(b"".join(buffered), fmt)
            return
        tag = p.new_tag()
        headers["X-ClickHouse-Exception-Tag"] = tag
        headers["X-ClickHouse-Summary"] = self.stats.header()
        self.h.start_chunked(200, headers)
        self.headers_sent = True
        try:
            for piece in itertools.chain(buffered, pieces):
                out = codec.feed(piece)
                if out:
                    self.h.write_chunk(out)
        except (p.ClickHouseError, RuntimeError) as exc:
            # Too late for a status code: the error goes into the stream, tagged for clients.
            err = self._timeout_error(p.ClickHouseError.from_engine(exc))
            self.log_error(err)
            self.h.write_chunk(codec.feed(p.exception_block(tag, err.body(self.engine.version))))
        pieces.close()
        self.release_engine()
        self.h.write_chunk(codec.finish())
        self.h.end_chunked()

    def log_error(self, err: p.ClickHouseError) -> None:
        detail = "" if self.has_secrets else f": {err.message[:300]}"
        log.info("query %s failed with %s (%s)%s", self.query_id, err.code, err.name, detail)


class Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive handler; every request becomes an Exchange."""

    protocol_version = "HTTP/1.1"
    server_version = "ClickHouse"
    sys_version = ""
    disable_nagle_algorithm = True  # with Nagle on, each small response waits ~40 ms for an ACK
    timeout = IDLE_KEEPALIVE_S
    # Malformed requests and unsupported methods are answered in plain text, like every error.
    error_content_type = "text/plain; charset=UTF-8"
    error_message_format = "%(message)s (HTTP %(code)d: %(explain)s)\n"

    def handle_one_request(self) -> None:
        # Acknowledge at once: clients that write headers and body separately would otherwise
        # wait for the delayed ACK before their body leaves (Nagle on their side).
        with contextlib.suppress(OSError, AttributeError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        # An idle kept-alive connection may wait long; a request in progress may not stall.
        with contextlib.suppress(OSError):
            self.connection.settimeout(IDLE_KEEPALIVE_S)
        super().handle_one_request()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self.send_bytes(200, {"Content-Type": "text/html; charset=UTF-8"}, b"", head=True)

    def do_OPTIONS(self) -> None:
        self.send_bytes(
            204,
            {
                "Access-Control-Allow-Origin": "*",
                "Access-Control-Allow-Methods": "POST, GET, OPTIONS",
                "Access-Control-Allow-Headers": "origin, x-requested-with, x-clickhouse-format, "
                "x-clickhouse-user, x-clickhouse-key, Authorization",
            },
            b"",
        )

    def _dispatch(self) -> None:
        server: WarehouseHTTPServer = self.server  # type: ignore[assignment]
        started = time.perf_counter()
        self._body_pending: bool | None = None
        self._body_deadline = time.monotonic() + server.engine.config.query_timeout_s
        self.connection.settimeout(RECEIVE_TIMEOUT_S)
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        if path in ("/ping", "/replicas_status"):
            self._drain_body()
            self.send_bytes(200, {"Content-Type": "text/html; charset=UTF-8"}, b"Ok.\n")
            return
        if path != "/":
            self._drain_body()
            self.send_bytes(
                404,
                {"Content-Type": "text/plain; charset=UTF-8"},
                f"There is no handle {url.path}\n\nUse / or /ping for health checks.\n".encode(),
            )
            return
        if server.stopping:
            self._drain_body()
            self.close_connection = True
            self.send_bytes(
                503,
                {"Content-Type": "text/plain; charset=UTF-8", "X-ClickHouse-Exception-Code": "210"},
                b"Code: 210. DB::Exception: The warehouse service is shutting down. (NETWORK_ERROR)\n",
            )
            return
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        body: Iterator[bytes] = self._body()
        if self.command == "GET" and "query" not in params:
            self.send_bytes(200, {"Content-Type": "text/html; charset=UTF-8"}, b"Ok.\n")
            return
        exchange = Exchange(self, params, body)
        status = 200
        with server.track():
            try:
                exchange.execute()
            except p.ClickHouseError as err:
                status = self._fail(exchange, err)
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                self.close_connection = True
                status = 499
            except Exception as exc:  # never let one request take the handler thread down silently
                log.exception("unexpected error in query %s", exchange.query_id)
                status = self._fail(
                    exchange, p.ClickHouseError(p.UNKNOWN_EXCEPTION, f"{type(exc).__name__}: {exc}")
                )
        log.info(
            "%s %s query_id=%s status=%s %.1f ms",
            self.command,
            "session" if params.get("session_id") else "-",
            exchange.query_id,
            status,
            (time.perf_counter() - started) * 1000,
        )

    def _fail(self, exchange: Exchange, err: p.ClickHouseError) -> int:
        exchange.log_error(err)
        self._drain_body()
        if exchange.headers_sent:
            self.close_connection = True
            return 500
        status = p.http_status(err.code)
        headers = {
            "Content-Type": "text/plain; charset=UTF-8",
            "X-ClickHouse-Exception-Code": str(err.code),
            "X-ClickHouse-Query-Id": exchange.query_id,
            "X-ClickHouse-Server-Display-Name": self.server.display_name,  # type: ignore[attr-defined]
        }
        self.send_bytes(status, headers, err.body(exchange.engine.version))
        return status

    # -- request body -------------------------------------------------------------------------
    def _body(self) -> Iterator[bytes]:
        self._body_pending = True
        lengths = set(self.headers.get_all("Content-Length") or ())
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            if lengths:
                # Both framings at once is how requests are smuggled: never reuse this connection.
                self.close_connection = True
            return self._chunked_body()
        if not lengths:
            self._body_pending = False
            return iter(())
        length = lengths.pop().strip()
        if lengths or not (length.isascii() and length.isdigit()):
            # The body's end is unknown, so nothing after it on this connection can be trusted.
            self._body_pending = False
            self.close_connection = True
            return self._bad_framing(
                "Invalid Content-Length header: it must be one non-negative decimal number."
            )
        return self._sized_body(int(length))

    @staticmethod
    def _bad_framing(message: str) -> Iterator[bytes]:
        raise p.ClickHouseError(p.CANNOT_PARSE_TEXT, message)
        yield b""  # a generator, so the error surfaces where the body is read

    def _read(self, size: int) -> bytes:
        """Up to `size` body bytes; a client that stalls loses the request, as in ClickHouse."""
        # read1: whatever has arrived, so a trickling body still meets the deadline check.
        return self._timed(self.rfile.read1, size)

    def _readline(self, limit: int) -> bytes:
        return self._timed(self.rfile.readline, limit)

    def _timed(self, read: Any, size: int) -> bytes:
        left = self._body_deadline - time.monotonic()
        if left <= 0:
            raise self._stalled(deadline=True)
        # The whole body must arrive within the per-request limit, each piece within the
        # receive timeout; the socket goes back to the receive timeout for the response.
        self.connection.settimeout(min(RECEIVE_TIMEOUT_S, left))
        try:
            return read(size)
        except TimeoutError:
            raise self._stalled(deadline=left < RECEIVE_TIMEOUT_S) from None
        finally:
            self.connection.settimeout(RECEIVE_TIMEOUT_S)

    def _stalled(self, deadline: bool = False) -> p.ClickHouseError:
        self.close_connection = True
        limit = self.server.engine.config.query_timeout_s  # type: ignore[attr-defined]
        why = (
            f"it did not arrive within the per-request limit of {limit:g} s"
            if deadline
            else f"no data for {RECEIVE_TIMEOUT_S:g} s (is it shorter than its Content-Length?)"
        )
        return p.ClickHouseError(
            p.TIMEOUT_EXCEEDED, f"Timeout exceeded while receiving the request body: {why}"
        )

    def _sized_body(self, remaining: int) -> Iterator[bytes]:
        while remaining > 0:
            data = self._read(min(remaining, 1 << 20))
            if not data:
                raise p.ClickHouseError(
                    p.NETWORK_ERROR,
                    "The client closed the connection before sending the whole body.",
                )
            remaining -= len(data)
            yield data
        self._body_pending = False

    def _chunked_body(self) -> Iterator[bytes]:
        while True:
            line = self._readline(1024)
            if not line:
                raise p.ClickHouseError(
                    p.NETWORK_ERROR, "The client closed the connection inside a chunked body."
                )
            digits = line.split(b";")[0].strip()
            # Strictly hex digits: int() would also take "-5", "+5", "0x5" and "5_0".
            if not digits or len(digits) > 15 or digits.strip(b"0123456789abcdefABCDEF"):
                self.close_connection = True
                raise p.ClickHouseError(
                    p.CANNOT_PARSE_TEXT,
                    f"Malformed chunked transfer encoding: bad chunk size {digits[:40]!r}.",
                )
            size = int(digits, 16)
            if size == 0:
                while self._readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                self._body_pending = False
                return
            remaining = size
            while remaining > 0:
                data = self._read(min(remaining, 1 << 20))
                if not data:
                    raise p.ClickHouseError(
                        p.NETWORK_ERROR, "The client closed the connection inside a chunk."
                    )
                remaining -= len(data)
                yield data
            if self._readline(16) not in (b"\r\n", b"\n"):
                self.close_connection = True
                raise p.ClickHouseError(
                    p.CANNOT_PARSE_TEXT,
                    "Malformed chunked transfer encoding: a chunk is longer than its size.",
                )

    def _drain_body(self) -> None:
        # Unread body bytes would be parsed as the next request on this keep-alive connection.
        if self._body_pending is None:
            chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
            self._body_pending = chunked or (self.headers.get("Content-Length") or "0") != "0"
        if self._body_pending:
            self.close_connection = True

    def form_fields(self, raw: bytes) -> dict[str, str]:
        """The fields of a multipart/form-data body."""
        from email.parser import BytesParser
        from email.policy import HTTP

        message = BytesParser(policy=HTTP).parsebytes(
            b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + raw
        )
        fields = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if part.get_filename():
                raise p.ClickHouseError(
                    p.NOT_IMPLEMENTED,
                    "External data (file fields of multipart requests) is not supported by the embedded "
                    "warehouse: create a temporary table in a session instead.",
                )
            if name:
                fields[str(name)] = part.get_payload(decode=True).decode()
        return fields

    # -- response writing ---------------------------------------------------------------------
    def _head(self, status: int, headers: dict[str, str]) -> bytes:
        lines = [f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}"]
        # Values echo client input (query id, format): a line break would forge headers.
        lines += [f"{k}: {_header_value(v)}" for k, v in headers.items()]
        lines.append(f"Connection: {'close' if self.close_connection else 'Keep-Alive'}")
        if not self.close_connection:
            lines.append(f"Keep-Alive: timeout={int(IDLE_KEEPALIVE_S)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "replace")

    def send_bytes(
        self, status: int, headers: dict[str, str], data: bytes, head: bool = False
    ) -> None:
        headers = {**headers, "Content-Length": str(len(data))}
        self.wfile.write(self._head(status, headers) + (b"" if head else data))

    def send_file(self, status: int, headers: dict[str, str], spool: Any, size: int) -> None:
        headers = {**headers, "Content-Length": str(size)}
        # One write for head and a small body: each extra send costs a round of syscalls.
        self.wfile.write(self._head(status, headers) + spool.read(1 << 20))
        while data := spool.read(1 << 20):
            self.wfile.write(data)

    def start_chunked(self, status: int, headers: dict[str, str]) -> None:
        self._chunked = self.request_version != "HTTP/1.0"
        if not self._chunked:
            self.close_connection = True
            self.wfile.write(self._head(status, headers))
            return
        self.wfile.write(self._head(status, {**headers, "Transfer-Encoding": "chunked"}))

    def write_chunk(self, data: bytes) -> None:
        if not data:
            return
        if self._chunked:
            self.wfile.write(b"%x\r\n%b\r\n" % (len(data), data))
        else:
            self.wfile.write(data)

    def end_chunked(self) -> None:
        if self._chunked:
            self.wfile.write(b"0\r\n\r\n")


class WarehouseHTTPServer(ThreadingHTTPServer):
    """The threaded HTTP server; it counts requests in flight for a graceful shutdown."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, config: ServerConfig, engine: Engine) -> None:
        super().__init__((config.host, config.port), Handler)
        self.engine = engine
        self.display_name = socket.gethostname()
        self.stopping = False
        self._inflight = 0
        self._idle = threading.Condition()

    class _Track:
        def __init__(self, server: WarehouseHTTPServer) -> None:
            self.server = server

        def __enter__(self) -> None:
            with self.server._idle:
                self.server._inflight += 1

        def __exit__(self, *exc: object) -> None:
            with self.server._idle:
                self.server._inflight -= 1
                self.server._idle.notify_all()

    def track(self) -> WarehouseHTTPServer._Track:
        return self._Track(self)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is in flight; False if some still are after `timeout`."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._inflight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True


def serve(config: ServerConfig, ready: Any = None, stop: threading.Event | None = None) -> None:
    """Run the service until `stop` is set (or SIGTERM/SIGINT), then shut down without losing data."""
    engine = Engine(config)
    try:
        server = WarehouseHTTPServer(config, engine)
    except BaseException:
        engine.close()
        raise
    stop = stop or threading.Event()
    loop = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    loop.start()
    url = f"http://{config.host}:{server.server_address[1]}"
    log.info("warehouse service on %s, data in %s (chDB %s)", url, config.data_dir, engine.version)
    if ready is not None:
        ready(server.server_address[1])
    try:
        while not stop.wait(0.5):
            pass
    finally:
        log.info(
            "stopping: no new connections; waiting up to %.0f s for running queries",
            config.shutdown_grace_s,
        )
        server.stopping = True
        server.shutdown()
        server.server_close()
        if not server.wait_idle(config.shutdown_grace_s):
            log.warning("queries still running after the grace period: cancelling them")
            engine.kill_all()
            server.wait_idle(10.0)
        engine.close()
        log.info("warehouse service stopped cleanly")
