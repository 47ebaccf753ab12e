"""Python agents and delegation in the configuration: what loads, and every mistake located (file:line:column).

Each test writes one agent (or policy) into a private copy of tests/data/minimal and
asserts the exact message ``sconnect check`` prints.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from engine.agents import BaseAgent
from engine.config import load_config
from tests.config.test_loader import messages

AGENT = """
from engine.agents import BaseAgent

class Planner(BaseAgent):
    async def process_message(self, message, context):
        return "ok"
"""


def agent(root: Path, name: str, yaml: str, module: str | None = None) -> None:
    (root / "agents.d" / f"{name}.yaml").write_text(f"name: {name}\ndescription: Test agent.\n{yaml}")
    if module is not None:
        (root / "agents.d" / f"{name}.py").write_text(textwrap.dedent(module))


def test_a_module_beside_the_file_loads_with_its_class(minimal_config: Path) -> None:
    agent(minimal_config, "pa", "python: pa:Planner\ndelegates: [helper]\nturn_timeout: 30s\n", AGENT)
    loaded = load_config(minimal_config).agents["pa"]
    assert issubclass(loaded.python_class, BaseAgent) and loaded.python_class.__name__ == "Planner"
    assert loaded.delegates == ("helper",) and float(loaded.turn_timeout) == 30
    assert loaded.delegation_level == 1 and loaded.model is None
    # Not imported under its own name: it shadows nothing, and an edited file is a new module.
    assert loaded.python_class.__module__.startswith("sconnect_agent_") and "pa" not in __import__("sys").modules


def test_an_installed_module_loads(minimal_config: Path) -> None:
    agent(minimal_config, "pa", "python: tests.agents.installed_agent:Agent\n")
    assert load_config(minimal_config).agents["pa"].python_class.__module__ == "tests.agents.installed_agent"


def test_a_package_beside_the_file_loads_with_relative_imports(minimal_config: Path) -> None:
    package = minimal_config / "agents.d" / "team"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "words.py").write_text("GREETING = 'hi'\n")
    lead = textwrap.dedent(AGENT).replace("import BaseAgent", "import BaseAgent\nfrom .words import GREETING")
    (package / "lead.py").write_text(lead)
    agent(minimal_config, "pa", "python: team.lead:Planner\n")
    assert load_config(minimal_config).agents["pa"].python_class.__name__ == "Planner"


def test_a_missing_module(minimal_config: Path) -> None:
    agent(minimal_config, "pa", "python: nothere:Agent\n")
    assert messages(minimal_config) == [
        "agents.d/pa.yaml:3:9: python: no Python module named 'nothere': put nothere.py (or a package nothere/) "
        "beside this file, or install it"
    ]


def test_a_mistyped_class_gets_a_suggestion(minimal_config: Path) -> None:
    agent(minimal_config, "pa", "python: pa:Plannr\n", AGENT)
    assert messages(minimal_config) == ["agents.d/pa.yaml:3:9: python: module 'pa' has no class 'Plannr' "
                                        "(did you mean 'Planner'?)"]


def test_a_module_that_fails_to_import_is_located(minimal_config: Path) -> None:
    agent(minimal_config, "pa", "python: pa:Planner\n", "import os\n\nRATE = 1 / 0\n")
    assert messages(minimal_config) == [
        "agents.d/pa.yaml:3:9: python: module 'pa' failed to import: agents.d/pa.py:3: "
        "ZeroDivisionError: division by zero"
    ]


def test_a_module_that_is_not_python(minimal_config: Path) -> None:
    agent(minimal_config, "pa", "python: pa:Planner\n", "def broken(:\n")
    assert messages(minimal_config) == [
        "agents.d/pa.yaml:3:9: python: module 'pa' failed to import: agents.d/pa.py:1: SyntaxError: invalid syntax"
    ]


def test_a_class_that_is_not_a_base_agent(minimal_config: Path) -> None:
    agent(minimal_config, "pa", "python: pa:Planner\n", "class Planner:\n    pass\n")
    assert messages(minimal_config) == [
        "agents.d/pa.yaml:3:9: python: class pa:Planner does not extend engine.agents.BaseAgent"
    ]


def test_a_function_is_not_a_class(minimal_config: Path) -> None:
    agent(minimal_config, "pa", "python: pa:Planner\n", "def Planner():\n    pass\n")
    assert messages(minimal_config) == [
        "agents.d/pa.yaml:3:9: python: pa:Planner is a function, not a class extending engine.agents.BaseAgent"
    ]


def test_an_abstract_agent(minimal_config: Path) -> None:
    abstract = "from engine.agents import BaseAgent\nclass Planner(BaseAgent):\n    pass\n"
    agent(minimal_config, "pa", "python: pa:Planner\n", abstract)
    assert messages(minimal_config) == [
        "agents.d/pa.yaml:3:9: python: class pa:Planner is abstract: it does not implement process_message"
    ]


def test_python_and_model_together(minimal_config: Path) -> None:
    agent(minimal_config, "pa", "python: pa:Planner\nmodel: {provider: rules}\n", AGENT)
    assert messages(minimal_config) == [
        "agents.d/pa.yaml:1:1: declare exactly one of 'model' (a name or an inline block), 'models' (a list of names) "
        "and 'python' (module:Class, a custom agent)"
    ]


def test_unknown_and_self_delegates(minimal_config: Path) -> None:
    agent(minimal_config, "pa", "python: pa:Planner\ndelegates: [helpr, pa]\n", AGENT)
    assert messages(minimal_config) == [
        "agents.d/pa.yaml:4:13: delegates[0]: no agent named 'helpr' (did you mean 'helper'? known: helper, pa)",
        "agents.d/pa.yaml:4:20: delegates[1]: an agent cannot delegate to itself",
    ]


def test_a_delegate_that_did_not_load_is_named_as_such(minimal_config: Path) -> None:
    agent(minimal_config, "pa", "python: pa:Planner\ndelegates: [pb]\n", AGENT)
    agent(minimal_config, "pb", "python: pb:Nope\n", AGENT)
    assert messages(minimal_config) == [
        "agents.d/pa.yaml:4:13: delegates[0]: agent 'pb' did not load (see agents.d/pb.yaml)",
        "agents.d/pb.yaml:3:9: python: module 'pb' has no class 'Nope' (its agent classes: Planner)",
    ]


def test_a_rule_may_call_ask_agent_only_with_delegates(minimal_config: Path) -> None:
    rules = ("model:\n  provider: rules\n  rules:\n    - match: 'x'\n      tool: ask_agent\n"
             "      arguments: {agent: helper, message: hi}\n      answer: '{result.answer}'\n")
    agent(minimal_config, "pa", rules)
    assert messages(minimal_config) == [
        "agents.d/pa.yaml:7:13: model.rules[0].tool: tool 'ask_agent' is not in this agent's tools or client_tools"
    ]
    agent(minimal_config, "pa", "delegates: [helper]\n" + rules)
    assert load_config(minimal_config).agents["pa"].delegates == ("helper",)


def test_policy_targets_name_declared_agents(minimal_config: Path) -> None:
    policy = minimal_config / "policies" / "base.yaml"
    policy.write_text(policy.read_text() + (
        "  - id: ask\n    effect: allow\n    subjects: {roles: [member]}\n    actions: [agent.delegate]\n"
        "    targets: {agents: [helpr, 'x*']}\n"
    ))
    assert messages(minimal_config) == [
        "policies/base.yaml:14:24: rules[1].targets.agents[0]: no agent named 'helpr' (did you mean 'helper'? "
        "known: helper)",
        "policies/base.yaml:14:31: rules[1].targets.agents[1]: the pattern 'x*' matches no agent",
    ]


def test_a_tool_may_not_take_a_built_in_tools_name(minimal_config: Path) -> None:
    echo = minimal_config / "tools.d" / "echo.yaml"
    echo.write_text(echo.read_text().replace("name: echo", "name: ask_agent"))
    assert ("tools.d/echo.yaml:1:7: name: 'ask_agent' is the name of a built-in tool "
            "(read_resource, ask_agent, read_board, post_to_board): choose another") in messages(minimal_config)


def test_delegates_that_form_a_loop_are_a_warning(minimal_config: Path) -> None:
    agent(minimal_config, "pa", "python: pa:Planner\ndelegates: [pb]\n", AGENT)
    agent(minimal_config, "pb", "python: pb:Planner\ndelegates: [pa]\n", AGENT)
    warnings = [w for w in load_config(minimal_config).warnings if "loop" in w]
    assert warnings == ["agents.d/pa.yaml:1: delegates form a loop (pa -> pb -> pa): an agent asking one already "
                        "in its chain is refused when it happens"]


def test_process_message_must_be_async(minimal_config: Path) -> None:
    agent(minimal_config, "pa", "python: pa:Planner\n", AGENT.replace("async def", "def"))
    assert messages(minimal_config) == [
        "agents.d/pa.yaml:3:9: python: pa:Planner.process_message must be a coroutine function (async def)"
    ]


def test_an_edited_module_in_a_package_is_a_new_version(minimal_config: Path) -> None:
    package = minimal_config / "agents.d" / "team"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "words.py").write_text("GREETING = 'hi'\n")
    (package / "lead.py").write_text(textwrap.dedent(AGENT).replace(
        "import BaseAgent", "import BaseAgent\nfrom .words import GREETING").replace('"ok"', "GREETING"))
    agent(minimal_config, "pa", "python: team.lead:Planner\n")
    first = load_config(minimal_config).agents["pa"].python_class
    assert load_config(minimal_config).agents["pa"].python_class is first  # unchanged: not imported again
    (package / "words.py").write_text("GREETING = 'hello'\n")
    second = load_config(minimal_config).agents["pa"].python_class
    assert second is not first and second.__module__ != first.__module__
    assert __import__("sys").modules[second.__module__.rsplit(".", 1)[0] + ".words"].GREETING == "hello"
