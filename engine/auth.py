"""JWT authentication at the WebSocket handshake: settings, verification, minting.

The server takes the token from the handshake request (:func:`token_from_request`),
verifies it (:func:`verify`) and gets a :class:`Principal` (subject, roles, expiry) or an
:class:`AuthError` whose ``reason`` it records and answers with HTTP 401. Settings come
from the environment and the state directory (:func:`load_settings`); ``sconnect token
issue`` mints tokens with :func:`issue`.

Security rules enforced here (see ENGINE-NOTES.md, "PyJWT"):

- The algorithm allowlist is explicit and never contains ``none``. The token header's
  ``alg`` must be in it, and the key is chosen by that algorithm's family: an HS token is
  checked only against the HS secret, an RS/PS/ES/EdDSA token only against public keys of
  its family. An HS token presented where only public keys are configured is refused as
  ``bad_algorithm`` (no HS/RS confusion: a public key is never used as an HMAC secret).
- ``exp`` and ``sub`` are required; ``sub`` and every role must be free of control
  characters and of surrounding whitespace (``"root-admin "`` would otherwise be another
  subject that *looks* like ``root-admin``, and an ANSI sequence in a subject would forge
  lines wherever it is shown); ``nbf``/``iat`` are checked when present; ``aud`` and
  ``iss`` are checked when configured. A token that names an audience is refused when no
  audience is configured (RFC 7519 §4.1.3: a recipient that does not identify itself with
  the audience must reject it) — it was minted for some other service.
- HS secrets are at least 32 bytes (RFC 7518 §3.2).
- The ``jwt-secret`` that ``serve --dev`` leaves in the state directory is a key only
  with ``dev=True``: a production start never picks it up beside an identity
  provider's keys. :meth:`AuthSettings.describe` names every key source and algorithm
  in force; :func:`load_settings` logs it (one line) and warns about an ignored
  ``jwt-secret``.
- Every PyJWT failure is caught as ``PyJWTError`` (not only ``InvalidTokenError``:
  ``InvalidKeyError`` is not one) and mapped to a reason; messages never contain the
  token, the secret or key material.

Exceptions::

    AuthError(Exception)          a token refused: reason (AuthReason), message
    AuthConfigError(ValueError)   the settings cannot work: what to set, and where

RS/PS/ES/EdDSA keys need the ``cryptography`` package; it is imported only when such a
key is loaded or used.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import secrets
import stat
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs
import jwt
from jwt import exceptions as jwt_exc

from .errors import ScalyticsError
from .printable import has_control

__all__ = [
    "AuthConfigError",
    "AuthError",
    "AuthReason",
    "AuthSettings",
    "Principal",
    "VerificationKey",
    "issue",
    "key_configured",
    "load_settings",
    "name_problem",
    "token_from_request",
    "verify",
]

log = logging.getLogger(__name__)

MIN_SECRET_BYTES = 32
MAX_TOKEN_CHARS = 16 * 1024  # far above any sane JWT; bounds the work a stranger can cause
DEV_SECRET_FILE = "jwt-secret"

# Algorithm → key family. "none" is deliberately absent: it can never be allowed.
_FAMILY: dict[str, str] = {
    "HS256": "HMAC", "HS384": "HMAC", "HS512": "HMAC",
    "RS256": "RSA", "RS384": "RSA", "RS512": "RSA",
    "PS256": "RSA", "PS384": "RSA", "PS512": "RSA",
    "ES256": "EC", "ES256K": "EC", "ES384": "EC", "ES512": "EC", "ES521": "EC",
    "EdDSA": "OKP",
}
# An EC algorithm fixes the curve; a key on another curve must not be tried.
_EC_CURVE = {"ES256": "secp256r1", "ES256K": "secp256k1", "ES384": "secp384r1",
             "ES512": "secp521r1", "ES521": "secp521r1"}
_CURVE_DEFAULT_ALG = {"secp256r1": "ES256", "secp256k1": "ES256K", "secp384r1": "ES384",
                      "secp521r1": "ES512"}


class AuthReason(enum.StrEnum):
    """Why a token was refused (recorded in the audit log, sent in the 401 body)."""

    MISSING = "missing"  # no token in the request
    MALFORMED = "malformed"  # not a decodable JWT (or absurdly long)
    EXPIRED = "expired"  # exp in the past (beyond leeway)
    NOT_YET_VALID = "not_yet_valid"  # nbf or iat in the future
    BAD_SIGNATURE = "bad_signature"  # no configured key verifies it
    BAD_ALGORITHM = "bad_algorithm"  # alg not allowed (incl. none), or no key of its family
    BAD_AUDIENCE = "bad_audience"  # aud does not name us, or names someone while we have none
    BAD_ISSUER = "bad_issuer"  # iss is not the configured issuer
    MISSING_CLAIM = "missing_claim"  # exp, sub, or configured aud/iss absent
    BAD_CLAIMS = "bad_claims"  # sub not a non-empty string, roles not a list of strings, ...


class AuthError(ScalyticsError):
    """A token was refused. ``message`` is safe to show to the client: it never contains
    the token, the secret or key material."""

    def __init__(self, reason: AuthReason, message: str) -> None:
        super().__init__(reason, message)
        self.reason = AuthReason(reason)
        self.message = message

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


class AuthConfigError(ScalyticsError, ValueError):
    """The authentication settings are unusable; the message says what to set."""


@attrs.frozen(kw_only=True)
class VerificationKey:
    """One public key for RS/PS/ES/EdDSA tokens.

    ``family`` is RSA, EC or OKP; ``alg`` pins the key to one algorithm when its JWK said
    so; ``kid`` selects it when the token header names one; ``source`` (file path) is for
    messages only.
    """

    family: str
    key: Any = attrs.field(eq=False, repr=False)  # a cryptography public key object
    kid: str | None = None
    alg: str | None = None
    source: str = ""

    def accepts(self, alg: str) -> bool:
        if _FAMILY.get(alg) != self.family or (self.alg is not None and self.alg != alg):
            return False
        if self.family == "EC":
            return bool(self.key.curve.name == _EC_CURVE[alg])
        return True


def _check_algorithms(_inst: Any, _attr: Any, value: tuple[str, ...]) -> None:
    if not value:
        raise AuthConfigError("the JWT algorithm allowlist is empty")
    unknown = [a for a in value if a not in _FAMILY]
    if unknown:
        raise AuthConfigError(
            f"unsupported JWT algorithm(s) {', '.join(map(repr, unknown))}; "
            f"choose from {', '.join(_FAMILY)} ('none' is never accepted)"
        )


def _check_secret(_inst: Any, _attr: Any, value: bytes | None) -> None:
    if value is not None and len(value) < MIN_SECRET_BYTES:
        raise AuthConfigError(
            f"the HS256 secret is {len(value)} bytes; it must be at least {MIN_SECRET_BYTES} "
            "(generate one with: python -c 'import secrets; print(secrets.token_hex(32))')"
        )


@attrs.frozen(kw_only=True)
class AuthSettings:
    """How tokens are verified. ``secret`` is the HMAC key for HS*; ``public_keys`` serve
    RS*/PS*/ES*/EdDSA. ``audience``/``issuer`` are checked when set. ``roles_claim`` names
    the claim holding the list of roles (a top-level claim name, which may contain dots
    or slashes as namespaced claims do; if absent, a dotted path such as
    ``realm_access.roles`` is followed)."""

    algorithms: tuple[str, ...] = attrs.field(default=("HS256",), validator=_check_algorithms)
    secret: bytes | None = attrs.field(default=None, repr=False, validator=_check_secret)
    public_keys: tuple[VerificationKey, ...] = ()
    audience: str | None = None
    issuer: str | None = None
    roles_claim: str = "roles"
    leeway_s: float = 0.0
    #: Where ``secret`` came from (an environment variable, a file), for :meth:`describe`.
    secret_source: str = attrs.field(default="", eq=False)

    def describe(self) -> str:
        """One line: every key source with its algorithms, for the start-up log. Never
        key material."""
        parts = []
        if self.secret is not None:
            hs = [a for a in self.algorithms if _FAMILY[a] == "HMAC"]
            parts.append(f"{'/'.join(hs) or 'no HS algorithm'} with the secret from {self.secret_source or 'settings'}")
        for key in self.public_keys:
            algs = [a for a in self.algorithms if key.accepts(a)]
            parts.append(f"{'/'.join(algs) or 'no algorithm'} with the {key.family} key from {key.source or 'settings'}"
                         + (f" (kid {key.kid})" if key.kid else ""))
        checks = [f"{name} {value!r}" for name, value in (("audience", self.audience), ("issuer", self.issuer))
                  if value is not None]
        return (f"JWT keys: {'; '.join(parts) or 'none'}; algorithms accepted: {', '.join(self.algorithms)}"
                + (f"; {', '.join(checks)} required" if checks else ""))


@attrs.frozen(kw_only=True)
class Principal:
    """Who is connected: the token's subject, its roles, when it expires (epoch seconds)
    and every verified claim (read-only)."""

    sub: str
    roles: frozenset[str]
    expires_at: float
    claims: Mapping[str, Any] = attrs.field(eq=False, hash=False, repr=False)


# --- verification ----------------------------------------------------------------------

# Order matters: InvalidSignatureError is a DecodeError, ExpiredSignatureError an
# InvalidTokenError; the first match wins.
_JWT_ERRORS: tuple[tuple[type[Exception], AuthReason, str], ...] = (
    (jwt_exc.ExpiredSignatureError, AuthReason.EXPIRED, "the token has expired"),
    (jwt_exc.ImmatureSignatureError, AuthReason.NOT_YET_VALID, "the token is not valid yet"),
    (jwt_exc.InvalidSignatureError, AuthReason.BAD_SIGNATURE, "the token signature is invalid"),
    (jwt_exc.InvalidAlgorithmError, AuthReason.BAD_ALGORITHM,
     "the token algorithm is not accepted"),
    (jwt_exc.InvalidKeyError, AuthReason.BAD_ALGORITHM,
     "the token algorithm does not fit the configured key"),
    (jwt_exc.InvalidAudienceError, AuthReason.BAD_AUDIENCE,
     "the token is meant for another audience"),
    (jwt_exc.InvalidIssuerError, AuthReason.BAD_ISSUER, "the token issuer is not accepted"),
    (jwt_exc.MissingRequiredClaimError, AuthReason.MISSING_CLAIM,
     "the token lacks a required claim"),
    (jwt_exc.InvalidIssuedAtError, AuthReason.BAD_CLAIMS, "the token's iat claim is invalid"),
    (jwt_exc.InvalidSubjectError, AuthReason.BAD_CLAIMS, "the token's sub claim is invalid"),
    (jwt_exc.InvalidJTIError, AuthReason.BAD_CLAIMS, "the token's jti claim is invalid"),
    (jwt_exc.DecodeError, AuthReason.MALFORMED, "the token is not a well-formed JWT"),
    (jwt_exc.PyJWTError, AuthReason.MALFORMED, "the token could not be verified"),
)


def _translate(exc: jwt_exc.PyJWTError) -> AuthError:
    for cls, reason, message in _JWT_ERRORS:
        if isinstance(exc, cls):
            if isinstance(exc, jwt_exc.MissingRequiredClaimError):
                message = f"the token lacks the required claim {exc.claim!r}"
            return AuthError(reason, message)
    raise AssertionError("unreachable: PyJWTError is the last entry")  # pragma: no cover


def _keys_for(alg: str, header: Mapping[str, Any], settings: AuthSettings) -> list[Any]:
    family = _FAMILY[alg]
    if family == "HMAC":
        if settings.secret is None:
            raise AuthError(AuthReason.BAD_ALGORITHM,
                            "HMAC-signed tokens are not accepted by this server")
        return [settings.secret]
    keys = [k for k in settings.public_keys if k.accepts(alg)]
    if not keys:
        raise AuthError(AuthReason.BAD_ALGORITHM,
                        "no key for the token's algorithm is configured")
    kid = header.get("kid")
    if isinstance(kid, str) and any(k.kid is not None for k in keys):
        keys = [k for k in keys if k.kid == kid]
        if not keys:
            raise AuthError(AuthReason.BAD_SIGNATURE, "the token names an unknown key id")
    return [k.key for k in keys]


def _roles(claims: Mapping[str, Any], claim: str) -> frozenset[str]:
    value: Any = claims.get(claim)
    if value is None and claim not in claims and "." in claim:
        value = claims
        for part in claim.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
    if value is None:
        return frozenset()  # no roles: the policy's default deny applies
    if not isinstance(value, list) or not all(isinstance(r, str) for r in value):
        raise AuthError(AuthReason.BAD_CLAIMS, f"the {claim!r} claim must be a list of strings")
    for role in value:
        problem = name_problem(role)
        if problem:
            raise AuthError(AuthReason.BAD_CLAIMS, f"a role in the {claim!r} claim {problem}")
    return frozenset(value)


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a subject or a role, or None: it must be non-empty, without
    surrounding whitespace (``"root-admin "`` is not ``root-admin``, but looks like it)
    and without control or format characters (escape sequences forge terminal lines)."""
    if not name.strip():
        return "is empty"
    if name != name.strip():
        return "has surrounding whitespace (it would name someone other than it appears to)"
    if has_control(name):
        return "contains control characters"
    return None


def verify(token: str | None, settings: AuthSettings) -> Principal:
    """Verify ``token`` and return who it names.

    Raises :class:`AuthError` for every refused token (never a PyJWT exception).
    """
    if not token:
        raise AuthError(AuthReason.MISSING, "no token was presented")
    if len(token) > MAX_TOKEN_CHARS:
        raise AuthError(AuthReason.MALFORMED, "the token is too long")
    try:
        header = jwt.get_unverified_header(token)
    except jwt_exc.PyJWTError as exc:
        raise _translate(exc) from None
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in settings.algorithms or alg not in _FAMILY:
        raise AuthError(
            AuthReason.BAD_ALGORITHM,
            f"the token algorithm is not accepted (accepted: {', '.join(settings.algorithms)})",
        )
    options: dict[str, Any] = {
        "require": ["exp", "sub"],
        "verify_aud": settings.audience is not None,
    }
    claims: dict[str, Any] | None = None
    failure: AuthError | None = None
    for key in _keys_for(alg, header, settings):
        try:
            claims = jwt.decode(
                token, key, algorithms=[alg], options=options,  # type: ignore[arg-type]
                audience=settings.audience, issuer=settings.issuer, leeway=settings.leeway_s,
            )
            break
        except jwt_exc.InvalidSignatureError as exc:
            failure = _translate(exc)  # try the next key of this family
        except jwt_exc.PyJWTError as exc:
            raise _translate(exc) from None
    if claims is None:
        assert failure is not None
        raise failure
    if settings.audience is None and "aud" in claims:
        raise AuthError(
            AuthReason.BAD_AUDIENCE,
            "the token names an audience but this server has none configured "
            "(set SCONNECT_JWT_AUDIENCE)",
        )
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub.strip():
        raise AuthError(AuthReason.BAD_CLAIMS, "the token's sub claim must be a non-empty string")
    problem = name_problem(sub)
    if problem:
        raise AuthError(AuthReason.BAD_CLAIMS, f"the token's sub claim {problem}")
    return Principal(
        sub=sub,
        roles=_roles(claims, settings.roles_claim),
        expires_at=float(claims["exp"]),
        claims=MappingProxyType(claims),
    )


def token_from_request(path: str, headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The token of a handshake request: ``Authorization: Bearer <jwt>`` (scheme and
    header name case-insensitive), else the ``token`` query parameter. None if neither.
    """
    for name, value in headers:
        if name.lower() != b"authorization":
            continue
        scheme, _, rest = value.decode("latin-1").strip().partition(" ")
        if scheme.lower() == "bearer" and rest.strip():
            return rest.strip()
    query = urlsplit(path).query
    if query:
        values = parse_qs(query).get("token")
        if values and values[0]:
            return values[0]
    return None


# --- minting ---------------------------------------------------------------------------


def issue(
    settings: AuthSettings,
    sub: str,
    roles: Iterable[str],
    ttl_s: float,
    *,
    now: float | None = None,
    private_key_path: Path | None = None,
    algorithm: str | None = None,
) -> str:
    """Mint a token this server will accept: ``sub``, roles (under the configured
    roles claim), ``iat``, ``exp = now + ttl_s``, a random ``jti``, and ``aud``/``iss``
    when configured.

    With an HS secret configured it signs with the first HS algorithm of the allowlist.
    A server configured only with public keys cannot mint: pass ``private_key_path`` (PEM)
    of the matching private key. Raises :class:`AuthConfigError` when no usable key or
    algorithm is available, ``ValueError`` for a bad ``sub`` or ``ttl_s``.
    """
    roles = list(roles)
    if not sub or not isinstance(sub, str):
        raise ValueError("sub must be a non-empty string")
    for name, what in [(sub, "sub"), *((role, f"role {role!r}") for role in roles)]:
        problem = name_problem(name)
        if problem:
            raise ValueError(f"{what} {problem}: the server would refuse the token")
    if not ttl_s > 0:
        raise ValueError("ttl_s must be positive")
    issued = time.time() if now is None else now
    key: Any
    if private_key_path is not None:
        key, family = _load_private_key(private_key_path)
    elif settings.secret is not None:
        key, family = settings.secret, "HMAC"
    else:
        raise AuthConfigError(
            "this configuration verifies RS/ES tokens with public keys only; minting a token "
            "needs the matching private key (pass its PEM file as the private key), or "
            "configure an HS256 secret with SCONNECT_JWT_SECRET"
        )
    candidates = [a for a in settings.algorithms if _FAMILY[a] == family]
    if algorithm is not None:
        if algorithm not in candidates:
            raise AuthConfigError(
                f"algorithm {algorithm!r} is not in the allowlist for a {family} key "
                f"(allowlist: {', '.join(settings.algorithms)})"
            )
        candidates = [algorithm]
    if family == "EC":
        candidates = [a for a in candidates if _EC_CURVE[a] == key.curve.name]
    if not candidates:
        raise AuthConfigError(
            f"no algorithm in the allowlist ({', '.join(settings.algorithms)}) "
            f"fits a {family} key"
        )
    claims: dict[str, Any] = {
        "sub": sub,
        settings.roles_claim: sorted(set(roles)),
        "iat": int(issued),
        "exp": int(issued + ttl_s),
        "jti": uuid.uuid4().hex,
    }
    if settings.audience is not None:
        claims["aud"] = settings.audience
    if settings.issuer is not None:
        claims["iss"] = settings.issuer
    return jwt.encode(claims, key, algorithm=candidates[0])


# --- settings --------------------------------------------------------------------------


def _need_cryptography(what: str) -> None:
    try:
        import cryptography  # noqa: F401
    except ImportError:
        raise AuthConfigError(
            f"{what} needs the 'cryptography' package: pip install cryptography"
        ) from None


def _family_of(key: Any) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

    if isinstance(key, (rsa.RSAPublicKey, rsa.RSAPrivateKey)):
        return "RSA"
    if isinstance(key, (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey)):
        return "EC"
    if isinstance(key, (ed25519.Ed25519PublicKey, ed25519.Ed25519PrivateKey,
                        ed448.Ed448PublicKey, ed448.Ed448PrivateKey)):
        return "OKP"
    raise AuthConfigError(f"unsupported key type {type(key).__name__}")


def _default_alg(key: VerificationKey) -> str:
    if key.alg is not None:
        return key.alg
    if key.family == "RSA":
        return "RS256"
    if key.family == "EC":
        return _CURVE_DEFAULT_ALG[key.key.curve.name]
    return "EdDSA"


def _load_private_key(path: Path) -> tuple[Any, str]:
    _need_cryptography("signing with a private key")
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise AuthConfigError(
            f"{path}: cannot load a PEM private key ({type(exc).__name__})"
        ) from None
    return key, _family_of(key)


def _load_public_key_file(path: Path) -> VerificationKey:
    _need_cryptography(f"the public key {path}")
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    key: Any
    try:
        data = path.read_bytes()
        if b"-----BEGIN CERTIFICATE-----" in data:
            key = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except OSError as exc:
        raise AuthConfigError(f"{path}: cannot read the public key: {exc.strerror}") from None
    except (ValueError, TypeError):
        raise AuthConfigError(
            f"{path}: not a PEM public key or certificate (expected '-----BEGIN PUBLIC KEY-----')"
        ) from None
    return VerificationKey(family=_family_of(key), key=key, source=str(path))


def _load_jwks_file(path: Path) -> tuple[VerificationKey, ...]:
    try:
        document = json.loads(path.read_text("utf-8"))
    except OSError as exc:
        raise AuthConfigError(f"{path}: cannot read the JWKS file: {exc.strerror}") from None
    except ValueError as exc:
        raise AuthConfigError(f"{path}: the JWKS file is not JSON ({exc})") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise AuthConfigError(f'{path}: a JWKS file is an object with a non-empty "keys" list')
    keys: list[VerificationKey] = []
    for index, entry in enumerate(entries):
        where = f"{path}: keys[{index}]"
        if not isinstance(entry, dict):
            raise AuthConfigError(f"{where}: must be an object")
        if entry.get("use") == "enc":
            continue  # encryption keys never verify signatures
        if entry.get("kty") == "oct":
            raise AuthConfigError(
                f"{where}: symmetric ('oct') keys do not belong in a JWKS file; "
                "set SCONNECT_JWT_SECRET or SCONNECT_JWT_SECRET_FILE instead"
            )
        alg = entry.get("alg")
        if alg is not None and alg not in _FAMILY:
            raise AuthConfigError(f"{where}: unsupported alg {alg!r}")
        _need_cryptography(f"the JWKS file {path}")
        try:
            jwk = jwt.PyJWK(entry)
        except jwt_exc.PyJWTError as exc:
            raise AuthConfigError(f"{where}: not a usable key ({type(exc).__name__})") from None
        key = jwk.key
        if hasattr(key, "private_bytes"):
            key = key.public_key()  # a private JWK published by mistake: use only its public half
        kid = entry.get("kid")
        keys.append(VerificationKey(family=_family_of(key), key=key,
                                    kid=kid if isinstance(kid, str) else None, alg=alg,
                                    source=where))
    if not keys:
        raise AuthConfigError(f"{path}: no signature keys (all were 'use': 'enc')")
    return tuple(keys)


def _read_secret_file(path: Path, *, private: bool) -> bytes:
    try:
        if private:
            mode = path.stat().st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise AuthConfigError(
                    f"{path}: the JWT secret is readable by other users "
                    f"(mode {stat.S_IMODE(mode):04o}); run: chmod 600 {path}"
                )
        secret = path.read_bytes().strip()
    except OSError as exc:
        raise AuthConfigError(f"{path}: cannot read the JWT secret: {exc.strerror}") from None
    if len(secret) < MIN_SECRET_BYTES:
        raise AuthConfigError(
            f"{path}: the JWT secret is {len(secret)} bytes; it must be at least "
            f"{MIN_SECRET_BYTES}"
        )
    return secret


def _create_dev_secret(state_dir: Path) -> bytes:
    """Create ``<state_dir>/jwt-secret`` (mode 0600) or read the one a concurrent starter
    created first. The file appears complete or not at all: the secret is written to a
    private temporary file (O_CREAT|O_EXCL, 0600) which is then hard-linked into place;
    link() fails if the name exists, so two starters cannot both win."""
    try:
        state_dir.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        pass  # an existing directory keeps its mode: it may be the operator's choice
    target = state_dir / DEV_SECRET_FILE
    secret = secrets.token_hex(32).encode("ascii")  # 32 random bytes as 64 hex characters
    tmp = state_dir / f".{DEV_SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the umask may have removed bits; never added any
        os.write(fd, secret + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, target)
    except FileExistsError:
        return _read_secret_file(target, private=True)
    finally:
        tmp.unlink()
    return secret


def _env(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name, "").strip()
    return value or None


def key_configured(environ: Mapping[str, str]) -> bool:
    """Whether the environment names any JWT key (then the dev secret is not for it)."""
    return any(_env(environ, name) for name in (
        "SCONNECT_JWT_SECRET", "SCONNECT_JWT_SECRET_FILE", "SCONNECT_JWT_PUBLIC_KEY_FILE", "SCONNECT_JWKS_FILE"))


def load_settings(environ: Mapping[str, str], state_dir: Path, *, dev: bool,
                  create: bool | None = None) -> AuthSettings:
    """Build :class:`AuthSettings` from the environment and the state directory.

    Variables: ``SCONNECT_JWT_SECRET`` (HS secret, UTF-8, ≥ 32 bytes),
    ``SCONNECT_JWT_SECRET_FILE`` (file holding it; surrounding whitespace is stripped),
    ``SCONNECT_JWT_PUBLIC_KEY_FILE`` (PEM public key or certificate),
    ``SCONNECT_JWKS_FILE`` (JWKS document), ``SCONNECT_JWT_ALGORITHMS`` (comma list;
    default: HS256 with a secret plus the natural algorithm of each public key),
    ``SCONNECT_JWT_AUDIENCE``, ``SCONNECT_JWT_ISSUER``, ``SCONNECT_JWT_ROLES_CLAIM``.

    ``<state_dir>/jwt-secret`` is a key only with ``dev=True`` (``serve --dev``, or
    ``token issue`` for such a server), and only when no secret is configured: then it is
    read (it must not be readable by group or others) or, with ``create`` (default:
    ``dev``) and no key at all, created. Without ``dev`` it is ignored, with a warning
    when it exists: a file the development mode left behind must never add HS256 beside
    an identity provider's keys. Logs :meth:`AuthSettings.describe` (INFO). Raises
    :class:`AuthConfigError` naming what to set when no key is configured (outside dev
    mode) or any setting is unusable.
    """
    state_dir = Path(state_dir)
    secret_env = _env(environ, "SCONNECT_JWT_SECRET")
    secret_file = _env(environ, "SCONNECT_JWT_SECRET_FILE")
    if secret_env and secret_file:
        raise AuthConfigError("set only one of SCONNECT_JWT_SECRET and SCONNECT_JWT_SECRET_FILE")
    secret: bytes | None = None
    source = ""
    dev_file = state_dir / DEV_SECRET_FILE
    if secret_env:
        secret, source = secret_env.encode("utf-8"), "SCONNECT_JWT_SECRET"
        if len(secret) < MIN_SECRET_BYTES:
            raise AuthConfigError(
                f"SCONNECT_JWT_SECRET is {len(secret)} bytes; it must be at least "
                f"{MIN_SECRET_BYTES} (generate one with: "
                "python -c 'import secrets; print(secrets.token_hex(32))')"
            )
    elif secret_file:
        secret, source = _read_secret_file(Path(secret_file), private=False), f"SCONNECT_JWT_SECRET_FILE {secret_file}"
    elif dev and dev_file.exists():
        secret, source = _read_secret_file(dev_file, private=True), f"{dev_file} (--dev)"
    if not dev and dev_file.exists():
        log.warning("ignoring %s: it is the development secret `serve --dev` created, and is a key only with "
                    "--dev (delete it if this server is not for development)", dev_file)

    public_keys: list[VerificationKey] = []
    if key_file := _env(environ, "SCONNECT_JWT_PUBLIC_KEY_FILE"):
        public_keys.append(_load_public_key_file(Path(key_file)))
    if jwks_file := _env(environ, "SCONNECT_JWKS_FILE"):
        public_keys.extend(_load_jwks_file(Path(jwks_file)))

    if secret is None and not public_keys:
        if not (dev and (create if create is not None else dev)):
            raise AuthConfigError(
                f"no JWT key is configured (the development secret {dev_file} is used only with --dev): "
                "set SCONNECT_JWT_SECRET (an HS256 "
                f"secret of at least {MIN_SECRET_BYTES} bytes, e.g. from "
                "python -c 'import secrets; print(secrets.token_hex(32))'), "
                "SCONNECT_JWT_SECRET_FILE, SCONNECT_JWT_PUBLIC_KEY_FILE or SCONNECT_JWKS_FILE; "
                "or start the server once with `sconnect serve --dev`, which creates that secret "
                "(`sconnect token issue` uses it with the server's --state-dir)"
            )
        secret, source = _create_dev_secret(state_dir), f"{dev_file} (--dev, created now)"

    if algs_env := _env(environ, "SCONNECT_JWT_ALGORITHMS"):
        algorithms = tuple(dict.fromkeys(a.strip() for a in algs_env.split(",") if a.strip()))
        for alg in algorithms:
            family = _FAMILY.get(alg)
            if family is None:
                continue  # AuthSettings names every unsupported algorithm at once
            if family == "HMAC" and secret is None:
                raise AuthConfigError(
                    f"SCONNECT_JWT_ALGORITHMS allows {alg} but no HS secret is configured "
                    "(set SCONNECT_JWT_SECRET)"
                )
            if family != "HMAC" and not any(k.accepts(alg) for k in public_keys):
                raise AuthConfigError(
                    f"SCONNECT_JWT_ALGORITHMS allows {alg} but no configured public key "
                    "fits it (set SCONNECT_JWT_PUBLIC_KEY_FILE or SCONNECT_JWKS_FILE)"
                )
    else:
        derived = (["HS256"] if secret is not None else []) + [_default_alg(k) for k in public_keys]
        algorithms = tuple(dict.fromkeys(derived))

    settings = AuthSettings(
        algorithms=algorithms,
        secret=secret,
        public_keys=tuple(public_keys),
        audience=_env(environ, "SCONNECT_JWT_AUDIENCE"),
        issuer=_env(environ, "SCONNECT_JWT_ISSUER"),
        roles_claim=_env(environ, "SCONNECT_JWT_ROLES_CLAIM") or "roles",
        secret_source=source,
    )
    log.info("%s", settings.describe())
    return settings
