"""gunicorn's threaded worker, answering the requests gunicorn itself refuses in the API's JSON error shape.

gunicorn refuses a request line that is too long, too many or too large headers and malformed requests
before the app sees them, with an HTML page. Clients of this API parse `{"error": {"code", "message"}}`
only, so the same refusals leave here with stable codes. The message is fixed per code: it never echoes
what the client sent.
"""

from __future__ import annotations

import json
import ssl
from datetime import datetime
from typing import Any

from gunicorn import util
from gunicorn.http import errors
from gunicorn.http.wsgi import Response, default_environ
from gunicorn.workers.gthread import ThreadWorker

# (exception types, status, reason phrase, code, message); the first match wins, anything else is a 500.
REFUSALS: tuple[tuple[tuple[type[BaseException], ...], int, str, str, str], ...] = (
    (
        (errors.LimitRequestLine,),
        414,
        "URI Too Long",
        "request_line_too_long",
        "the request line is too long",
    ),
    (
        (errors.LimitRequestHeaders,),
        431,
        "Request Header Fields Too Large",
        "request_header_fields_too_large",
        "too many header fields, or a header field too large",
    ),
    ((errors.ForbiddenProxyRequest, ssl.SSLError), 403, "Forbidden", "forbidden", "request refused"),
    (
        (errors.UnsupportedTransferCoding,),
        501,
        "Not Implemented",
        "unsupported_transfer_coding",
        "unsupported transfer coding",
    ),
    (
        (errors.ExpectationFailed,),
        417,
        "Expectation Failed",
        "expectation_failed",
        "unsupported Expect header",
    ),
    (
        (errors.ParseException,),
        400,
        "Bad Request",
        "bad_request",
        "the request is not valid HTTP",
    ),
)
APP_FAULTS = (errors.InvalidResponseHeader, errors.InvalidResponseHeaderName, errors.ConfigurationProblem)


def refusal(exc: BaseException) -> tuple[int, str, str, str]:
    """(status, reason, code, message) of the answer to `exc`."""
    if not isinstance(exc, APP_FAULTS):
        for types, status, reason, code, message in REFUSALS:
            if isinstance(exc, types):
                return status, reason, code, message
    return 500, "Internal Server Error", "internal_error", "internal error"


def json_error(status: int, reason: str, code: str, message: str) -> bytes:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


class JsonErrorThreadWorker(ThreadWorker):  # type: ignore[misc]
    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        started = datetime.now()
        addr = addr or ("", -1)  # unix socket
        status, reason, code, message = refusal(exc)
        if status < 500:
            self.log.warning("invalid request from ip=%s: %s (%s)", addr[0], code, exc)
        else:
            self.log.exception("error handling request")
        req = req if req is not None else getattr(exc, "req", None)
        if req is not None:
            environ = default_environ(req, client, self.cfg)
            environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = addr[0], str(addr[1])
            resp = Response(req, client, self.cfg)
            resp.status = f"{status} {reason}"
            self.log.access(resp, req, environ, datetime.now() - started)
        try:
            util.write_nonblock(client, json_error(status, reason, code, message))
        except Exception:
            self.log.debug("failed to send the error answer")
