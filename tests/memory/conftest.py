"""Fixtures of tests/engine (a real server on a copy of the shipped configuration) and
tests/models (the scripted OpenAI-compatible server)."""

from tests.engine.conftest import config_dir, server, start_server, state_dir  # noqa: F401 (fixtures)
from tests.models.conftest import scripted  # noqa: F401 (fixture)
