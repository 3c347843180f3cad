"""A reverse proxy in front of the local moto server that enforces S3 POST policies as AWS does.

moto 5.2.5 stores whatever a browser-style POST upload sends: it checks neither the signature, the expiry nor
any policy condition (a 100-byte file passed a 1-10 byte range; a changed key or Content-Type landed). The dev
stack and the integration tests therefore talk to moto through this gate:

- Requests with query-string auth (presigned URLs: part uploads, private links) are checked first with
  :func:`app.devstack.presigned_url.authorize_presigned` — signature, expiry, signed headers; a signed
  ``Content-Length`` must be the body's own framing, and exactly that many bytes are relayed. moto alone
  stores a part whatever its URL's signature, expiry or length.
- ``multipart/form-data`` POSTs to ``/<bucket>`` (path-style form uploads) are parsed as a stream, checked
  with :func:`app.devstack.post_policy.authorize_post`, the file is spooled (at most the policy's maximum
  size, to disk above 1 MiB) and only an accepted upload is re-sent to moto; refusals get S3's XML errors.
- CORS preflights (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) are relayed without
  any check: S3 answers them from the bucket's CORS rules alone, never authenticates them (a browser sends
  them without credentials, to the presigned URL, query included), and moto answers them from the same rules.
  A refusal of a browser's request carries the CORS headers the bucket's rules give its origin, as S3's
  errors do, so a page can read the error code instead of seeing an opaque network failure.
- Every other request, and every accepted one, is relayed unchanged — method, raw path and query, headers
  including ``Host`` and ``Authorization`` (so SigV4 service routing and virtual hosting keep working in
  moto), body streamed — and moto's answer is streamed back. Signatures in the ``Authorization`` header
  (the broker's own boto3 calls) are not checked: moto accepts any.

Memory stays bounded by the chunk size: neither bodies nor files are ever held whole.
"""

from __future__ import annotations

import argparse
import http.client
import logging
import os
import secrets
import signal
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import PurePosixPath
from types import TracebackType
from typing import IO, Any
from urllib.parse import quote, urlsplit

from werkzeug.datastructures import EnvironHeaders
from werkzeug.exceptions import ClientDisconnected
from werkzeug.http import parse_options_header
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wsgi import get_input_stream

from app.devstack.post_form import CHUNK, Form, malformed, read_form
from app.devstack.post_policy import S3Error, SizeRange, authorize_post, invalid_argument
from app.devstack.presigned_url import HttpRequest, authorize_presigned

logger = logging.getLogger(__name__)

# Bodies relayed back from moto (a worker's GET of a 4 MB photo): each read and write of a chunk costs a
# wake-up of this process and of the client, so big chunks; memory stays bounded by one.
RELAY_CHUNK = 1024 * 1024


# Per socket operation; moto reads a whole form into memory before it answers, so allow it time.
UPSTREAM_TIMEOUT = 300.0
# RFC 9110 §7.6.1 connection-specific headers: each hop sets its own. Expect is answered by our server.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "expect",
    }
)
# Our HTTP server always writes its own; relaying moto's too would send each twice.
SET_BY_THIS_SERVER = frozenset({"date", "server"})

# What an actual (not preflight) CORS response carries; the Allow-Methods/Headers answers are preflight-only.
CORS_RESPONSE_HEADERS = frozenset(
    {"access-control-allow-origin", "access-control-expose-headers", "access-control-allow-credentials"}
)

StartResponse = Callable[..., Any]


class PolicyGate:
    """WSGI app: S3 form uploads are policy-checked, everything else is relayed to ``upstream`` as is."""

    def __init__(self, upstream: str, credentials: Mapping[str, str]) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be an http:// URL, got {upstream!r}")
        self.upstream = upstream
        self._address = (parts.hostname, parts.port or 80)
        self._credentials = dict(credentials)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        stream = get_input_stream(environ)
        mimetype, options = parse_options_header(environ.get("CONTENT_TYPE", ""))
        if _is_preflight(environ):
            return self._forward(environ, start_response, _end_to_end_headers(environ), iter(()))
        try:
            presigned = authorize_presigned(_as_signed(environ), self._credentials, datetime.now(UTC))
            if (
                presigned is None
                and environ["REQUEST_METHOD"] == "POST"
                and mimetype == "multipart/form-data"
            ):
                return self._upload(environ, start_response, stream, options.get("boundary", ""))
            chunks, framing = _request_body(environ, stream)
            return self._forward(environ, start_response, _end_to_end_headers(environ) + framing, chunks)
        except S3Error as error:
            _drain(stream)  # let the client finish sending, so it reads our answer instead of a reset
            logger.info("request refused", extra={"path": environ["PATH_INFO"], "code": error.code})
            return _error(start_response, error, self._cors_headers(environ))

    def _upload(
        self, environ: dict[str, Any], start_response: StartResponse, stream: IO[bytes], boundary: str
    ) -> Iterable[bytes]:
        bucket, _, rest = environ["PATH_INFO"].lstrip("/").partition("/")
        if not bucket or rest:  # form uploads go to the bucket URL; virtual-host style is not supported
            raise S3Error(
                405, "MethodNotAllowed", "The specified method is not allowed against this resource."
            )
        if not boundary:
            raise malformed()

        def start_file(form: Form, filename: str) -> SizeRange:
            # AWS expands ${filename} in the key before it checks the policy.
            if "key" in form.fields:
                sent_name, key = form.fields["key"]
                basename = PurePosixPath(filename.replace("\\", "/")).name
                form.fields["key"] = (sent_name, key.replace("${filename}", basename))
            return authorize_post(form.values(), bucket, self._credentials, datetime.now(UTC))

        form = Form()
        try:
            read_form(stream, boundary.encode(), form, start_file)
            if form.file is None:
                authorize_post(form.values(), bucket, self._credentials, datetime.now(UTC))
                raise invalid_argument("POST requires exactly one file upload per request.", "file")
            form.file.sizes.check(form.file.size)
            chunks, length = form.encode(boundary.encode())
            headers = [*_end_to_end_headers(environ), ("Content-Length", str(length))]
            logger.info("s3 form upload accepted", extra={"bucket": bucket, "key": form.values().get("key")})
            return self._forward(environ, start_response, headers, chunks)  # sends the whole body first
        finally:
            form.close()

    def _forward(
        self,
        environ: dict[str, Any],
        start_response: StartResponse,
        headers: list[tuple[str, str]],
        chunks: Iterator[bytes],
    ) -> Iterable[bytes]:
        conn = http.client.HTTPConnection(*self._address, timeout=UPSTREAM_TIMEOUT)
        try:
            # putrequest with skip_*: send exactly the client's headers (its Host included), nothing added.
            conn.putrequest(
                environ["REQUEST_METHOD"], _raw_target(environ), skip_host=True, skip_accept_encoding=True
            )
            for name, value in headers:
                conn.putheader(name, value)
            conn.endheaders()
            chunked = any(name.lower() == "transfer-encoding" for name, _ in headers)
            for chunk in chunks:
                conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
            if chunked:
                conn.send(b"0\r\n\r\n")
            response = conn.getresponse()
        except OSError as exc:
            conn.close()
            raise S3Error(503, "ServiceUnavailable", f"upstream {self.upstream} failed: {exc}") from exc
        except S3Error:
            conn.close()  # mid-body: moto sees a short body and a closed connection, and stores nothing
            raise
        dropped = HOP_BY_HOP | SET_BY_THIS_SERVER
        kept = [(name, value) for name, value in response.getheaders() if name.lower() not in dropped]
        start_response(f"{response.status} {response.reason}", kept)
        return _ResponseStream(conn, response)

    def _cors_headers(self, environ: dict[str, Any]) -> list[tuple[str, str]]:
        """The CORS headers the bucket's rules give this request's origin, asked of moto with a preflight.

        Only the bucket's rules decide, so the gate keeps no copy of them; no origin, no rule or no answer
        means no headers (the browser then hides the error, as it would from S3).
        """
        origin = environ.get("HTTP_ORIGIN")
        if not origin:
            return []
        conn = http.client.HTTPConnection(*self._address, timeout=10)
        try:
            conn.request(
                "OPTIONS",
                _raw_target(environ),
                headers={
                    "Host": environ.get("HTTP_HOST", ""),
                    "Origin": origin,
                    "Access-Control-Request-Method": environ["REQUEST_METHOD"],
                },
            )
            response = conn.getresponse()
            response.read()
        except OSError:
            return []
        finally:
            conn.close()
        if response.status != 200:
            return []
        return [
            (name, value) for name, value in response.getheaders() if name.lower() in CORS_RESPONSE_HEADERS
        ]


class _ResponseStream:
    """Streams moto's body; ``close()`` (called by the WSGI server even if never iterated) frees the socket."""

    def __init__(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse) -> None:
        self._conn = conn
        self._response = response

    def __iter__(self) -> Iterator[bytes]:
        return iter(lambda: self._response.read1(RELAY_CHUNK), b"")

    def close(self) -> None:
        self._conn.close()


def _request_body(
    environ: dict[str, Any], stream: IO[bytes]
) -> tuple[Iterator[bytes], list[tuple[str, str]]]:
    """The body as chunks, and the framing header to send it with (as the client framed it)."""
    if environ.get("wsgi.input_terminated"):
        return iter(lambda: stream.read(CHUNK), b""), [("Transfer-Encoding", "chunked")]
    if environ.get("CONTENT_LENGTH"):
        return _complete(stream, int(environ["CONTENT_LENGTH"])), [
            ("Content-Length", environ["CONTENT_LENGTH"])
        ]
    return iter(()), []


def _complete(stream: IO[bytes], length: int) -> Iterator[bytes]:
    """The ``length`` bytes the client announced (the stream is capped there), or S3's IncompleteBody."""
    sent = 0
    try:
        while chunk := stream.read(CHUNK):
            sent += len(chunk)
            yield chunk
    except ClientDisconnected:
        pass
    if sent != length:
        raise S3Error(
            400,
            "IncompleteBody",
            "You did not provide the number of bytes specified by the Content-Length HTTP header.",
            NumberBytesExpected=length,
            NumberBytesProvided=sent,
        )


def _is_preflight(environ: dict[str, Any]) -> bool:
    return (
        environ["REQUEST_METHOD"] == "OPTIONS"
        and "HTTP_ORIGIN" in environ
        and "HTTP_ACCESS_CONTROL_REQUEST_METHOD" in environ
    )


def _as_signed(environ: dict[str, Any]) -> HttpRequest:
    """The request as a presigned-URL check sees it: raw target, headers as received.

    Content-Length counts only when it frames the body: with ``Transfer-Encoding: chunked`` HTTP ignores it
    (RFC 9112 §6.3), so a chunked body never matches a signed length.
    """
    headers = {name.lower(): value for name, value in EnvironHeaders(environ)}
    if environ.get("wsgi.input_terminated") or not environ.get("CONTENT_LENGTH"):
        headers.pop("content-length", None)
    return HttpRequest(environ["REQUEST_METHOD"], _raw_target(environ), headers)


def _end_to_end_headers(environ: dict[str, Any]) -> list[tuple[str, str]]:
    """The client's headers minus hop-by-hop ones and Content-Length (the body's framing is set per hop)."""
    return [
        (name, value)
        for name, value in EnvironHeaders(environ)
        if name.lower() not in HOP_BY_HOP and name.lower() != "content-length"
    ]


def _raw_target(environ: dict[str, Any]) -> str:
    """The request target as the client wrote it: re-quoting PATH_INFO could change a key's encoding."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw:
        parts = urlsplit(raw)
        if parts.scheme:  # absolute-form (proxy-style) request line
            return parts.path + (f"?{parts.query}" if parts.query else "")
        return raw
    query = environ.get("QUERY_STRING")
    return quote(environ.get("SCRIPT_NAME", "") + environ["PATH_INFO"]) + (f"?{query}" if query else "")


def _drain(stream: IO[bytes]) -> None:
    try:
        while stream.read(CHUNK):
            pass
    except ClientDisconnected:  # it stopped sending: nothing left to drain
        pass


def _error(
    start_response: StartResponse, error: S3Error, cors: list[tuple[str, str]] | None = None
) -> list[bytes]:
    request_id, host_id = secrets.token_hex(8).upper(), secrets.token_urlsafe(48)
    body = error.to_xml(request_id, host_id)
    start_response(
        f"{error.status} {HTTPStatus(error.status).phrase}",
        [
            ("Content-Type", "application/xml"),
            ("Content-Length", str(len(body))),
            ("x-amz-request-id", request_id),
            ("x-amz-id-2", host_id),
            *(cors or []),
        ],
    )
    return [body]


class GateServer:
    """A running gate: ``url`` to point clients at, ``stop()`` (or ``with``) to shut it down."""

    def __init__(self, server: BaseWSGIServer) -> None:
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="policy-gate", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> GateServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def serve_gate(
    upstream: str, credentials: Mapping[str, str], host: str = "127.0.0.1", port: int = 0
) -> GateServer:
    """Serve a :class:`PolicyGate` on a background thread (one thread per request); port 0 picks a free one."""
    return GateServer(make_server(host, port, PolicyGate(upstream, credentials), threaded=True))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m app.devstack.policy_gate", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--upstream", required=True, help="the moto server URL, e.g. http://127.0.0.1:5000")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (the URL is printed)")
    parser.add_argument(
        "--credentials",
        "--credential",
        action="append",
        metavar="ACCESS_KEY:SECRET",
        help="accepted signing credentials (repeatable); default: $AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY",
    )
    args = parser.parse_args(argv)
    from_env = f"{os.environ.get('AWS_ACCESS_KEY_ID', '')}:{os.environ.get('AWS_SECRET_ACCESS_KEY', '')}"
    pairs = [pair.partition(":") for pair in args.credentials or [from_env]]
    credentials = {key: secret for key, _, secret in pairs}
    if not all(key and secret for key, secret in credentials.items()):
        parser.error(
            "give --credentials ACCESS_KEY:SECRET (or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
        )
    server = make_server(args.host, args.port, PolicyGate(args.upstream, credentials), threaded=True)
    host, port = server.server_address[:2]
    print(f"policy gate on http://{host}:{port} -> {args.upstream}", flush=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop like Ctrl-C: close the socket
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
