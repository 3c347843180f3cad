"""`app.post_signer.PostSigner` signs the POST boto3 would sign, field for field, at the same instant."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from app import post_signer as post_signer_module
from app.config import Settings
from app.domain.tickets import post_policy_conditions
from app.storage import Storage

INSTANT = datetime(2026, 3, 14, 23, 59, 58, tzinfo=UTC)


class _FrozenDatetime(datetime):
    @classmethod
    def now(cls, tz=None):  # type: ignore[override]
        return INSTANT if tz else INSTANT.replace(tzinfo=None)


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    naive = INSTANT.replace(tzinfo=None)
    monkeypatch.setattr("botocore.signers.get_current_datetime", lambda *a, **k: naive)
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda *a, **k: naive)
    monkeypatch.setattr(post_signer_module, "datetime", _FrozenDatetime)


@pytest.mark.parametrize("token", [None, "session-token-of-an-instance-role"])
@pytest.mark.parametrize("endpoint", [None, "http://127.0.0.1:9000"])
def test_the_signed_post_is_boto3s(
    frozen: None, monkeypatch: pytest.MonkeyPatch, token: str | None, endpoint: str | None
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    if token:
        monkeypatch.setenv("AWS_SESSION_TOKEN", token)
    else:
        monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    store = Storage(Settings(s3_bucket="fitness-media", s3_region="eu-west-1", s3_endpoint_url=endpoint))
    key = "temp/0b7c6d9e-2f1a-4c3b-9d8e-7f6a5b4c3d2e"
    conditions = post_policy_conditions(store.bucket, key, "image/jpeg", 2_500_000)
    ours = store.presign_post(key, "image/jpeg", conditions, 600)
    theirs = store.presign_post_boto3(key, {"Content-Type": "image/jpeg"}, conditions, 600)
    assert ours == theirs
    assert list(ours["fields"]) == list(theirs["fields"])


def test_the_days_signing_key_follows_the_date_and_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "first-secret")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    store = Storage(Settings(s3_bucket="fitness-media"))
    store.presign_post("temp/a", "image/jpeg", [], 60)
    signer = store._post_signer
    assert signer is not None
    today = signer._key("first-secret", "20260314")
    assert signer._key("first-secret", "20260314") is today
    assert signer._key("first-secret", "20260315") != today
    assert signer._key("second-secret", "20260315") != signer._key("first-secret", "20260315")
