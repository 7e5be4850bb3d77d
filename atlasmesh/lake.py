"""The lake: one fsspec-backed view of the platform's files, on local disk or on S3/MinIO."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import logging
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import fsspec
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.fs as pafs

    from atlasmesh.settings import Settings

log = logging.getLogger(__name__)

ExistingDataBehavior = Literal["delete_matching", "overwrite_or_ignore", "error"]
_BEHAVIORS = ("delete_matching", "overwrite_or_ignore", "error")
# S3 bucket naming rules; MinIO enforces them strictly and answers a bad name with a vague 400.
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
# In-progress dataset writes on the file backend live in a hidden folder at the lake root, so
# no dataset glob (pyarrow, polars, ClickHouse `**/*.parquet`) sees a half-written partition.
_STAGING = ".staging"
_TEMP_PREFIX = ".tmp-"


class LakeError(RuntimeError):
    """The lake is misconfigured or unreachable; the message says what, where and how to fix it."""


@dataclass(frozen=True)
class LakeEntry:
    """One listed file or folder: its path relative to the lake root, size and modification time."""

    path: str
    size: int
    mtime: datetime | None
    is_dir: bool


def _add_content_md5(params: dict[str, Any], **_: Any) -> None:
    """Add Content-MD5 to DeleteObjects: MinIO-era gateways reject the CRC32 botocore now sends."""
    body = params.get("body") or b""
    if isinstance(body, str):
        body = body.encode()
    if isinstance(body, bytes | bytearray):
        digest = hashlib.md5(body, usedforsecurity=False).digest()
        params["headers"]["Content-MD5"] = base64.b64encode(digest).decode()


def _utc(value: Any) -> datetime | None:
    """Normalise a listing's modification time (epoch float or aware datetime) to UTC."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromtimestamp(float(value), tz=UTC)


class Lake:
    """Files of the platform under one root URL: `file:///abs/dir` or `s3://bucket/prefix`."""

    def __init__(
        self,
        root: str,
        *,
        endpoint_url: str = "",
        access_key_id: str = "",
        secret_access_key: str = "",
        region: str = "us-east-1",
        path_style: bool = True,
    ) -> None:
        self.root = root
        self.endpoint_url = endpoint_url.rstrip("/")
        self.region = region
        self.path_style = path_style
        self._access_key_id = access_key_id
        self._secret_access_key = secret_access_key
        scheme, self.bucket, self.base = _parse_root(root)
        self.protocol: Literal["file", "s3"] = scheme
        if self.endpoint_url and not re.match(r"^https?://[^/]+$", self.endpoint_url):
            raise LakeError(
                f"S3 endpoint {self.endpoint_url!r} is not an http(s)://host:port URL; "
                "fix ATLASMESH_S3_ENDPOINT_URL (e.g. http://127.0.0.1:9000)."
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> Lake:
        """The lake the settings point at (no I/O until first use)."""
        return cls(
            settings.lake_root,
            endpoint_url=settings.s3_endpoint_url,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=settings.s3_secret_access_key.get_secret_value(),
            region=settings.s3_region,
            path_style=settings.s3_path_style,
        )

    def __repr__(self) -> str:
        endpoint = f", endpoint={self.endpoint_url!r}" if self.is_s3 else ""
        return f"Lake({self.root!r}{endpoint})"

    @property
    def is_s3(self) -> bool:
        """True for an S3/MinIO lake."""
        return self.protocol == "s3"

    # --- paths -----------------------------------------------------------------------------

    def path(self, rel: str = "") -> str:
        """The filesystem path of `rel` as `fs` and `pyarrow_filesystem()` expect it."""
        rel = _clean_rel(rel)
        return f"{self.base}/{rel}" if rel else self.base

    def uri(self, rel: str = "") -> str:
        """The full URL of `rel` (`file:///...` or `s3://...`); a trailing `/` is kept.

        polars reads a dataset folder only when its URL ends with `/`:
        `pl.scan_parquet(lake.uri("processed/x/"), storage_options=lake.storage_options())`.
        """
        slash = "/" if rel.endswith("/") and _clean_rel(rel) else ""
        return f"{self.protocol}://{self.path(rel)}{slash}"

    def _rel(self, fs_path: str) -> str:
        """Path relative to the lake root, from a path returned by the filesystem."""
        fs_path = fs_path.rstrip("/")
        if self.protocol == "s3":
            fs_path = fs_path.removeprefix("s3://")
        return fs_path.removeprefix(self.base).lstrip("/")

    # --- filesystems and client options -------------------------------------------------------

    @cached_property
    def fs(self) -> fsspec.AbstractFileSystem:
        """The fsspec filesystem; for S3 the bucket is checked on first use."""
        if not self.is_s3:
            from fsspec.implementations.local import LocalFileSystem

            with self._errors("create the lake folder", ""):
                os.makedirs(self.base, exist_ok=True)
            return LocalFileSystem()
        return self._connect_s3()

    def _connect_s3(self) -> fsspec.AbstractFileSystem:
        import aiobotocore.session
        import s3fs

        session = aiobotocore.session.AioSession()
        # Registered on the session (not on one client) so it survives s3fs re-creating clients.
        session.register("before-call.s3.DeleteObjects", _add_content_md5)
        config: dict[str, Any] = {
            "s3": {"addressing_style": "path" if self.path_style else "virtual"},
            # Checksums only where the API requires them: old MinIO gateway code rejects
            # the flexible-checksum headers recent botocore sends on every upload.
            "request_checksum_calculation": "when_required",
            "response_checksum_validation": "when_required",
            "connect_timeout": 10,
            "read_timeout": 120,
            "retries": {"max_attempts": 3, "mode": "standard"},
        }
        fs = s3fs.S3FileSystem(
            key=self._access_key_id or None,
            secret=self._secret_access_key or None,
            endpoint_url=self.endpoint_url or None,
            client_kwargs={"region_name": self.region},
            config_kwargs=config,
            session=session,
            # Other processes add files all the time (gateways, other steps): never trust a
            # cached listing, and never share an instance with differently configured callers.
            use_listings_cache=False,
            skip_instance_cache=True,
        )
        with self._errors("open the bucket", ""):
            fs.call_s3("head_bucket", Bucket=self.bucket)
        log.debug("lake connected: %r", self)
        return fs

    def pyarrow_filesystem(self) -> pafs.FileSystem:
        """A pyarrow filesystem for `pyarrow.dataset` with paths from `path()`."""
        import pyarrow.fs as pafs

        if not self.is_s3:
            return pafs.LocalFileSystem()
        # Wrapping s3fs (rather than pyarrow's native S3) keeps one client configuration:
        # native S3 writes to the gateway need AWS_REQUEST_CHECKSUM_CALCULATION in the
        # process environment, which would leak into every other AWS client.
        return pafs.PyFileSystem(pafs.FSSpecHandler(self.fs))

    def storage_options(self) -> dict[str, str]:
        """Options for polars `scan_parquet(lake.uri(..), storage_options=..)`; holds the secret."""
        if not self.is_s3:
            return {}
        options = {"aws_region": self.region}
        if self._access_key_id:
            options["aws_access_key_id"] = self._access_key_id
        if self._secret_access_key:
            options["aws_secret_access_key"] = self._secret_access_key
        if self.endpoint_url:
            options["aws_endpoint_url"] = self.endpoint_url
            if self.endpoint_url.startswith("http://"):
                options["aws_allow_http"] = "true"
        options["aws_virtual_hosted_style_request"] = "false" if self.path_style else "true"
        return options

    # --- files -----------------------------------------------------------------------------

    def exists(self, rel: str) -> bool:
        """True when `rel` is a file or a non-empty folder."""
        with self._errors("check", rel):
            return bool(self.fs.exists(self.path(rel)))

    def ls(self, rel: str = "") -> list[LakeEntry]:
        """Files and folders directly under `rel`, sorted by path; empty if `rel` is absent."""
        with self._errors("list", rel):
            try:
                infos = self.fs.ls(self.path(rel), detail=True)
            except FileNotFoundError:
                return []
        return self._entries(infos)

    def glob(self, pattern: str) -> list[LakeEntry]:
        """Entries matching a glob (`**` recurses), sorted by path, e.g. to notice new files."""
        with self._errors("list", pattern):
            infos = self.fs.glob(self.path(pattern), detail=True)
        return self._entries(infos.values())

    def find(self, rel: str) -> list[LakeEntry]:
        """Every file under folder `rel`, at any depth, sorted; names are literal, not patterns.

        Unlike `glob`, a folder named `date=*` or `schema=v[1]` means itself here.
        """
        with self._errors("list", rel):
            infos = self.fs.find(self.path(rel), detail=True)
        return self._entries(infos.values())

    def _entries(self, infos: Iterable[dict[str, Any]]) -> list[LakeEntry]:
        # `folder/` keys are folder markers (S3 consoles, filesystem-backed gateways), not files.
        infos = (i for i in infos if not i["name"].endswith("/"))
        entries = (self._entry(info) for info in infos)
        kept = (e for e in entries if e.path and not _in_progress(e.path))
        return sorted(kept, key=lambda e: e.path)

    def _entry(self, info: dict[str, Any]) -> LakeEntry:
        is_dir = info.get("type") == "directory"
        return LakeEntry(
            path=self._rel(info["name"]),
            size=0 if is_dir else int(info.get("size") or 0),
            mtime=None if is_dir else _utc(info.get("mtime") or info.get("LastModified")),
            is_dir=is_dir,
        )

    @contextlib.contextmanager
    def open(self, rel: str, mode: str = "rb") -> Iterator[IO[Any]]:
        """Open `rel` as a context manager; a write becomes visible only if the block succeeds."""
        if mode not in ("rb", "r", "wb", "w"):
            raise ValueError(f"Lake.open: mode {mode!r} is not one of rb, r, wb, w")
        if mode.startswith("r"):
            text_options = {"encoding": "utf-8"} if mode == "r" else {}
            with self._errors("read", rel):
                f = self.fs.open(self.path(rel), mode, **text_options)
            with f:
                yield f
            return
        with self._temp_file(rel) as (tmp, f):
            if mode == "wb":
                yield f
            else:
                text = io.TextIOWrapper(f, encoding="utf-8")
                yield text
                text.flush()
                text.detach()
            f.flush()
            os.fsync(f.fileno())
            f.close()
            self._publish_file(tmp, rel)

    @contextlib.contextmanager
    def _temp_file(self, rel: str) -> Iterator[tuple[str, IO[bytes]]]:
        """A temp file, removed on error; for the file backend beside the target (atomic rename)."""
        directory = None
        if not self.is_s3:
            directory = os.path.dirname(self.path(rel))
            with self._errors("create the folder of", rel):
                os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_TEMP_PREFIX, dir=directory)
        # mkstemp makes the file private (0600); lake files are shared like any other written file.
        os.chmod(tmp, 0o644)
        try:
            with os.fdopen(fd, "wb") as f:
                yield tmp, f
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def _publish_file(self, tmp: str, rel: str) -> None:
        with self._errors("write", rel):
            if self.is_s3:
                # One PUT (or a multipart upload completed at the end): S3 shows all or nothing.
                self.fs.put_file(tmp, self.path(rel))
            else:
                os.replace(tmp, self.path(rel))

    def read_bytes(self, rel: str) -> bytes:
        """The content of file `rel`."""
        with self._errors("read", rel):
            return bytes(self.fs.cat_file(self.path(rel)))

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write file `rel` atomically: readers see the old content or the new, never a part."""
        with self.open(rel, "wb") as f:
            f.write(data)

    def rm(self, rel: str, recursive: bool = False, missing_ok: bool = False) -> None:
        """Delete file `rel` (or folder `rel` with recursive=True)."""
        if not _clean_rel(rel) and recursive:
            raise ValueError(f"refusing to delete the whole lake {self.root}; name a sub-path")
        with self._errors("delete", rel):
            try:
                self.fs.rm(self.path(rel), recursive=recursive)
            except FileNotFoundError:
                if not missing_ok:
                    raise FileNotFoundError(f"{self.uri(rel)} does not exist") from None
            if self.is_s3 and recursive:
                self._drop_folder_markers(self.path(rel))

    def _drop_folder_markers(self, path: str) -> None:
        """Delete the `folder/` keys a filesystem-backed gateway (JuiceFS, MinIO FS) leaves behind.

        A batch DeleteObjects empties folders there but keeps them, listed as `folder/` keys,
        so the deleted prefix would still "exist"; a single DeleteObject of each marker (deepest
        first) removes it and its emptied parents. Real S3 has no such keys: nothing to do.
        """
        markers = [key for key in self.fs.find(path) if key.endswith("/")]
        for key in sorted(markers, key=lambda k: k.count("/"), reverse=True):
            self.fs.call_s3("delete_object", Bucket=self.bucket, Key=key.split("/", 1)[1])

    # --- Parquet datasets ------------------------------------------------------------------

    def write_parquet_dataset(
        self,
        table: pa.Table,
        rel: str,
        partition_cols: Sequence[str] = (),
        existing_data_behavior: ExistingDataBehavior = "delete_matching",
        *,
        compression: str = "zstd",
    ) -> list[str]:
        """Write `table` as a Hive-partitioned Parquet dataset; returns the written files' paths.

        `delete_matching` replaces every partition present in `table` and keeps the others;
        `overwrite_or_ignore` adds files next to existing ones; `error` refuses a non-empty
        dataset. On the file backend each partition is swapped in by rename, so readers never
        see a partly written partition.
        """
        import pyarrow.dataset as ds

        if existing_data_behavior not in _BEHAVIORS:
            raise ValueError(
                f"existing_data_behavior={existing_data_behavior!r}; use one of {_BEHAVIORS}"
            )
        _check_partition_cols(table, partition_cols, self.uri(rel))
        pattern = "/".join(filter(None, [_clean_rel(rel), "**/*.parquet"]))
        if existing_data_behavior == "error" and self.glob(pattern):
            raise LakeError(
                f"{self.uri(rel)} already holds Parquet files and existing_data_behavior='error'; "
                "delete it first or use 'delete_matching' to replace partitions."
            )
        if table.num_rows == 0:
            return []
        options: dict[str, Any] = {
            "format": "parquet",
            "file_options": ds.ParquetFileFormat().make_write_options(compression=compression),
            "partitioning": list(partition_cols) or None,
            "partitioning_flavor": "hive" if partition_cols else None,
            # A fresh name per write: appends never clobber, and a sensor sees new files.
            "basename_template": f"part-{uuid.uuid4().hex[:12]}-{{i}}.parquet",
        }
        written: list[str] = []
        with self._errors("write the dataset", rel):
            if self.is_s3:
                ds.write_dataset(
                    table,
                    self.path(rel),
                    filesystem=self.pyarrow_filesystem(),
                    existing_data_behavior=existing_data_behavior,
                    file_visitor=lambda f: written.append(self._rel(f.path)),
                    **options,
                )
                return sorted(written)
            return self._write_local_dataset(table, rel, existing_data_behavior, options)

    def _write_local_dataset(
        self, table: pa.Table, rel: str, behavior: str, options: dict[str, Any]
    ) -> list[str]:
        import pyarrow.dataset as ds

        stage = Path(self.path(f"{_STAGING}/{uuid.uuid4().hex}"))
        new, old, target = stage / "new", stage / "old", Path(self.path(rel))
        staged: list[Path] = []
        try:
            ds.write_dataset(
                table,
                str(new),
                filesystem=self.pyarrow_filesystem(),
                file_visitor=lambda f: staged.append(Path(f.path)),
                **options,
            )
            partitions = sorted({p.parent.relative_to(new) for p in staged})
            old.mkdir(parents=True)
            for i, part in enumerate(partitions):
                src, dst = new / part, target / part
                dst.parent.mkdir(parents=True, exist_ok=True)
                if behavior == "delete_matching":
                    # Two renames: the partition is briefly absent, never half written.
                    if dst.exists():
                        dst.rename(old / str(i))
                    src.rename(dst)
                else:
                    dst.mkdir(exist_ok=True)
                    for f in src.iterdir():
                        f.rename(dst / f.name)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        written = (target / p.relative_to(new) for p in staged)
        return sorted(self._rel(str(p)) for p in written)

    def read_parquet_dataset(
        self,
        rel: str,
        filters: pc.Expression | list[Any] | None = None,
        columns: Sequence[str] | None = None,
        schema: pa.Schema | None = None,
    ) -> pa.Table:
        """Read a Hive-partitioned dataset; `filters` prune partitions (pyarrow expression or DNF).

        Without `schema`, partition columns are inferred (`hour=3` -> int32, `date=...` ->
        string); pass the written table's schema to get its types back.
        """
        import pyarrow.dataset as ds
        import pyarrow.parquet as pq

        if not self.exists(rel):
            raise FileNotFoundError(f"no Parquet dataset at {self.uri(rel)}")
        if isinstance(filters, list):
            filters = pq.filters_to_expression(filters)
        with self._errors("read the dataset", rel):
            dataset = ds.dataset(
                self.path(rel),
                filesystem=self.pyarrow_filesystem(),
                format="parquet",
                partitioning="hive",
                schema=schema,
            )
            return dataset.to_table(columns=list(columns) if columns else None, filter=filters)

    # --- errors ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self, action: str, rel: str) -> Iterator[None]:
        """Turn credential, bucket and connection failures into a LakeError saying how to fix it."""
        try:
            yield
        except (FileExistsError, IsADirectoryError, NotADirectoryError):
            raise
        except FileNotFoundError as exc:
            if self.is_s3 and _s3_code(exc) in ("NoSuchBucket", "404") and not rel:
                raise LakeError(
                    f"bucket {self.bucket!r} does not exist at {self._where()}: create it, or fix "
                    f"the bucket in ATLASMESH_LAKE_URL (now {self.root!r})."
                ) from None
            if self.is_s3 and _s3_code(exc) == "NoSuchBucket":
                raise LakeError(
                    f"bucket {self.bucket!r} disappeared at {self._where()} while trying to "
                    f"{action} {self.uri(rel)}."
                ) from None
            raise
        except PermissionError as exc:
            if self.is_s3:
                raise LakeError(
                    f"S3 refused to {action} {self.uri(rel)} at {self._where()}: "
                    f"{_s3_code(exc) or 'AccessDenied'} ({exc}). Check ATLASMESH_S3_ACCESS_KEY_ID "
                    f"and ATLASMESH_S3_SECRET_ACCESS_KEY, and that this key may use bucket "
                    f"{self.bucket!r}."
                ) from None
            raise LakeError(
                f"no permission to {action} {self.uri(rel)} ({exc.strerror or exc}). Point "
                "ATLASMESH_HOME or ATLASMESH_LAKE_URL at a folder this user can write."
            ) from None
        except Exception as exc:
            if not self.is_s3:
                raise
            if code := _s3_code(exc):
                raise LakeError(
                    f"S3 at {self._where()} rejected the request to {action} {self.uri(rel)}: "
                    f"{code} ({exc})."
                ) from None
            if not _is_transport_error(exc):
                raise
            raise LakeError(
                f"could not {action} {self.uri(rel)}: the S3 endpoint {self._where()} is "
                f"unreachable ({type(exc).__name__}: {exc}). Check ATLASMESH_S3_ENDPOINT_URL and "
                "that the S3 service is running."
            ) from None

    def _where(self) -> str:
        return self.endpoint_url or f"AWS S3 ({self.region})"


def _parse_root(root: str) -> tuple[Literal["file", "s3"], str, str]:
    """Split a lake URL into (protocol, bucket, fs base path); a clear error when it is wrong."""
    if not root:
        raise LakeError("the lake URL is empty; set ATLASMESH_LAKE_URL or ATLASMESH_HOME.")
    parts = urlsplit(root)
    if parts.scheme in ("", "file"):
        if parts.scheme == "file" and parts.netloc not in ("", "localhost"):
            raise LakeError(
                f"lake URL {root!r} names host {parts.netloc!r}; write file:///absolute/path "
                "(three slashes) in ATLASMESH_LAKE_URL."
            )
        path = parts.path if parts.scheme else root
        if parts.scheme == "file" and not path.startswith("/"):
            raise LakeError(
                f"lake URL {root!r} is not absolute; "
                "use file:///absolute/path in ATLASMESH_LAKE_URL."
            )
        return "file", "", str(Path(path).expanduser().resolve())
    if parts.scheme == "s3":
        bucket, prefix = parts.netloc, parts.path.strip("/")
        if not _BUCKET_RE.match(bucket) or ".." in bucket:
            raise LakeError(
                f"{bucket!r} in lake URL {root!r} is not a valid S3 bucket name (3-63 characters: "
                "lowercase letters, digits, '-', '.'); fix ATLASMESH_LAKE_URL."
            )
        base = f"{bucket}/{_clean_rel(prefix)}" if prefix else bucket
        return "s3", bucket, base
    raise LakeError(
        f"lake URL {root!r} has unsupported scheme {parts.scheme!r}; ATLASMESH_LAKE_URL must be "
        "file:///absolute/path or s3://bucket/prefix."
    )


def _in_progress(rel: str) -> bool:
    """True for the lake's own in-progress writes, which listings must not show."""
    return rel.startswith(_STAGING) or rel.rsplit("/", 1)[-1].startswith(_TEMP_PREFIX)


def _clean_rel(rel: str) -> str:
    """Normalise a lake-relative path and refuse ones that would leave the lake."""
    if rel.startswith("/") or "\\" in rel or "://" in rel:
        raise ValueError(f"lake path {rel!r} must be relative to the lake root, like 'landing/x'")
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"lake path {rel!r} must not contain '..'")
    return "/".join(parts)


def _check_partition_cols(table: pa.Table, partition_cols: Sequence[str], where: str) -> None:
    missing = [c for c in partition_cols if c not in table.column_names]
    if missing:
        raise ValueError(
            f"cannot write {where}: partition columns {missing} are not in the table "
            f"(columns: {table.column_names})"
        )
    for col in partition_cols:
        nulls = table.column(col).null_count
        if nulls:
            raise ValueError(
                f"cannot write {where}: partition column {col!r} has {nulls} null values; "
                "fill or filter them first"
            )
    if partition_cols and len(partition_cols) == table.num_columns:
        raise ValueError(f"cannot write {where}: every column is a partition column")


def _s3_code(exc: BaseException) -> str:
    """The S3 error code behind an s3fs/botocore exception, if any."""
    for err in (exc, exc.__cause__):
        response = getattr(err, "response", None)
        if isinstance(response, dict):
            return str(response.get("Error", {}).get("Code", ""))
    return ""


def _is_transport_error(exc: BaseException) -> bool:
    """True when the S3 service could not be reached or did not answer in time."""
    from botocore.exceptions import BotoCoreError

    if isinstance(exc, BotoCoreError | ConnectionError | TimeoutError):
        return True
    return isinstance(exc, OSError) and isinstance(exc.__cause__, BotoCoreError)
