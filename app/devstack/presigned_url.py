"""S3 presigned-URL (SigV4 query-string auth) rules, as AWS enforces them — pure functions, no I/O.

moto 5.2.5 accepts any presigned URL whatever its signature, expiry or signed headers (a forged signature, a
URL expired since 2020 and a part one byte longer than its signed ``Content-Length`` were all stored). The dev
stack's gate (``policy_gate.py``) calls :func:`authorize_presigned` on every request before it reaches moto,
so a presigned part URL or private link that would fail on real S3 fails locally too.

Sources (AWS S3 API reference, "Authenticating Requests: Using Query Parameters (AWS Signature Version 4)"):
- the URL carries ``X-Amz-Algorithm`` (only ``AWS4-HMAC-SHA256``), ``X-Amz-Credential``
  (``<key>/<yyyymmdd>/<region>/s3/aws4_request``), ``X-Amz-Date``, ``X-Amz-Expires`` (seconds, at most
  604800: a week), ``X-Amz-SignedHeaders`` and ``X-Amz-Signature``;
- the canonical request is the method, the URI-encoded path (S3 encodes it once and does not normalise it),
  the canonical query (every parameter but ``X-Amz-Signature``, names and values URI-encoded, sorted), the
  signed headers with their values *as received* (``host`` always among them), the signed header list, and
  ``UNSIGNED-PAYLOAD`` (the body is not hashed; a presigner does not know it);
- the string to sign is ``AWS4-HMAC-SHA256``, ``X-Amz-Date``, the scope and the hex SHA-256 of the canonical
  request, one per line, signed with the key derived from the secret and the scope.

A signed ``content-length`` therefore pins the body's size: the value compared is the request's own
``Content-Length``, which the gate passes only when it frames the body (a chunked body has none), so a body
of any other length — or of unknown length — fails as ``SignatureDoesNotMatch``, as on S3.
Not modelled: a payload hash in ``X-Amz-Content-Sha256`` (signed as ``UNSIGNED-PAYLOAD`` regardless), session
tokens, region checks, SigV4a.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, unquote, urlsplit

from app.devstack.post_policy import (
    ALGORITHM,
    CredentialScope,
    S3Error,
    signature_mismatch,
    signing_key,
    unknown_access_key,
)

# The parameters query-string auth consists of; any one of them makes a request presigned.
AUTH_PARAMS = (
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Signature",
    "X-Amz-Date",
    "X-Amz-SignedHeaders",
    "X-Amz-Expires",
)
# SigV2 query auth (``?AWSAccessKeyId=…&Signature=…&Expires=…``): S3 buckets created since 2020 refuse it.
SIGV2_PARAMS = ("AWSAccessKeyId", "Signature")
# AWS: "the maximum expiration time for a presigned URL is one week from the time of creation".
MAX_EXPIRES_SECONDS = 7 * 24 * 3600
# A URL dated further ahead than this is "not valid yet" (else a future date would stretch its validity).
MAX_CLOCK_SKEW = timedelta(minutes=15)
AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
SERVICE = "s3"


@dataclass(frozen=True)
class HttpRequest:
    """What the check needs from a request: ``target`` is the path and query exactly as sent.

    ``headers`` maps lower-cased names to values as received; ``content-length`` is present only when that
    header frames the body (never for a chunked body).
    """

    method: str
    target: str
    headers: Mapping[str, str]


@dataclass(frozen=True)
class Presigned:
    """An accepted presigned request: who signed it, until when, and the body length it pinned (if any)."""

    access_key: str
    expires_at: datetime
    signed_content_length: int | None


def query_auth_error(message: str) -> S3Error:
    return S3Error(400, "AuthorizationQueryParametersError", message)


def query_pairs(query: str) -> list[tuple[str, str]]:
    """The query's parameters in order, percent-decoded (``+`` stays a plus, as S3 reads it)."""
    return [
        (unquote(name), unquote(value))
        for name, _, value in (item.partition("=") for item in query.split("&") if item)
    ]


def authorize_presigned(
    request: HttpRequest, credentials: Mapping[str, str], now: datetime
) -> Presigned | None:
    """Decide whether S3 would take this presigned request; ``None`` if it carries no query-string auth.

    Checks in S3's order: the parameters, the access key, the validity window, then the signature.
    Raises :class:`S3Error` with the error S3 would answer.
    """
    parts = urlsplit(request.target)
    pairs = query_pairs(parts.query)
    params = dict(pairs)
    if not any(name in params for name in AUTH_PARAMS):
        if all(name in params for name in SIGV2_PARAMS):
            raise S3Error(
                400,
                "InvalidRequest",
                f"The authorization mechanism you have provided is not supported. Please use {ALGORITHM}.",
            )
        return None
    if "authorization" in request.headers:
        raise S3Error(
            400,
            "InvalidArgument",
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query "
            "string parameter or the Authorization header should be specified",
            ArgumentName="Authorization",
            ArgumentValue=request.headers["authorization"],
        )
    auth = _parse(params)
    secret = credentials.get(auth.scope.access_key)
    if secret is None:
        raise unknown_access_key(auth.scope.access_key)
    expires_at = auth.date + timedelta(seconds=auth.expires)
    if auth.date - now > MAX_CLOCK_SKEW:
        raise S3Error(403, "AccessDenied", "Request is not valid yet")
    if now > expires_at:
        raise S3Error(
            403,
            "AccessDenied",
            "Request has expired",
            **{"X-Amz-Expires": auth.expires},
            Expires=_iso(expires_at),
            ServerTime=_iso(now),
        )
    _check_headers_signed(auth.signed_headers, request.headers)
    canonical = canonical_request(request.method, parts.path, pairs, auth.signed_headers, request.headers)
    string_to_sign = "\n".join(
        (ALGORITHM, auth.amz_date, auth.scope_text, hashlib.sha256(canonical.encode()).hexdigest())
    )
    expected = hmac.new(signing_key(secret, auth.scope), string_to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), auth.signature.encode()):
        raise signature_mismatch(
            auth.scope.access_key, string_to_sign, auth.signature, CanonicalRequest=canonical
        )
    length = request.headers.get("content-length", "") if "content-length" in auth.signed_headers else ""
    return Presigned(auth.scope.access_key, expires_at, int(length) if length.isdigit() else None)


@dataclass(frozen=True)
class _QueryAuth:
    scope: CredentialScope
    scope_text: str  # <date>/<region>/<service>/aws4_request, as it enters the string to sign
    amz_date: str
    date: datetime
    expires: int
    signed_headers: tuple[str, ...]
    signature: str


def _parse(params: Mapping[str, str]) -> _QueryAuth:
    if params.get("X-Amz-Algorithm", ALGORITHM) != ALGORITHM:
        raise query_auth_error(f'X-Amz-Algorithm only supports "{ALGORITHM}"')
    if not all(params.get(name) for name in AUTH_PARAMS):
        raise query_auth_error(
            "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, "
            "X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters."
        )
    credential = params["X-Amz-Credential"]
    try:
        scope = CredentialScope.parse(credential)
    except S3Error:
        raise query_auth_error(
            "Error parsing the X-Amz-Credential parameter; the Credential is mal-formed; "
            'expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".'
        ) from None
    if scope.service != SERVICE:
        raise query_auth_error(
            f'Error parsing the X-Amz-Credential parameter; incorrect service "{scope.service}". '
            f'This endpoint belongs to "{SERVICE}".'
        )
    amz_date = params["X-Amz-Date"]
    try:
        date = datetime.strptime(amz_date, AMZ_DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise query_auth_error(
            "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\""
        ) from None
    if scope.date != amz_date[:8]:
        raise query_auth_error("Invalid credential date. Date is not the same as X-Amz-Date.")
    expires_text = params["X-Amz-Expires"]
    if not re.fullmatch(r"-?[0-9]+", expires_text):
        raise query_auth_error("X-Amz-Expires should be a number")
    expires = int(expires_text)
    if expires < 0:
        raise query_auth_error("X-Amz-Expires must be non-negative")
    if expires > MAX_EXPIRES_SECONDS:
        raise query_auth_error(
            "X-Amz-Expires must be less than a week (in seconds); that is, the given X-Amz-Expires must be "
            f"less than {MAX_EXPIRES_SECONDS} seconds"
        )
    return _QueryAuth(
        scope=scope,
        scope_text=credential.partition("/")[2],
        amz_date=amz_date,
        date=date,
        expires=expires,
        signed_headers=tuple(params["X-Amz-SignedHeaders"].split(";")),
        signature=params["X-Amz-Signature"],
    )


def _check_headers_signed(signed: tuple[str, ...], headers: Mapping[str, str]) -> None:
    """``host`` and every ``x-amz-*`` header sent must be signed: none may be added to a presigned URL."""
    required = {"host"} | {name for name in headers if name.startswith("x-amz-")}
    unsigned = sorted(required.difference(signed))
    if unsigned:
        raise S3Error(
            403,
            "AccessDenied",
            "There were headers present in the request which were not signed",
            HeadersNotSigned=", ".join(unsigned),
        )


def canonical_request(
    method: str,
    path: str,
    pairs: list[tuple[str, str]],
    signed_headers: tuple[str, ...],
    headers: Mapping[str, str],
) -> str:
    """The SigV4 canonical request S3 computes for a presigned request (query pairs already decoded)."""
    query = "&".join(
        f"{name}={value}"
        for name, value in sorted(
            (_uri_encode(name), _uri_encode(value)) for name, value in pairs if name != "X-Amz-Signature"
        )
    )
    header_lines = "".join(f"{name}:{' '.join(headers.get(name, '').split())}\n" for name in signed_headers)
    return "\n".join(
        (
            method.upper(),
            quote(unquote(path or "/"), safe="/~"),
            query,
            header_lines,
            ";".join(signed_headers),
            UNSIGNED_PAYLOAD,
        )
    )


def _uri_encode(text: str) -> str:
    """SigV4's UriEncode: everything but ``A-Z a-z 0-9 - _ . ~`` percent-encoded as UTF-8, upper-case hex."""
    return quote(text, safe="-_.~")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
