"""The small pure parts: the program of a command line, the chat's ``/approve`` options and
prompt answers, and a matcher built from approved arguments."""

from __future__ import annotations

import pytest

from engine.cli.chat._remember import APPROVE_USAGE, parse_approve, prompt_answer
from engine.grants import program_of, satisfies
from engine.grants._match import build
from engine.protocol import Remember, RememberScope


def _digest(value: object) -> str:
    return repr(value)


@pytest.mark.parametrize(("command", "program"), [
    ("ls -la docs", "ls"), ("  git status ", "git"), ("a=b c", "a=b"), ("", None), ("ls;id", None),
    ("ls 'x'", None), ("ls\nid", None), ("ls\tx", None), ("ls $HOME", None), ("ls ~", None), (7, None),
])
def test_program_of(command: object, program: str | None) -> None:
    assert program_of(command) == program


def test_a_matcher_pins_only_what_it_names_and_only_to_the_approved_values() -> None:
    constraints = build({"path": "same", "command": "program"}, {"path": "a", "command": "ls x", "n": 1}, _digest,
                        frozenset())
    assert satisfies(constraints, {"path": "a", "command": "ls y", "n": 2}, _digest)
    assert not satisfies(constraints, {"path": "b", "command": "ls y"}, _digest)
    assert not satisfies(constraints, {"path": "a", "command": "rm y"}, _digest)
    assert not satisfies(constraints, {"command": "ls y"}, _digest)
    assert not satisfies(({"argument": "path", "kind": "prefix"},), {"path": "a"}, _digest)
    with pytest.raises(ValueError, match="no argument 'nope'"):
        build({"nope": "same"}, {"path": "a"}, _digest, frozenset())


@pytest.mark.parametrize(("rest", "parsed"), [
    ("abc", ("abc", None, None)),
    ("abc looks fine", ("abc", None, "looks fine")),
    ("abc --session", ("abc", Remember(scope=RememberScope.SESSION), None)),
    ("abc --for 30m --match path=same,command=program ok", (
        "abc", Remember(scope=RememberScope.DURATION, duration="30m", match={"path": "same", "command": "program"}),
        "ok")),
    ("", APPROVE_USAGE), ("abc --for", APPROVE_USAGE), ("abc --for soon", APPROVE_USAGE),
    ("abc --session --for 1h", APPROVE_USAGE), ("abc --match path", APPROVE_USAGE), ("abc --later", APPROVE_USAGE),
])
def test_approve_options(rest: str, parsed: object) -> None:
    assert parse_approve(rest) == parsed


def test_match_needs_a_scope() -> None:
    assert str(parse_approve("abc --match path=same")).startswith("--match goes with --session or --for")


@pytest.mark.parametrize(("text", "answer"), [
    ("y", (True, None)), ("YES", (True, None)), ("", (False, None)), ("n", (False, None)),
    ("s", (True, Remember(scope=RememberScope.SESSION))),
    ("1h", (True, Remember(scope=RememberScope.DURATION, duration="1h"))), ("maybe", None), ("1 h", None),
])
def test_prompt_answers(text: str, answer: object) -> None:
    assert prompt_answer(text) == answer


def test_exactly_compares_canonical_json_and_secrets_by_digest() -> None:
    from engine.grants import exactly

    stored = {"account": "1", "pin": "[redacted]"}
    secret = frozenset({"pin"})
    approved = {"account": "1", "pin": "4711"}
    assert exactly(stored, _digest(approved), approved, secret, _digest)
    assert not exactly(stored, _digest(approved), {"account": "1", "pin": "4712"}, secret, _digest)
    # The redaction marker itself is no way in: a call holding a secret is checked by digest.
    assert not exactly(stored, _digest(approved), {"account": "1", "pin": "[redacted]"}, secret, _digest)
    assert not exactly(stored, _digest(approved), {"account": "1"}, secret, _digest)
    assert exactly({"n": 1}, "", {"n": 1}, frozenset(), _digest)
    for other in (1.0, True, "1", [1]):
        assert not exactly({"n": 1}, "", {"n": other}, frozenset(), _digest), other
