"""Secrets of the local stack: random per checkout, kept in ./var so `broker token` can sign for `broker dev`."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path

DEV_SECRETS = Path("var/dev-secrets.json")


@dataclass(frozen=True)
class DevSecrets:
    jwt_secret: str
    webhook_token: str


def dev_secrets(path: Path = DEV_SECRETS) -> DevSecrets:
    if path.exists():
        return DevSecrets(**json.loads(path.read_text()))
    values = DevSecrets(secrets.token_urlsafe(32), secrets.token_urlsafe(32))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(values.__dict__))
    path.chmod(0o600)
    return values
