"""Verified tokens are remembered by their exact string, and expire all the same."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import jwt
import pytest

from app import auth
from app.auth import AuthError, TokenVerifier, mint_token
from app.config import Settings

SECRET = "token-cache-secret-of-32-bytes!!"


def verifier() -> TokenVerifier:
    return TokenVerifier(Settings(jwt_secret=SECRET))


def test_a_remembered_token_is_not_decoded_again(monkeypatch) -> None:
    tokens, user = verifier(), str(uuid.uuid4())
    token = mint_token(SECRET, user, roles=["staff"])
    first = tokens.principal(f"Bearer {token}")
    monkeypatch.setattr(jwt, "decode", lambda *a, **k: pytest.fail("decoded again"))
    assert tokens.principal(f"Bearer {token}") == first
    assert first.user_id == user and first.roles == frozenset({"staff"})


def test_a_remembered_token_stops_working_when_it_expires(monkeypatch) -> None:
    monkeypatch.setattr(auth, "LEEWAY_SECONDS", 0)
    tokens = verifier()
    token = mint_token(SECRET, str(uuid.uuid4()), ttl=timedelta(seconds=1))
    tokens.principal(f"Bearer {token}")
    time.sleep(1.1)
    with pytest.raises(AuthError, match="expired"):
        tokens.principal(f"Bearer {token}")


def test_a_remembered_token_is_verified_again_after_a_while(monkeypatch) -> None:
    """A key taken out of the configuration (here: the secret changed) stops a remembered token in time."""
    monkeypatch.setattr(auth, "VERIFIED_CACHE_SECONDS", 0.0)  # "a while" is over at once
    tokens, token = verifier(), mint_token(SECRET, str(uuid.uuid4()))
    tokens.principal(f"Bearer {token}")
    monkeypatch.setattr(tokens, "_secret", "another-secret-of-32-bytes-long!")
    with pytest.raises(AuthError, match="invalid token"):
        tokens.principal(f"Bearer {token}")


def test_a_forged_signature_is_never_taken_from_memory() -> None:
    tokens, token = verifier(), mint_token(SECRET, str(uuid.uuid4()))
    tokens.principal(f"Bearer {token}")
    head, payload, _signature = token.split(".")
    with pytest.raises(AuthError):
        tokens.principal(f"Bearer {head}.{payload}.{'A' * 43}")
