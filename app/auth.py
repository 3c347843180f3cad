"""Who is calling: bearer JWTs (HS256 with a shared secret, or RS256 keys from a JWKS URL)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

from app.config import Settings

LEEWAY_SECONDS = 30  # clock skew between the app server that mints tokens and us


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

    def principal(self, authorization: str | None) -> Principal:
        """The caller behind an `Authorization: Bearer <jwt>` header; raises `AuthError` otherwise."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise AuthError("missing bearer token")
        try:
            claims = jwt.decode(
                token.strip(),
                **self._key_for(token.strip()),
                options={"require": ["exp", "sub"]},
                leeway=LEEWAY_SECONDS,
            )
        except jwt.PyJWTError as error:
            raise AuthError(f"invalid token: {error}") from None
        try:
            user_id = str(uuid.UUID(str(claims["sub"])))
        except ValueError:
            raise AuthError("token subject is not a user id") from None
        roles = claims.get("roles") or []
        if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
            raise AuthError("token roles must be a list of strings")
        return Principal(user_id, frozenset(roles))

    def _key_for(self, token: str) -> dict[str, object]:
        if self._jwks is not None:
            return {"key": self._jwks.get_signing_key_from_jwt(token).key, "algorithms": ["RS256"]}
        if not self._secret:
            raise AuthError("token verification is not configured")
        return {"key": self._secret, "algorithms": ["HS256"]}


def mint_token(
    secret: str, user_id: str, roles: list[str] | None = None, ttl: timedelta | None = None
) -> str:
    """An HS256 token as the app server would mint it (dev and tests)."""
    now = datetime.now(UTC)
    claims: dict[str, object] = {"sub": user_id, "iat": now, "exp": now + (ttl or timedelta(hours=12))}
    if roles:
        claims["roles"] = roles
    return jwt.encode(claims, secret, algorithm="HS256")
