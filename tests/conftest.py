"""Shared pytest configuration: fixtures live in tests/fixtures/, one module per service."""

pytest_plugins = [
    "tests.fixtures.services",
    "tests.fixtures.warehouse",
    "tests.fixtures.s3",
    "tests.fixtures.postgres",
    "tests.fixtures.fleet",
]
