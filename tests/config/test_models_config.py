"""models.d/: named model endpoints, agents' references to them, and every mistake located."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from engine.config import load_config, resolve_config_dir
from engine.config.model import NamedModel, OpenAIModel, RulesModel
from engine.config.schemas import schema
from engine.config.units import Seconds
from engine.models.openai import (
    ModelHTTPError,
    ModelProtocolError,
    ModelTimeout,
    ModelUnavailable,
    parse_retry_after,
    retry_wait,
)
from tests.config.test_loader import messages
from tests.conftest import SHIPPED_CONFIG

FAST = """\
name: fast
description: A fast endpoint.
provider: openai
base_url: http://127.0.0.1:9/v1
model: small
"""


def write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)


def helper_with(root: Path, model_lines: str) -> None:
    text = (root / "agents.d" / "helper.yaml").read_text()
    head = text.split("model:")[0]
    write(root, "agents.d/helper.yaml", head + model_lines)


def test_shipped_models_d_loads_with_safe_defaults() -> None:
    config = load_config(SHIPPED_CONFIG)
    local = config.models["local"]
    assert isinstance(local, NamedModel) and local.source.file == "models.d/local.yaml"
    assert isinstance(local.model, OpenAIModel)
    assert local.model.base_url == "http://127.0.0.1:8080/v1" and local.model.retries == 2
    # No shipped agent uses it: they run offline on rules (or are Python agents).
    assert all(isinstance(agent.model, RulesModel) for agent in config.agents.values() if agent.python is None)


def test_defaults_of_a_minimal_model_file(minimal_config: Path) -> None:
    write(minimal_config, "models.d/fast.yaml", FAST)
    helper_with(minimal_config, "model: fast\n")
    config = load_config(minimal_config)
    model = config.models["fast"].model
    assert isinstance(model, OpenAIModel)
    assert (model.timeout, model.connect_timeout, model.retries, model.stream) == (Seconds(60), Seconds(10), 2, True)
    assert (model.retry_backoff, model.retry_max_wait) == (Seconds(0.5), Seconds(30))
    assert model.api_key_env == "OPENAI_API_KEY"
    assert config.agents["helper"].model == "fast"


def test_a_named_rules_model_is_allowed_and_its_tools_checked_per_agent(minimal_config: Path) -> None:
    write(minimal_config, "models.d/canned.yaml", (
        "name: canned\ndescription: Canned answers.\nprovider: rules\n"
        "rules:\n  - {match: 'echo (?P<t>.+)', tool: echo, arguments: {text: '{t}'}, answer: '{result.text}'}\n"
        "  - {match: 'files', tool: notes, answer: 'ok {result}'}\n"
    ))
    helper_with(minimal_config, "models: [canned]\n")
    tools = (minimal_config / "agents.d" / "helper.yaml").read_text().replace("tools: [echo]", "tools: [echo, notes]")
    (minimal_config / "agents.d" / "helper.yaml").write_text(tools)
    assert isinstance(load_config(minimal_config).models["canned"].model, RulesModel)
    (minimal_config / "agents.d" / "helper.yaml").write_text(tools.replace("tools: [echo, notes]", "tools: [echo]"))
    assert messages(minimal_config) == [
        "agents.d/helper.yaml:5:10: models[0]: model 'canned' (models.d/canned.yaml:1) calls tool 'notes', "
        "which is not in this agent's tools or client_tools"
    ]


def test_unknown_model_name_is_located_with_did_you_mean(minimal_config: Path) -> None:
    write(minimal_config, "models.d/fast.yaml", FAST)
    helper_with(minimal_config, "model: fsat\n")
    assert messages(minimal_config) == [
        "agents.d/helper.yaml:5:8: model: no model named 'fsat' (did you mean 'fast'? known: fast)"
    ]


def test_unknown_name_in_a_models_list_is_located(minimal_config: Path) -> None:
    write(minimal_config, "models.d/fast.yaml", FAST)
    helper_with(minimal_config, "models: [fast, slow]\nrouting: first\n")
    assert messages(minimal_config) == ["agents.d/helper.yaml:5:16: models[1]: no model named 'slow' (known: fast)"]


def test_model_and_models_together_are_refused(minimal_config: Path) -> None:
    write(minimal_config, "models.d/fast.yaml", FAST)
    helper_with(minimal_config, "model: fast\nmodels: [fast]\n")
    assert messages(minimal_config) == [
        "agents.d/helper.yaml:1:1: declare exactly one of 'model' (a name or an inline block), "
        "'models' (a list of names) and 'python' (module:Class, a custom agent)"
    ]


def test_unknown_routing_is_refused(minimal_config: Path) -> None:
    write(minimal_config, "models.d/fast.yaml", FAST)
    helper_with(minimal_config, "models: [fast]\nrouting: random\n")
    assert messages(minimal_config) == [
        "agents.d/helper.yaml:6:10: routing: 'random' is not one of 'first', 'feedback'"
    ]


def test_a_reference_to_a_model_file_that_failed_says_so(minimal_config: Path) -> None:
    write(minimal_config, "models.d/fast.yaml", FAST + "timeout: 30 parsecs\n")
    helper_with(minimal_config, "model: fast\n")
    assert messages(minimal_config) == [
        "agents.d/helper.yaml:5:8: model: model 'fast' did not load (see models.d/fast.yaml)",
        "models.d/fast.yaml:6:10: timeout: '30 parsecs' is not a duration (e.g. 500ms, 5s, 2m)",
    ]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("retries: -1\n", "models.d/fast.yaml:6:10: retries: -1 is less than the minimum of 0"),
        ("stream: 'yes'\n", "models.d/fast.yaml:6:9: stream: 'yes' is not of type 'boolean'"),
        ("retyr_max_wait: 1s\n",
         "models.d/fast.yaml:6:1: retyr_max_wait: unknown key 'retyr_max_wait' (did you mean 'retry_max_wait'?)"),
        ("connect_timeout: 5\n", "models.d/fast.yaml:6:18: connect_timeout: 5 needs its unit, e.g. 5s"),
    ],
)
def test_bad_model_files_are_located(minimal_config: Path, extra: str, expected: str) -> None:
    write(minimal_config, "models.d/fast.yaml", FAST + extra)
    assert messages(minimal_config) == [expected]


def test_duplicate_model_names_are_refused(minimal_config: Path) -> None:
    write(minimal_config, "models.d/fast.yaml", FAST)
    write(minimal_config, "models.d/fast2.yaml", FAST)
    assert messages(minimal_config) == [
        "models.d/fast2.yaml:1:7: name: model 'fast' is already declared in models.d/fast.yaml:1"
    ]


def test_the_inline_and_named_openai_keys_are_the_same() -> None:
    """The two schemas spell the provider's keys twice: they must not drift apart."""
    inline = schema("agent")["properties"]["model"]["else"]["allOf"]
    named = schema("model")["allOf"]
    for inline_part, named_part in zip(inline, named, strict=True):
        keys = set(named_part["then"]["properties"]) - {"name", "description"}
        assert keys == set(inline_part["then"]["properties"])
        assert json.dumps(inline_part["then"]["properties"]["provider"]) == "true"


# --- retry waits (no I/O) ---------------------------------------------------------------


def _config(**overrides: object) -> OpenAIModel:
    base = {"provider": "openai", "model": "m", "retry_backoff": Seconds(1), "retry_max_wait": Seconds(5)}
    return OpenAIModel(**{**base, **overrides})  # type: ignore[arg-type]


def test_retry_after_seconds_and_http_date_are_honoured_and_capped() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
    rng = random.Random(1)
    assert retry_wait(_config(), ModelHTTPError("x", 429, 3.0), 0, rng) == 3.0
    assert retry_wait(_config(), ModelHTTPError("x", 503, 3600.0), 0, rng) == 5.0


def test_backoff_doubles_with_jitter_within_the_cap() -> None:
    rng = random.Random(7)
    for attempt, ceiling in [(0, 1.0), (1, 2.0), (2, 4.0), (3, 5.0), (9, 5.0)]:
        wait = retry_wait(_config(), ModelUnavailable("down"), attempt, rng)
        assert wait is not None and ceiling / 2 <= wait <= ceiling


def test_what_is_not_retried() -> None:
    rng = random.Random(0)
    assert retry_wait(_config(), ModelHTTPError("x", 400), 0, rng) is None
    assert retry_wait(_config(), ModelHTTPError("x", 401), 0, rng) is None
    assert retry_wait(_config(), ModelProtocolError("garbage"), 0, rng) is None
    assert retry_wait(_config(), ModelTimeout("slow answer"), 0, rng) is None
    assert retry_wait(_config(), ModelTimeout("cannot connect", connecting=True), 0, rng) is not None


def test_a_directory_with_models_d_is_a_configuration_directory(tmp_path: Path) -> None:
    write(tmp_path, "models.d/fast.yaml", FAST)
    assert resolve_config_dir(None, cwd=tmp_path) == tmp_path
    assert load_config(tmp_path).models["fast"].source.file == "models.d/fast.yaml"


def test_a_model_that_is_neither_a_name_nor_a_block_is_refused(minimal_config: Path) -> None:
    helper_with(minimal_config, "model: 5\n")
    assert messages(minimal_config) == ["agents.d/helper.yaml:5:8: model: 5 is not of type 'string', 'object'"]
