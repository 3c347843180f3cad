"""Request-scoped access to the broker's services and the authenticated caller."""

from __future__ import annotations

from flask import current_app, g, request

from app.api.errors import ApiError
from app.auth import AuthError, Principal
from app.services import Services


def services() -> Services:
    return current_app.extensions["broker"]  # type: ignore[no-any-return]


def current_principal() -> Principal:
    """The authenticated user, or a 401 with a `WWW-Authenticate` challenge."""
    if "principal" not in g:
        try:
            g.principal = services().tokens.principal(request.headers.get("Authorization"))
        except AuthError as error:
            raise ApiError(401, "unauthorized", error.message, {"WWW-Authenticate": "Bearer"}) from None
    return g.principal  # type: ignore[no-any-return]
