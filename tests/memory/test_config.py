"""The configuration of memory and feedback: defaults, the two spellings of ``memory``, and
every mistake located at its own line (minimal configuration copied to tmp_path)."""

from __future__ import annotations

from pathlib import Path

from engine.config import load_config
from engine.config.model import AgentMemory
from engine.config.units import Seconds
from tests.config.test_loader import messages
from tests.config.test_models_config import FAST, write

MEMORY_HOST = "scheme: memory\nname: memory\ndescription: What agents remember (test).\n"
REMEMBER = "name: remember\ndescription: Remember a fact (test).\nbuiltin: remember\npermission_level: 0\n"
RULES = "model:\n  provider: rules\n"


def agent(root: Path, lines: str, *, tools: str = "[echo]", resources: str = "[file://docs]") -> None:
    write(root, "agents.d/helper.yaml",
          f"name: helper\ndescription: A helper (test).\ntools: {tools}\nresources: {resources}\n{lines}")


def test_memory_on_and_as_a_mapping(minimal_config: Path) -> None:
    write(minimal_config, "resources.d/memory.yaml", MEMORY_HOST)
    write(minimal_config, "tools.d/remember.yaml", REMEMBER)
    agent(minimal_config, "memory: on\n" + RULES, tools="[echo, remember]", resources="[file://docs, memory://memory]")
    config = load_config(minimal_config)
    assert config.agents["helper"].memory == AgentMemory(enabled=True)
    remember = config.tools["remember"]
    assert remember.builtin == "remember" and remember.parameters["required"] == ["fact"]
    agent(minimal_config, "memory: {max_items: 5, retention: 30d}\n" + RULES,
          tools="[echo, remember]", resources="[file://docs, memory://memory]")
    memory = load_config(minimal_config).agents["helper"].memory
    assert memory.enabled and memory.max_items == 5 and memory.retention == Seconds(30 * 86400)
    agent(minimal_config, RULES)
    assert load_config(minimal_config).agents["helper"].memory.enabled is False


def test_memory_mistakes_are_located(minimal_config: Path) -> None:
    write(minimal_config, "tools.d/remember.yaml", REMEMBER)
    agent(minimal_config, "memory: on\n" + RULES, tools="[echo, remember]")
    assert messages(minimal_config) == [
        "agents.d/helper.yaml:5:9: memory: memory is on, so the agent needs a memory host in its resources, where "
        "its memory is read under policy (declare one in resources.d/: scheme: memory)",
    ]
    agent(minimal_config, "memory: off\n" + RULES, tools="[echo, remember]")
    assert messages(minimal_config) == [
        "agents.d/helper.yaml:3:15: tools[1]: tool 'remember' is the built-in 'remember', which needs the agent's "
        "memory: set 'memory: on'",
    ]
    agent(minimal_config, "memory: {max_items: 0, colour: blue}\n" + RULES)
    problems = messages(minimal_config)
    assert any(p.startswith("agents.d/helper.yaml:5:") and "max_items" in p for p in problems), problems
    assert any("unknown key 'colour'" in p for p in problems), problems


def test_a_builtin_tool_takes_no_parameters_of_its_own(minimal_config: Path) -> None:
    write(minimal_config, "tools.d/remember.yaml", REMEMBER + "parameters: {type: object}\n")
    assert messages(minimal_config) == [
        "tools.d/remember.yaml:5:1: parameters: the parameters of the built-in 'remember' are the engine's: "
        "remove 'parameters'",
    ]
    write(minimal_config, "tools.d/remember.yaml", REMEMBER.replace("remember\npermission", "recall\npermission"))
    assert messages(minimal_config) == [
        "tools.d/remember.yaml:3:10: builtin: 'recall' is not one of 'remember', 'forget'",
    ]


def test_feedback_routing_needs_two_declared_models(minimal_config: Path) -> None:
    write(minimal_config, "models.d/fast.yaml", FAST)
    agent(minimal_config, "models: [fast]\nrouting: feedback\n")
    assert messages(minimal_config) == [
        "agents.d/helper.yaml:6:10: routing: routing: feedback chooses among several models: list at least two "
        "names in 'models'",
    ]
    agent(minimal_config, "models: [fast, slow]\nrouting: feedback\nfeedback_routing: {exploration: 2}\n")
    assert messages(minimal_config) == [
        "agents.d/helper.yaml:5:16: models[1]: no model named 'slow' (known: fast)",
        "agents.d/helper.yaml:7:33: feedback_routing.exploration: 2 is greater than the maximum of 1",
    ]
    write(minimal_config, "models.d/slow.yaml", FAST.replace("name: fast", "name: slow"))
    agent(minimal_config, "models: [fast, slow]\nrouting: feedback\nfeedback_routing: {seed: 3}\n"
          "examples_from_feedback: 3\n")
    helper = load_config(minimal_config).agents["helper"]
    assert helper.routing == "feedback" and helper.feedback_routing.seed == 3
    assert helper.examples_from_feedback == 3 and helper.examples_scope == "subject"


def test_builtin_is_a_registered_tool_kind(minimal_config: Path) -> None:
    """remember/forget are the ``builtin`` kind's (engine/toolkinds/builtin.py): it declares the
    key, fills in the parameters, serves the call in the engine, and refuses a sandbox or an output."""
    from engine.config.tool_kinds import kind_of, kinds

    kind = kinds()["builtin"]
    assert kind.serve is not None and kind.launch is None and kind.compose is None
    write(minimal_config, "resources.d/memory.yaml", MEMORY_HOST)
    write(minimal_config, "tools.d/remember.yaml", REMEMBER)
    agent(minimal_config, "memory: on\n" + RULES, tools="[echo, remember]", resources="[file://docs, memory://memory]")
    remember = load_config(minimal_config).tools["remember"]
    assert remember.kind == "builtin" and kind_of(remember) is kind
    assert remember.runs == "built in: remember (the agent's memory)"
    agent(minimal_config, "memory: on\n" + RULES, resources="[file://docs, memory://memory]")
    write(minimal_config, "tools.d/remember.yaml", REMEMBER + "output: json\n")
    assert messages(minimal_config) == [
        "tools.d/remember.yaml:5:1: output: 'output' applies to command and python tools only (a chain's result "
        "is its last step's; an mcp_server's content blocks pass through as the server returns them)",
    ]
    write(minimal_config, "tools.d/remember.yaml", REMEMBER + "sandbox: {timeout: 2s}\n")
    [problem] = messages(minimal_config)
    assert problem.startswith("tools.d/remember.yaml:1:1: declare exactly one of ") and "'builtin'" in problem
