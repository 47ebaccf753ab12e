"""JWT at the handshake: each bad token class refused with its reason, good tokens from
header and query, the dev secret, minting."""

from __future__ import annotations

import base64
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import jwt
import pytest

from engine.auth import (
    AuthConfigError,
    AuthError,
    AuthReason,
    AuthSettings,
    issue,
    load_settings,
    token_from_request,
    verify,
)

SECRET = b"0123456789abcdef0123456789abcdef-test"
OTHER_SECRET = b"fedcba9876543210fedcba9876543210-evil"
HS = AuthSettings(secret=SECRET)


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"sub": "alice", "roles": ["user"], "exp": int(time.time()) + 300}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def hs(payload: dict[str, Any], key: bytes = SECRET, alg: str = "HS256") -> str:
    return jwt.encode(payload, key, algorithm=alg)


def refused(token: str | None, settings: AuthSettings = HS) -> AuthError:
    with pytest.raises(AuthError) as info:
        verify(token, settings)
    err = info.value
    # never echo the token or the secret
    if token:
        assert token not in err.message
    assert SECRET.decode() not in err.message
    return err


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


# --- refusals --------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, ""])
def test_missing(token: str | None) -> None:
    assert refused(token).reason is AuthReason.MISSING


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "x" * 20_000,
                                   b64({"alg": "HS256"}) + ".!!!.sig"])
def test_malformed(token: str) -> None:
    assert refused(token).reason is AuthReason.MALFORMED


def test_expired() -> None:
    assert refused(hs(claims(exp=int(time.time()) - 10))).reason is AuthReason.EXPIRED


def test_leeway_tolerates_small_skew() -> None:
    token = hs(claims(exp=int(time.time()) - 5))
    assert verify(token, AuthSettings(secret=SECRET, leeway_s=60)).sub == "alice"


def test_nbf_in_future() -> None:
    token = hs(claims(nbf=int(time.time()) + 600))
    assert refused(token).reason is AuthReason.NOT_YET_VALID


def test_iat_in_future() -> None:
    token = hs(claims(iat=int(time.time()) + 600))
    assert refused(token).reason is AuthReason.NOT_YET_VALID


def test_wrong_signature() -> None:
    assert refused(hs(claims(), key=OTHER_SECRET)).reason is AuthReason.BAD_SIGNATURE


def test_tampered_payload() -> None:
    header, _payload, sig = hs(claims()).split(".")
    forged = f"{header}.{b64(claims(roles=['admin']))}.{sig}"
    assert refused(forged).reason is AuthReason.BAD_SIGNATURE


def test_alg_none() -> None:
    unsigned = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims())}."
    assert refused(unsigned).reason is AuthReason.BAD_ALGORITHM
    assert refused(jwt.encode(claims(), None, algorithm="none")).reason is AuthReason.BAD_ALGORITHM


def test_alg_outside_allowlist() -> None:
    assert refused(hs(claims(), key=SECRET * 2, alg="HS512")).reason is AuthReason.BAD_ALGORITHM


def test_none_can_never_be_allowed() -> None:
    with pytest.raises(AuthConfigError, match="none"):
        AuthSettings(algorithms=("HS256", "none"), secret=SECRET)


def test_wrong_audience() -> None:
    settings = AuthSettings(secret=SECRET, audience="sconnect")
    assert refused(hs(claims(aud="billing")), settings).reason is AuthReason.BAD_AUDIENCE
    assert refused(hs(claims()), settings).reason is AuthReason.MISSING_CLAIM
    assert verify(hs(claims(aud=["other", "sconnect"])), settings).sub == "alice"


def test_audience_present_but_not_configured() -> None:
    # Minted for another service: RFC 7519 §4.1.3 says reject.
    err = refused(hs(claims(aud="billing")))
    assert err.reason is AuthReason.BAD_AUDIENCE
    assert "SCONNECT_JWT_AUDIENCE" in err.message


def test_wrong_issuer() -> None:
    settings = AuthSettings(secret=SECRET, issuer="https://idp.example")
    assert refused(hs(claims(iss="https://evil.example")), settings).reason is AuthReason.BAD_ISSUER
    assert refused(hs(claims()), settings).reason is AuthReason.MISSING_CLAIM
    assert verify(hs(claims(iss="https://idp.example")), settings).sub == "alice"


def test_missing_exp() -> None:
    err = refused(hs(claims(exp=None)))
    assert err.reason is AuthReason.MISSING_CLAIM and "exp" in err.message


def test_missing_sub() -> None:
    assert refused(hs(claims(sub=None))).reason is AuthReason.MISSING_CLAIM


@pytest.mark.parametrize("sub", ["", "   ", 42, ["alice"]])
def test_bad_sub(sub: Any) -> None:
    assert refused(hs(claims(sub=sub))).reason is AuthReason.BAD_CLAIMS


@pytest.mark.parametrize("roles", ["admin", {"admin": True}, [1], ["user", None]])
def test_roles_must_be_list_of_strings(roles: Any) -> None:
    assert refused(hs(claims(roles=roles))).reason is AuthReason.BAD_CLAIMS


def test_no_roles_claim_means_no_roles() -> None:
    assert verify(hs(claims(roles=None)), HS).roles == frozenset()


# --- good tokens -----------------------------------------------------------------------


def test_good_token_from_header() -> None:
    token = hs(claims(roles=["user", "admin"]))
    for scheme in (b"Bearer", b"bearer", b"BEARER"):
        found = token_from_request("/ws", [(b"origin", b"x"),
                                           (b"authorization", scheme + b" " + token.encode())])
        assert found == token
    principal = verify(found, HS)
    assert principal.sub == "alice"
    assert principal.roles == frozenset({"user", "admin"})
    assert principal.expires_at == jwt.decode(token, SECRET, algorithms=["HS256"])["exp"]
    assert principal.claims["sub"] == "alice"


def test_good_token_from_query() -> None:
    token = hs(claims())
    assert token_from_request(f"/ws?agent=helper&token={token}", []) == token
    assert verify(token_from_request(f"/ws?token={token}", []), HS).sub == "alice"


def test_header_wins_over_query_and_other_schemes_are_ignored() -> None:
    assert token_from_request("/ws?token=q", [(b"Authorization", b"Bearer h")]) == "h"
    assert token_from_request("/ws", [(b"authorization", b"Basic YWxpY2U6cHc=")]) is None
    assert token_from_request("/ws?token=", []) is None
    assert token_from_request("/", []) is None


def test_custom_and_nested_roles_claim() -> None:
    settings = AuthSettings(secret=SECRET, roles_claim="https://example.com/roles")
    token = hs(claims(roles=None, **{"https://example.com/roles": ["admin"]}))
    assert verify(token, settings).roles == {"admin"}
    nested = AuthSettings(secret=SECRET, roles_claim="realm_access.roles")
    token = hs(claims(roles=None, realm_access={"roles": ["user"]}))
    assert verify(token, nested).roles == {"user"}


def test_issue_verify_round_trip() -> None:
    settings = AuthSettings(secret=SECRET, audience="sconnect", issuer="sconnect-dev")
    now = time.time()
    token = issue(settings, "bob", ["admin", "user"], 3600, now=now)
    principal = verify(token, settings)
    assert principal.sub == "bob"
    assert principal.roles == {"admin", "user"}
    assert principal.expires_at == int(now + 3600)
    assert principal.claims["aud"] == "sconnect" and principal.claims["jti"]
    # minted in the past, so already expired
    stale = issue(settings, "bob", [], 10, now=now - 100)
    assert refused(stale, settings).reason is AuthReason.EXPIRED


def test_issue_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        issue(HS, "", ["user"], 60)
    with pytest.raises(ValueError):
        issue(HS, "bob", ["user"], 0)


# --- asymmetric keys -------------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_key() -> Any:
    pytest.importorskip("cryptography")
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> Any:
    pytest.importorskip("cryptography")
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _pem_public(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _pem_private(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def test_rs256_from_public_key_file(tmp_path: Path, rsa_key: Any) -> None:
    pem = tmp_path / "idp.pem"
    pem.write_bytes(_pem_public(rsa_key))
    settings = load_settings({"SCONNECT_JWT_PUBLIC_KEY_FILE": str(pem)}, tmp_path / "state",
                             dev=False)
    assert settings.algorithms == ("RS256",) and settings.secret is None
    token = jwt.encode(claims(), rsa_key, algorithm="RS256")
    assert verify(token, settings).sub == "alice"
    # the same key can sign PS256, but it is not in the allowlist
    ps256 = jwt.encode(claims(), rsa_key, algorithm="PS256")
    assert refused(ps256, settings).reason is AuthReason.BAD_ALGORITHM


def test_hs_token_against_rs_only_config_is_not_confused(tmp_path: Path, rsa_key: Any) -> None:
    public_pem = _pem_public(rsa_key)
    pem = tmp_path / "idp.pem"
    pem.write_bytes(public_pem)
    rs_only = load_settings({"SCONNECT_JWT_PUBLIC_KEY_FILE": str(pem)}, tmp_path / "s", dev=False)
    # The classic attack: HMAC-sign with the (public!) PEM as the secret. PyJWT refuses
    # to mint that, so sign by hand.
    forged = _hmac_token(claims(roles=["admin"]), public_pem)
    assert refused(forged, rs_only).reason is AuthReason.BAD_ALGORITHM
    # Even when the allowlist names HS256 too, no HS secret means no HS token.
    mixed = AuthSettings(algorithms=("RS256", "HS256"), public_keys=rs_only.public_keys)
    assert refused(forged, mixed).reason is AuthReason.BAD_ALGORITHM


def _hmac_token(payload: dict[str, Any], key: bytes) -> str:
    import hashlib
    import hmac

    signing_input = f"{b64({'alg': 'HS256', 'typ': 'JWT'})}.{b64(payload)}"
    sig = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + base64.urlsafe_b64encode(sig).rstrip(b"=").decode()


def test_rs_token_against_hs_only_config(rsa_key: Any) -> None:
    token = jwt.encode(claims(), rsa_key, algorithm="RS256")
    assert refused(token).reason is AuthReason.BAD_ALGORITHM


def test_es256_from_jwks_with_kid(tmp_path: Path, ec_key: Any, rsa_key: Any) -> None:
    from jwt.algorithms import ECAlgorithm, RSAAlgorithm

    ec_jwk = json.loads(ECAlgorithm.to_jwk(ec_key.public_key()))
    rsa_jwk = json.loads(RSAAlgorithm.to_jwk(rsa_key.public_key()))
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**ec_jwk, "kid": "ec-1", "use": "sig"},
                                          {**rsa_jwk, "kid": "rsa-1", "alg": "RS256"}]}))
    settings = load_settings({"SCONNECT_JWKS_FILE": str(jwks)}, tmp_path / "s", dev=False)
    assert set(settings.algorithms) == {"ES256", "RS256"}
    good = jwt.encode(claims(), ec_key, algorithm="ES256", headers={"kid": "ec-1"})
    assert verify(good, settings).sub == "alice"
    unknown_kid = jwt.encode(claims(), ec_key, algorithm="ES256", headers={"kid": "nope"})
    assert refused(unknown_kid, settings).reason is AuthReason.BAD_SIGNATURE
    rs = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "rsa-1"})
    assert verify(rs, settings).sub == "alice"


def test_issue_with_private_key(tmp_path: Path, rsa_key: Any) -> None:
    pem = tmp_path / "idp.pem"
    pem.write_bytes(_pem_public(rsa_key))
    private = tmp_path / "idp.key"
    private.write_bytes(_pem_private(rsa_key))
    settings = load_settings({"SCONNECT_JWT_PUBLIC_KEY_FILE": str(pem)}, tmp_path / "s", dev=False)
    with pytest.raises(AuthConfigError, match="private key"):
        issue(settings, "carol", ["user"], 60)
    token = issue(settings, "carol", ["user"], 60, private_key_path=private)
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    assert verify(token, settings).sub == "carol"


# --- settings --------------------------------------------------------------------------


def test_dev_secret_created_private_and_reused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = load_settings({}, state, dev=True)
    path = state / "jwt-secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert first.secret is not None and len(first.secret) >= 32
    assert first.algorithms == ("HS256",)
    assert list(state.iterdir()) == [path]  # no temporary file left behind
    again = load_settings({}, state, dev=True)
    assert again.secret == first.secret
    # a later non-dev start does not: the development secret is a key only with --dev
    with pytest.raises(AuthConfigError, match="used only with --dev"):
        load_settings({}, state, dev=False)
    # token issue reads it (dev) without ever creating one
    minting = load_settings({}, state, dev=True, create=False)
    token = issue(minting, "alice", ["user"], 60)
    assert verify(token, again).sub == "alice"
    with pytest.raises(AuthConfigError, match="no JWT key"):
        load_settings({}, tmp_path / "elsewhere", dev=True, create=False)
    assert not (tmp_path / "elsewhere").exists()


def test_no_key_outside_dev_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(AuthConfigError, match="SCONNECT_JWT_SECRET") as info:
        load_settings({}, tmp_path, dev=False)
    assert "--dev" in str(info.value)
    assert not (tmp_path / "jwt-secret").exists()


def test_short_secret_refused(tmp_path: Path) -> None:
    with pytest.raises(AuthConfigError, match="at least 32"):
        load_settings({"SCONNECT_JWT_SECRET": "short"}, tmp_path, dev=False)
    secret_file = tmp_path / "secret"
    secret_file.write_text("tiny\n")
    with pytest.raises(AuthConfigError, match="at least 32"):
        load_settings({"SCONNECT_JWT_SECRET_FILE": str(secret_file)}, tmp_path, dev=True)
    with pytest.raises(AuthConfigError, match="at least 32"):
        AuthSettings(secret=b"x" * 31)


def test_state_secret_readable_by_others_refused(tmp_path: Path) -> None:
    path = tmp_path / "jwt-secret"
    path.write_text("a" * 64)
    os.chmod(path, 0o644)
    with pytest.raises(AuthConfigError, match="chmod 600"):
        load_settings({}, tmp_path, dev=True)


def test_environment_settings(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_bytes(SECRET + b"\n")
    settings = load_settings(
        {
            "SCONNECT_JWT_SECRET_FILE": str(secret_file),
            "SCONNECT_JWT_ALGORITHMS": "HS256, HS512",
            "SCONNECT_JWT_AUDIENCE": "sconnect",
            "SCONNECT_JWT_ISSUER": "idp",
            "SCONNECT_JWT_ROLES_CLAIM": "groups",
        },
        tmp_path / "state",
        dev=True,
    )
    assert settings.secret == SECRET
    assert settings.algorithms == ("HS256", "HS512")
    assert settings.audience == "sconnect"
    assert settings.issuer == "idp"
    assert settings.roles_claim == "groups"
    assert not (tmp_path / "state").exists()  # a configured key means no dev secret
    assert "0123456789" not in repr(settings)


@pytest.mark.parametrize(
    ("environ", "match"),
    [
        ({"SCONNECT_JWT_SECRET": SECRET.decode(), "SCONNECT_JWT_ALGORITHMS": "HS256,none"}, "none"),
        ({"SCONNECT_JWT_SECRET": SECRET.decode(), "SCONNECT_JWT_ALGORITHMS": "RS256"},
         "public key"),
        ({"SCONNECT_JWT_SECRET": SECRET.decode(), "SCONNECT_JWT_SECRET_FILE": "/x"}, "only one"),
        ({"SCONNECT_JWT_PUBLIC_KEY_FILE": "/nonexistent.pem"}, "nonexistent"),
    ],
)
def test_bad_environment(tmp_path: Path, environ: dict[str, str], match: str) -> None:
    with pytest.raises(AuthConfigError, match=match):
        load_settings(environ, tmp_path, dev=False)


def test_jwks_with_symmetric_key_refused(tmp_path: Path) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}))
    with pytest.raises(AuthConfigError, match="SCONNECT_JWT_SECRET"):
        load_settings({"SCONNECT_JWKS_FILE": str(jwks)}, tmp_path, dev=False)
