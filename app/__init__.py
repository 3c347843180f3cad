"""upload-broker: tickets for direct-to-S3 uploads, event intake, and access to promoted media.

`create_app` is imported lazily: worker stages import `app.domain` and must not pay for Flask, boto3 and
SQLAlchemy (about 70 MB of RSS) just because `app` is their parent package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.factory import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from app.factory import create_app

        return create_app
    raise AttributeError(f"module 'app' has no attribute {name!r}")
