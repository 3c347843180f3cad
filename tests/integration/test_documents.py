"""Workout plans and meal guides as versioned PDFs, over real interfaces: API over HTTP, the local S3 through
its gate, SNS to the webhook, Redis, real RQ workers (in this process, and two `broker worker` processes),
PostgreSQL when it answers. PDFs are made in the test (`tests/pdfs.py`)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from urllib.parse import quote

import jwt
import pytest
import requests

from app.repository import get_upload
from tests import pdfs
from tests.integration.test_sharing import grant
from tests.support import REPO, BrokerClient, settings_env

NAME = 'Plan "Woche 1" \u2013 Kraft & Übungen.pdf'  # quotes, a dash and an umlaut survive


def document_ticket(client: BrokerClient, data: bytes, document_id: str = "strength-plan", **extra) -> dict:
    return client.ticket(
        "document", "application/pdf", data, context={"document_id": document_id}, filename=NAME, **extra
    )


def upload_document(client: BrokerClient, data: bytes, document_id: str = "strength-plan") -> str:
    ticket = document_ticket(client, data, document_id)
    stored = client.post_to_store(ticket, data)
    assert stored.status_code in (200, 201, 204), stored.text
    client.wait_status(ticket["upload_id"], {"uploaded"})
    return str(ticket["upload_id"])


def versions(client: BrokerClient, document_id: str, owner: str | None = None) -> requests.Response:
    params = {"owner": owner} if owner else {}
    url = f"{client.api_url}/v1/documents/{document_id}"
    return requests.get(url, params=params, headers=client.headers, timeout=10)


def user_of(client: BrokerClient) -> str:
    return str(jwt.decode(client.token, options={"verify_signature": False})["sub"])


def test_a_clean_plan_is_stored_byte_identical_and_downloads_under_its_name(alice, drain, services):
    data = pdfs.plan(pages=3)
    upload_id = upload_document(alice, data)
    drain()

    status = alice.status(upload_id).json()
    assert status["status"] == "ready", status
    assert status["media"]["pages"] == 3
    media = alice.media(upload_id).json()
    assert (media["pages"], media["document_id"], media["version"]) == (3, "strength-plan", 1)
    assert media["content_type"] == "application/pdf" and media["url_expires_at"]
    fetched = requests.get(media["url"], timeout=10)
    assert fetched.status_code == 200
    assert hashlib.sha256(fetched.content).hexdigest() == hashlib.sha256(data).hexdigest()
    disposition = fetched.headers["Content-Disposition"]
    assert disposition.startswith("attachment; ")
    assert f"filename*=UTF-8''{quote(NAME, safe='')}" in disposition
    with services.db.session() as session:
        record = get_upload(session, upload_id)
    assert record is not None and record.final_key
    assert record.final_key.endswith(f"/documents/strength-plan/v1/{upload_id}.pdf")
    assert "Woche" not in record.final_key  # a name never reaches a key


REFUSED = {
    "encrypted": (lambda: pdfs.encrypted(), "pdf_encrypted"),
    "javascript": (lambda: pdfs.document_javascript(), "pdf_active_content"),
    "embedded_file": (lambda: pdfs.attachment(), "pdf_active_content"),
    "launch_action": (
        lambda: pdfs.open_action(pdfs.action("/Launch", "/F", "calc.exe")),
        "pdf_active_content",
    ),
    "html": (lambda: pdfs.html(), "not_pdf"),
    "truncated": (lambda: pdfs.truncated(), "corrupt"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused_documents_end_rejected_with_their_code(alice, drain, services, case):
    make, code = REFUSED[case]
    upload_id = upload_document(alice, make(), document_id=f"refused-{case.replace('_', '-')}")
    drain()

    status = alice.status(upload_id).json()
    assert (status["status"], status["error"]["code"]) == ("rejected", code), status
    assert services.storage.head(f"temp/{upload_id}") is None  # refused, never promoted


def test_versions_are_listed_newest_first_kept_readable_and_deleted_one_by_one(alice, bob, drain):
    ids = []
    for pages in (1, 2, 3):
        ids.append(upload_document(alice, pdfs.plan(pages=pages), document_id="meal-guide"))
        drain()
    owner = user_of(alice)

    listed = versions(alice, "meal-guide").json()
    assert listed["document_id"] == "meal-guide"
    assert [(v["version"], v["pages"]) for v in listed["versions"]] == [(3, 3), (2, 2), (1, 1)]
    assert versions(bob, "meal-guide", owner=owner).status_code == 404  # no grant: not even its existence

    # Trainers share plans with their clients: the owner's grant lets the client read every version.
    assert grant(alice, bob, "trainer").status_code == 201
    shared = versions(bob, "meal-guide", owner=owner).json()["versions"]
    assert [v["version"] for v in shared] == [3, 2, 1]
    first = shared[-1]
    assert requests.get(first["url"], timeout=10).status_code == 200  # v1 still readable after v3

    deleted = requests.delete(f"{alice.api_url}/v1/media/{ids[1]}", headers=alice.headers, timeout=10)
    assert deleted.status_code == 204
    assert [v["version"] for v in versions(alice, "meal-guide").json()["versions"]] == [3, 1]
    assert versions(alice, "no-such-document").status_code == 404


def test_two_workers_promoting_the_same_document_give_versions_1_and_2(alice, settings):
    uploads = [upload_document(alice, pdfs.plan(pages=2), document_id="concurrent") for _ in range(2)]
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "app.cli", "worker", "--burst", "--without-scheduler"],
            env=settings_env(settings),
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(2)
    ]
    for worker in workers:
        assert worker.wait(timeout=120) == 0

    for upload_id in uploads:
        assert alice.status(upload_id).json()["status"] == "ready"
    assert sorted(v["version"] for v in versions(alice, "concurrent").json()["versions"]) == [1, 2]
