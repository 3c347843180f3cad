"""Every error code the API source raises is in the one catalogue, with the status it is raised with."""

from __future__ import annotations

import re
from pathlib import Path

from app.domain.errors import STATUS, ErrorCode
from app.domain.tickets import TicketRefusal

APP = Path(__file__).resolve().parents[2] / "app"
RAISED = re.compile(r"(?:ApiError|error_response)\(\s*(\d{3}),\s*\"([a-z_]+)\"")


def test_every_code_has_a_status() -> None:
    assert set(STATUS) == set(ErrorCode)
    assert ErrorCode.REQUEST_TOO_LARGE.status == 413


def test_raised_codes_are_catalogued_with_their_status() -> None:
    raised = {
        (int(status), code)
        for source in APP.rglob("*.py")
        for status, code in RAISED.findall(source.read_text())
    }
    assert raised, "the pattern found no raised errors"
    for status, code in raised:
        assert ErrorCode(code).status == status, (code, status)


def test_ticket_refusals_are_catalogued() -> None:
    for refusal in TicketRefusal:
        assert refusal.value in set(ErrorCode)
