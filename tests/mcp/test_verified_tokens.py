"""The MCP listener's memory of verified tokens: it never accepts what verify() would refuse.

Each test verifies real tokens (HS256, the test secret) through
:class:`engine.mcp._http.VerifiedTokens`: a remembered token is refused under other
auth settings (a key rotated by a reload), a token differing from a remembered one is
verified on its own (a forged signature is refused), refusals are never remembered,
and the memory is bounded.  Expiry of a remembered token is tested end to end in
``test_http_bad_input.py``.
"""

from __future__ import annotations

import pytest

from engine.auth import AuthError, AuthSettings, issue
from engine.mcp._http import VerifiedTokens
from tests.engine.conftest import SECRET

pytest.importorskip("mcp", reason="the MCP SDK is the optional extra 'mcp'")

SETTINGS = AuthSettings(secret=SECRET)


def test_a_remembered_token_is_refused_under_other_settings() -> None:
    tokens = VerifiedTokens()
    token = issue(SETTINGS, "alice", ["user"], 600)
    assert tokens.verify(token, SETTINGS).sub == "alice"
    rotated = AuthSettings(secret="another-secret-0123456789abcdef0123456789abcdef")
    with pytest.raises(AuthError) as caught:
        tokens.verify(token, rotated)
    assert str(caught.value.reason) == "bad_signature"


def test_a_forged_signature_is_refused_after_the_real_token_was_remembered() -> None:
    tokens = VerifiedTokens()
    token = issue(SETTINGS, "alice", ["user"], 600)
    tokens.verify(token, SETTINGS)
    head, payload, signature = token.split(".")
    forged = ".".join((head, payload, ("A" if signature[0] != "A" else "B") + signature[1:]))
    with pytest.raises(AuthError):
        tokens.verify(forged, SETTINGS)
    with pytest.raises(AuthError):
        tokens.verify(forged, SETTINGS)  # still refused: refusals are not remembered
    assert tokens.verify(token, SETTINGS).sub == "alice"


def test_a_missing_token_is_refused() -> None:
    with pytest.raises(AuthError) as caught:
        VerifiedTokens().verify(None, SETTINGS)
    assert str(caught.value.reason) == "missing"


def test_the_memory_is_bounded() -> None:
    tokens = VerifiedTokens(max_entries=3)
    issued = [issue(SETTINGS, f"user{i}", ["user"], 600) for i in range(5)]
    for token in issued:
        tokens.verify(token, SETTINGS)
    assert len(tokens._entries) == 3
    # The oldest were forgotten, and are verified again (still accepted) when they come back.
    assert tokens.verify(issued[0], SETTINGS).sub == "user0"
    assert len(tokens._entries) == 3
