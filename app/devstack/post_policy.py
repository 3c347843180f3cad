"""S3 browser-upload (POST policy) rules, as AWS enforces them — pure functions, no I/O.

moto 5.2.5 accepts any form POST; the dev stack's policy gate (``policy_gate.py``) calls :func:`authorize_post`
before an upload reaches moto, so a ticket that would fail on real S3 fails locally too.

Sources (AWS S3 API reference):
- "Authenticating Requests: Browser-Based Uploads Using POST (AWS Signature Version 4)": the signature is
  ``hex(HMAC-SHA256(signing key, <base64 policy as sent>))``; the signing key is derived from the secret key
  and the ``<date>/<region>/<service>/aws4_request`` scope named in ``x-amz-credential``.
- "Creating a POST policy": ``expiration`` ends the policy's validity; conditions are exact matches
  (``{"f": "v"}`` or ``["eq", "$f", "v"]``), ``["starts-with", "$f", prefix]`` (an empty prefix matches
  anything; a comma-separated ``Content-Type`` must match item by item) and
  ``["content-length-range", min, max]`` (inclusive); every form field except ``x-amz-signature``, ``file``,
  ``policy`` and ``x-ignore-*`` must be covered by a condition; form variables (``${filename}``) are
  expanded before the policy is checked.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from xml.sax.saxutils import escape

ALGORITHM = "AWS4-HMAC-SHA256"
# Fields a policy never has to mention (AWS: "except x-amz-signature, file, policy, and field names that
# have an x-ignore- prefix"). Names are compared lower-cased: S3 treats form field names case-insensitively.
UNCOVERED_FIELDS = frozenset({"file", "policy", "x-amz-signature"})
IGNORED_PREFIX = "x-ignore-"
# A single POST cannot store more than 5 GB, whatever the policy allows.
MAX_POST_OBJECT_SIZE = 5 * 1024**3
REQUIRED_FIELDS = ("x-amz-algorithm", "x-amz-credential", "x-amz-signature", "key")


class S3Error(Exception):
    """An S3 error answer: HTTP status, stable AWS error code, message and extra XML elements."""

    def __init__(self, status: int, code: str, message: str, **extra: str | int) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.extra = {name: str(value) for name, value in extra.items()}

    def to_xml(self, request_id: str, host_id: str) -> bytes:
        """The body S3 sends (S3 API reference, "Error responses"): Code, Message, details, ids."""
        elements = {"Code": self.code, "Message": self.message, **self.extra}
        elements |= {"RequestId": request_id, "HostId": host_id}
        inner = "".join(f"<{name}>{escape(value)}</{name}>" for name, value in elements.items())
        return f'<?xml version="1.0" encoding="UTF-8"?>\n<Error>{inner}</Error>'.encode()


def invalid_argument(message: str, name: str, value: str = "") -> S3Error:
    return S3Error(400, "InvalidArgument", message, ArgumentName=name, ArgumentValue=value)


def unknown_access_key(access_key: str) -> S3Error:
    return S3Error(
        403,
        "InvalidAccessKeyId",
        "The AWS Access Key Id you provided does not exist in our records.",
        AWSAccessKeyId=access_key,
    )


def signature_mismatch(access_key: str, string_to_sign: str, provided: str, **extra: str) -> S3Error:
    """S3's answer when the signature it computes from our copy of the secret differs from the one sent."""
    return S3Error(
        403,
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match the signature you provided. "
        "Check your key and signing method.",
        AWSAccessKeyId=access_key,
        StringToSign=string_to_sign,
        SignatureProvided=provided,
        **extra,
    )


def policy_denied(reason: str) -> S3Error:
    return S3Error(403, "AccessDenied", f"Invalid according to Policy: {reason}")


def invalid_policy(reason: str) -> S3Error:
    return S3Error(400, "InvalidPolicyDocument", f"Invalid Policy: {reason}")


@dataclass(frozen=True)
class Condition:
    """One ``eq`` / ``starts-with`` condition; ``name`` is the field as spelled in the policy."""

    op: str
    name: str
    value: str

    @property
    def field(self) -> str:
        return self.name.lower()

    def matches(self, actual: str) -> bool:
        if self.op == "eq":
            return actual == self.value
        if self.field == "content-type":
            return all(item.strip().startswith(self.value) for item in actual.split(","))
        return actual.startswith(self.value)

    def __str__(self) -> str:  # the form AWS quotes in "Policy Condition failed: [...]"
        return json.dumps([self.op, f"${self.name}", self.value])


@dataclass(frozen=True)
class SizeRange:
    """Inclusive bounds on the file's size in bytes (all ``content-length-range`` conditions combined)."""

    minimum: int = 0
    maximum: int = MAX_POST_OBJECT_SIZE

    def check(self, size: int) -> None:
        if size > self.maximum:
            raise S3Error(
                400,
                "EntityTooLarge",
                "Your proposed upload exceeds the maximum allowed size",
                ProposedSize=size,
                MaxSizeAllowed=self.maximum,
            )
        if size < self.minimum:
            raise S3Error(
                400,
                "EntityTooSmall",
                "Your proposed upload is smaller than the minimum allowed size",
                ProposedSize=size,
                MinSizeAllowed=self.minimum,
            )


@dataclass(frozen=True)
class Policy:
    expiration: datetime
    conditions: tuple[Condition, ...]
    sizes: SizeRange = field(default_factory=SizeRange)


@dataclass(frozen=True)
class CredentialScope:
    """``<access-key-id>/<yyyymmdd>/<region>/<service>/aws4_request`` from ``x-amz-credential``."""

    access_key: str
    date: str
    region: str
    service: str

    @classmethod
    def parse(cls, value: str) -> CredentialScope:
        parts = value.split("/")
        if len(parts) != 5 or parts[4] != "aws4_request" or not all(parts):
            raise invalid_argument(
                "x-amz-credential must be <key>/<date>/<region>/<service>/aws4_request",
                "x-amz-credential",
                value,
            )
        return cls(*parts[:4])


def signing_key(secret: str, scope: CredentialScope) -> bytes:
    key = f"AWS4{secret}".encode()
    for part in (scope.date, scope.region, scope.service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def policy_signature(secret: str, scope: CredentialScope, policy_b64: str) -> str:
    """The SigV4 POST signature: the string to sign is the base64 policy exactly as sent."""
    return hmac.new(signing_key(secret, scope), policy_b64.encode(), hashlib.sha256).hexdigest()


def verify_signature(fields: Mapping[str, str], credentials: Mapping[str, str]) -> None:
    """Recompute the signature from our copy of the secret; the policy is trusted only if it matches."""
    if fields["x-amz-algorithm"] != ALGORITHM:
        raise invalid_argument(
            f"x-amz-algorithm only supports {ALGORITHM}", "x-amz-algorithm", fields["x-amz-algorithm"]
        )
    scope = CredentialScope.parse(fields["x-amz-credential"])
    secret = credentials.get(scope.access_key)
    if secret is None:
        raise unknown_access_key(scope.access_key)
    expected = policy_signature(secret, scope, fields["policy"])
    provided = fields["x-amz-signature"]
    if not hmac.compare_digest(expected.encode(), provided.encode()):
        raise signature_mismatch(scope.access_key, fields["policy"], provided)


def decode_policy(policy_b64: str) -> Policy:
    """Parse the (already authenticated) policy document; a malformed one is the signer's bug."""
    try:
        document = json.loads(base64.b64decode(policy_b64, validate=True))
    except (binascii.Error, ValueError):
        raise invalid_policy("Invalid JSON.") from None
    if not isinstance(document, dict) or not isinstance(document.get("conditions"), list):
        raise invalid_policy("Policy missing conditions.")
    return Policy(_parse_expiration(document.get("expiration")), *_parse_conditions(document["conditions"]))


def _parse_expiration(value: Any) -> datetime:
    if not isinstance(value, str):
        raise invalid_policy("Policy missing expiration.")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise invalid_policy(f"Invalid 'expiration' value: '{value}'") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _parse_conditions(items: list[Any]) -> tuple[tuple[Condition, ...], SizeRange]:
    conditions: list[Condition] = []
    sizes = SizeRange()
    for item in items:
        if isinstance(item, dict) and all(isinstance(v, str) for v in item.values()):
            conditions.extend(Condition("eq", name, value) for name, value in item.items())
        elif isinstance(item, list) and len(item) == 3 and str(item[0]).lower() == "content-length-range":
            low, high = (_size_bound(bound, item) for bound in item[1:])
            sizes = SizeRange(max(sizes.minimum, low), min(sizes.maximum, high))
        elif (
            isinstance(item, list)
            and len(item) == 3
            and str(item[0]).lower() in ("eq", "starts-with")
            and all(isinstance(part, str) for part in item[1:])
            and item[1].startswith("$")
        ):
            conditions.append(Condition(item[0].lower(), item[1][1:], item[2]))
        else:
            raise invalid_policy(f"Invalid Condition: {json.dumps(item)}")
    return tuple(conditions), sizes


def _size_bound(bound: Any, item: list[Any]) -> int:
    if isinstance(bound, bool) or not isinstance(bound, int | str) or not str(bound).isdigit():
        raise invalid_policy(f"Invalid content-length-range: {json.dumps(item)}")
    return int(bound)


def check_policy(policy: Policy, fields: Mapping[str, str], bucket: str, now: datetime) -> None:
    """Expiry, then every condition, then coverage of every submitted field.

    A condition on a field the form lacks is checked against the empty string, so
    ``["starts-with", "$x", ""]`` holds and ``["eq", "$x", "v"]`` fails.
    """
    if now > policy.expiration:  # "not valid after" the expiration instant
        raise policy_denied("Policy expired.")
    values = {**fields, "bucket": bucket}  # the bucket is named by the URL, never by the form
    for condition in policy.conditions:
        if not condition.matches(values.get(condition.field, "")):
            raise policy_denied(f"Policy Condition failed: {condition}")
    covered = {condition.field for condition in policy.conditions}
    extra = [
        name
        for name in fields
        if name not in covered and name not in UNCOVERED_FIELDS and not name.startswith(IGNORED_PREFIX)
    ]
    if extra:
        raise policy_denied(f"Extra input fields: {', '.join(extra)}")


def authorize_post(
    fields: Mapping[str, str], bucket: str, credentials: Mapping[str, str], now: datetime
) -> SizeRange:
    """Decide whether S3 would take this form; return the size range the file must then fit.

    ``fields`` are the form fields before ``file``, keyed by lower-cased name, with ``${filename}`` already
    expanded. ``bucket`` comes from the URL: the ``bucket`` condition is checked against it.
    Raises :class:`S3Error` with the error S3 would answer.
    """
    if "awsaccesskeyid" in fields:  # a SigV2 form (boto3's default without signature_version="s3v4")
        raise S3Error(
            400,
            "InvalidRequest",
            f"The authorization mechanism you have provided is not supported. Please use {ALGORITHM}.",
        )
    if "policy" not in fields:  # an anonymous POST: the bucket is not publicly writable
        raise S3Error(403, "AccessDenied", "Access Denied")
    for name in REQUIRED_FIELDS:
        if name not in fields:
            raise invalid_argument(
                f"Bucket POST must contain a field named '{name}'.  "
                "If it is specified, please check the order of the fields.",
                name,
            )
    verify_signature(fields, credentials)
    policy = decode_policy(fields["policy"])
    check_policy(policy, fields, bucket, now)
    return policy.sizes
