"""The chat's ways to remember an approval: ``/approve`` options and the prompt's answers.

``/approve ID [--session | --for DURATION] [--match ARG=KIND[,ARG=KIND...]] [reason]``;
at the ``approve?`` prompt: ``y``/``n``, ``s`` (yes, for this session) or a duration
(``1h``: yes, for an hour). The server checks the rest (the policy's bound, the
arguments a match names) and answers a refusal with an error, the action still waiting.
"""

from __future__ import annotations

import re

from ...protocol import Remember, RememberScope

APPROVE_USAGE = (
    "usage: /approve ID [--session | --for DURATION] [--match ARG=same|program[,...]] [reason] "
    "(/pending lists the ids; a unique prefix is enough)"
)
_DURATION = re.compile(r"\d+(\.\d+)?(ms|s|m|h)")


def parse_approve(rest: str) -> tuple[str, Remember | None, str | None] | str:
    """(action id, remember, reason) of ``/approve``'s arguments, or a usage line."""
    words = rest.split()
    if not words:
        return APPROVE_USAGE
    action_id, words = words[0], words[1:]
    scope: RememberScope | None = None
    duration: str | None = None
    match: dict[str, str] | None = None
    while words and words[0].startswith("--"):
        option = words.pop(0)
        if option == "--session" and scope is None:
            scope = RememberScope.SESSION
        elif option == "--for" and scope is None and words and _DURATION.fullmatch(words[0]):
            scope, duration = RememberScope.DURATION, words.pop(0)
        elif option == "--match" and match is None and words:
            pairs = [pair.partition("=") for pair in words.pop(0).split(",")]
            if not all(name and sep and kind for name, sep, kind in pairs):
                return APPROVE_USAGE
            match = {name: kind for name, _sep, kind in pairs}
        else:
            return APPROVE_USAGE
    if match is not None and scope is None:
        return "--match goes with --session or --for DURATION; " + APPROVE_USAGE
    remember = None if scope is None else Remember(scope=scope, duration=duration, match=match)
    return action_id, remember, " ".join(words) or None


def prompt_answer(text: str) -> tuple[bool, Remember | None] | None:
    """The prompt's answer: (approved, remember), or None when it is not one."""
    answer = text.strip().lower()
    if answer in ("y", "yes"):
        return True, None
    if answer in ("n", "no", ""):
        return False, None
    if answer in ("s", "session"):
        return True, Remember(scope=RememberScope.SESSION)
    if _DURATION.fullmatch(answer):
        return True, Remember(scope=RememberScope.DURATION, duration=answer)
    return None
