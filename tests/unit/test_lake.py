"""Lake URL parsing, path building and client options, without touching any storage."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pyarrow as pa
import pytest

from atlasmesh.lake import Lake, LakeError, _add_content_md5
from atlasmesh.settings import Settings


def s3_lake(**overrides: object) -> Lake:
    settings = Settings(
        lake_url="s3://fleet-lake/prod/v1/",
        s3_endpoint_url="http://minio.internal:9000/",
        s3_access_key_id="AKIAEXAMPLE",
        s3_secret_access_key="very-secret-value",
        s3_region="eu-west-1",
        **overrides,
    )
    return Lake.from_settings(settings)


def test_default_lake_is_a_folder_under_home(tmp_path: Path) -> None:
    lake = Lake.from_settings(Settings(home=tmp_path / "state"))
    root = (tmp_path / "state" / "lake").resolve()
    assert lake.protocol == "file"
    assert lake.path("landing/telemetry") == f"{root}/landing/telemetry"
    assert lake.uri("processed/x.parquet") == f"file://{root}/processed/x.parquet"
    assert lake.storage_options() == {}
    assert not (tmp_path / "state").exists(), "building a lake must not touch the disk"


def test_plain_path_and_file_url_mean_the_same_lake(tmp_path: Path) -> None:
    assert Lake(str(tmp_path)).path("a") == Lake(f"file://{tmp_path}").path("a")


def test_s3_paths_keep_bucket_and_prefix() -> None:
    lake = s3_lake()
    assert (lake.protocol, lake.bucket) == ("s3", "fleet-lake")
    assert lake.path() == "fleet-lake/prod/v1"
    assert lake.path("dlq/vehicle_telemetry/") == "fleet-lake/prod/v1/dlq/vehicle_telemetry"
    assert lake.uri("a/b.parquet") == "s3://fleet-lake/prod/v1/a/b.parquet"
    assert Lake("s3://fleet-lake").uri("x") == "s3://fleet-lake/x"


def test_polars_options_for_a_plain_http_minio() -> None:
    assert s3_lake().storage_options() == {
        "aws_access_key_id": "AKIAEXAMPLE",
        "aws_secret_access_key": "very-secret-value",
        "aws_region": "eu-west-1",
        "aws_endpoint_url": "http://minio.internal:9000",
        "aws_allow_http": "true",
        "aws_virtual_hosted_style_request": "false",
    }


def test_polars_options_for_aws_with_ambient_credentials() -> None:
    lake = Lake("s3://fleet-lake/p", region="us-east-2", path_style=False)
    assert lake.storage_options() == {
        "aws_region": "us-east-2",
        "aws_virtual_hosted_style_request": "true",
    }


def test_https_endpoint_does_not_allow_plain_http() -> None:
    lake = Lake("s3://fleet-lake", endpoint_url="https://s3.example.com")
    assert "aws_allow_http" not in lake.storage_options()


def test_repr_never_shows_the_secret() -> None:
    lake = s3_lake()
    assert "very-secret-value" not in repr(lake)


@pytest.mark.parametrize(
    ("url", "hint"),
    [
        ("gs://bucket/x", "unsupported scheme 'gs'"),
        ("s3://Fleet_Lake/x", "not a valid S3 bucket name"),
        ("s3:///prefix-only", "not a valid S3 bucket name"),
        ("file://lakehost/data", "file:///absolute/path"),
    ],
)
def test_bad_lake_url_names_the_variable_to_fix(url: str, hint: str) -> None:
    with pytest.raises(LakeError, match=hint) as err:
        Lake(url)
    assert "ATLASMESH_LAKE_URL" in str(err.value)


def test_bad_endpoint_names_the_variable_to_fix() -> None:
    with pytest.raises(LakeError, match="ATLASMESH_S3_ENDPOINT_URL"):
        Lake("s3://fleet-lake", endpoint_url="minio:9000")


@pytest.mark.parametrize("rel", ["../etc/passwd", "a/../../b", "/abs/path", "s3://other/x"])
def test_paths_cannot_escape_the_lake(rel: str) -> None:
    with pytest.raises(ValueError, match="lake path"):
        s3_lake().path(rel)


def test_delete_objects_gets_a_content_md5() -> None:
    body = b"<Delete><Object><Key>a</Key></Object></Delete>"
    params: dict = {"body": body, "headers": {}}
    _add_content_md5(params)
    expected = base64.b64encode(hashlib.md5(body).digest()).decode()
    assert params["headers"]["Content-MD5"] == expected


@pytest.mark.parametrize(
    ("table", "cols", "message"),
    [
        (pa.table({"v": [1]}), ["date"], "partition columns \\['date'\\] are not in the table"),
        (pa.table({"date": ["d", None], "v": [1, 2]}), ["date"], "has 1 null values"),
        (pa.table({"date": ["d"]}), ["date"], "every column is a partition column"),
    ],
)
def test_bad_partitioning_is_refused_before_any_write(
    tmp_path: Path, table: pa.Table, cols: list[str], message: str
) -> None:
    lake = Lake(str(tmp_path / "lake"))
    with pytest.raises(ValueError, match=message):
        lake.write_parquet_dataset(table, "processed/t", cols)
    assert not (tmp_path / "lake").exists()


def test_unknown_existing_data_behavior_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="existing_data_behavior='replace'"):
        lake = Lake(str(tmp_path))
        lake.write_parquet_dataset(pa.table({"v": [1]}), "t", [], "replace")  # type: ignore[arg-type]
