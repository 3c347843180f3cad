"""Who is calling: bearer JWTs (HS256 with a shared secret, or RS256 keys from a JWKS URL)."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

from app.config import Settings

LEEWAY_SECONDS = 30  # clock skew between the app server that mints tokens and us
MAX_LIFETIME = timedelta(days=30)  # an `exp` further out is a forged or broken token (e.g. exp = 2**70)
# `sub` must be the canonical form (lower-case, dashed): braced, `urn:uuid:` and dash-less spellings are refused,
# not normalised, so one user has exactly one spelling everywhere (keys, grants, logs).
# A token verified once is remembered by its exact string (signature included) for a while: a mobile session
# sends the same token with every request, and verifying it again (base64, JSON, HMAC or RSA, the claim
# checks) is a tenth of a ticket's CPU. `exp` is still checked on every use; a remembered token is verified
# again after VERIFIED_CACHE_SECONDS, so a key taken out of the JWKS stops working within that time.
VERIFIED_CACHE_SIZE = 4096
VERIFIED_CACHE_SECONDS = 300.0
CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class AuthError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Principal:
    user_id: str
    roles: frozenset[str]


class TokenVerifier:
    def __init__(self, settings: Settings) -> None:
        self._secret = settings.jwt_secret
        self._jwks = jwt.PyJWKClient(settings.jwt_jwks_url) if settings.jwt_jwks_url else None
        self._audience = settings.jwt_audience
        self._issuer = settings.jwt_issuer
        # token -> (principal, exp, monotonic time to verify again); a dict's single operations are atomic,
        # so request threads share it without a lock (a race costs one more verification, nothing else).
        self._verified: dict[str, tuple[Principal, float, float]] = {}

    def principal(self, authorization: str | None) -> Principal:
        """The caller behind an `Authorization: Bearer <jwt>` header; raises `AuthError` otherwise."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise AuthError("missing bearer token")
        token = token.strip()
        remembered = self._verified.get(token)
        if remembered is not None:
            principal, exp, verify_again_at = remembered
            if time.time() < exp + LEEWAY_SECONDS and time.monotonic() < verify_again_at:
                return principal
            self._verified.pop(token, None)
        principal, exp = self._verify(token)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.clear()  # simpler than LRU, and a refill costs one verification per token
        self._verified[token] = (principal, exp, time.monotonic() + VERIFIED_CACHE_SECONDS)
        return principal

    def _verify(self, token: str) -> tuple[Principal, float]:
        required = ["exp", "sub"] + (["aud"] if self._audience else []) + (["iss"] if self._issuer else [])
        try:
            claims = jwt.decode(
                token,
                **self._key_for(token),
                options={"require": required},
                audience=self._audience,
                issuer=self._issuer,
                leeway=LEEWAY_SECONDS,
            )
        except (jwt.PyJWTError, OverflowError, ValueError) as error:
            raise AuthError(f"invalid token: {error}") from None
        _check_times(claims)
        user_id = claims["sub"]
        if not isinstance(user_id, str) or not CANONICAL_UUID.fullmatch(user_id):
            raise AuthError("token subject is not a user id (a lower-case, dashed UUID)")
        roles = claims.get("roles") or []
        if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
            raise AuthError("token roles must be a list of strings")
        return Principal(user_id, frozenset(roles)), float(claims["exp"])

    def _key_for(self, token: str) -> dict[str, object]:
        if self._jwks is not None:
            return {"key": self._jwks.get_signing_key_from_jwt(token).key, "algorithms": ["RS256"]}
        if not self._secret:
            raise AuthError("token verification is not configured")
        return {"key": self._secret, "algorithms": ["HS256"]}


def _check_times(claims: dict[str, object]) -> None:
    """PyJWT checks that `exp` has not passed and `iat` is a number; it does not bound either."""
    now = datetime.now(UTC).timestamp()
    exp, iat = claims.get("exp"), claims.get("iat")
    if not isinstance(exp, int | float) or exp > now + MAX_LIFETIME.total_seconds() + LEEWAY_SECONDS:
        raise AuthError("invalid token: exp is too far in the future")
    if iat is not None and (not isinstance(iat, int | float) or iat > now + LEEWAY_SECONDS):
        raise AuthError("invalid token: iat is in the future")


def mint_token(
    secret: str, user_id: str, roles: list[str] | None = None, ttl: timedelta | None = None
) -> str:
    """An HS256 token as the app server would mint it (dev and tests)."""
    now = datetime.now(UTC)
    claims: dict[str, object] = {"sub": user_id, "iat": now, "exp": now + (ttl or timedelta(hours=12))}
    if roles:
        claims["roles"] = roles
    return jwt.encode(claims, secret, algorithm="HS256")
