"""Fixtures for the deployment tests: the vendored schemas and the compose file."""

from __future__ import annotations

import pytest
import yaml

from tests.deploy.files import COMPOSE_FILE, load_json, schema_file


@pytest.fixture(scope="session")
def railpack_schema() -> dict:
    return load_json(schema_file("railpack.schema.json"))


@pytest.fixture(scope="session")
def compose_schema() -> dict:
    return load_json(schema_file("compose-spec.json"))


@pytest.fixture(scope="session")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())
