"""Resumable uploads over real interfaces: tickets answer MULTIPART, parts go straight to the local store
through presigned PUTs, the parts listing lets a client resume, completion checks the sizes, cancel aborts."""

from __future__ import annotations

import io
import os
import time
from datetime import UTC, datetime, timedelta

import pytest
import requests
from PIL import Image

from app.domain.multipart import MiB, plan_parts
from app.services import Services
from tests.support import BrokerClient
from workers.cleanup import cleanup

PHOTO = {"kind": "workout_photo", "context": {"workout_id": "w-resume"}}


@pytest.fixture(scope="module")
def noisy_png() -> bytes:
    """A real ~12 MB PNG (noise does not compress): two parts of the default 8 MiB."""
    noise = Image.frombytes("RGB", (2000, 2000), os.urandom(2000 * 2000 * 3))
    out = io.BytesIO()
    noise.save(out, "PNG", compress_level=1)
    return out.getvalue()


def resumable_ticket(client: BrokerClient, data: bytes) -> dict:
    return client.ticket(PHOTO["kind"], "image/png", data, context=PHOTO["context"], resumable=True)


def test_a_resumable_upload_is_sent_in_parts_resumed_from_the_listing_and_processed(
    alice, noisy_png, drain, services
):
    ticket = resumable_ticket(alice, noisy_png)
    plan = ticket["upload"]
    assert plan["method"] == "MULTIPART"
    assert (plan["part_size"], plan["part_count"]) == (8 * MiB, 2)
    assert plan["parts_url"].endswith(f"/v1/uploads/{ticket['upload_id']}/parts")
    assert datetime.fromisoformat(ticket["expires_at"]) > datetime.now(UTC) + timedelta(hours=23)
    upload_id = ticket["upload_id"]

    first = alice.put_parts(ticket, noisy_png, [1])  # ...and then the connection drops
    listed = alice.stored_parts(upload_id).json()["parts"]
    assert [(p["part_number"], p["size"]) for p in listed] == [(1, 8 * MiB)]
    assert listed[0]["etag"] == first[1].strip('"')

    # Completing early is refused and completes nothing: the store still holds part 1 for the resume.
    early = alice.complete(upload_id, first)
    assert early.status_code == 422 and early.json()["error"]["code"] == "size_mismatch"
    assert len(alice.stored_parts(upload_id).json()["parts"]) == 1

    missing = [n for n in range(1, plan["part_count"] + 1) if n not in {p["part_number"] for p in listed}]
    rest = alice.put_parts(ticket, noisy_png, missing)
    done = alice.complete(upload_id, {**first, **rest})
    assert done.status_code == 202, done.text
    assert done.json() == {"upload_id": upload_id, "status": "uploaded"}

    drain()
    status = alice.status(upload_id).json()
    assert status["status"] == "ready", status
    assert (status["media"]["width"], status["media"]["height"]) == (1200, 1200)
    # The parts are gone with the completed upload: asking again is a closed upload, not a crash.
    assert alice.stored_parts(upload_id).json()["error"]["code"] == "upload_closed"


def test_big_files_get_parts_without_asking_and_small_resumable_ones_a_post(alice, serve_with, noisy_png):
    low_threshold = BrokerClient(serve_with(multipart_threshold_bytes=5 * MiB).url, alice.token)
    assert low_threshold.ticket(**PHOTO, content_type="image/png", data=noisy_png)["upload"]["method"] == (
        "MULTIPART"
    )
    small = alice.ticket(**PHOTO, content_type="image/png", data=b"x" * (4 * MiB), resumable=True)
    assert small["upload"]["method"] == "POST"  # under one part: nothing to resume


def test_part_requests_are_checked(alice, bob, noisy_png):
    ticket = resumable_ticket(alice, noisy_png)
    upload_id = ticket["upload_id"]

    for numbers in ([0], [3], [1, 1], list(range(1, 102))):
        refused = alice.part_urls(upload_id, numbers)
        assert refused.status_code == 422, (numbers, refused.text)
        assert refused.json()["error"]["code"] == "invalid_request"
    assert bob.part_urls(upload_id, [1]).status_code == 404  # not bob's: existence is not leaked
    assert bob.stored_parts(upload_id).status_code == 404

    post_ticket = alice.ticket(**PHOTO, content_type="image/png", data=b"x" * 1000)
    not_multipart = alice.part_urls(post_ticket["upload_id"], [1])
    assert not_multipart.status_code == 409
    assert not_multipart.json()["error"]["code"] == "not_multipart"

    urls = alice.part_urls(upload_id, [2, 1]).json()["parts"]
    assert [p["part_number"] for p in urls] == [2, 1]
    last_length = len(noisy_png) - 8 * MiB
    assert [p["headers"]["Content-Length"] for p in urls] == [str(last_length), str(8 * MiB)]
    assert all(p["method"] == "PUT" for p in urls)
    expires = datetime.fromisoformat(urls[0]["expires_at"])
    assert expires <= datetime.now(UTC) + timedelta(minutes=15)


def test_cancel_aborts_the_parts_and_closes_the_upload(alice, noisy_png, services):
    ticket = resumable_ticket(alice, noisy_png)
    upload_id = ticket["upload_id"]
    alice.put_parts(ticket, noisy_png, [1])
    unsent = alice.part_urls(upload_id, [2]).json()["parts"][0]

    assert alice.cancel(upload_id).status_code == 204
    assert alice.cancel(upload_id).status_code == 204  # idempotent
    assert alice.status(upload_id).json()["status"] == "deleted"
    assert alice.stored_parts(upload_id).json()["error"]["code"] == "upload_closed"
    open_keys = [item.key for item in services.storage.list_temp_multipart_uploads()]
    assert f"temp/{upload_id}" not in open_keys
    # A part still in the client's hands finds no upload to join (S3: 404 NoSuchUpload; moto answers 500).
    late = requests.put(unsent["url"], data=noisy_png[8 * MiB :], headers=unsent["headers"], timeout=30)
    assert late.status_code >= 400
    assert services.storage.head(f"temp/{upload_id}") is None


def test_cleanup_aborts_multipart_uploads_past_their_ttl(alice, noisy_png, services):
    ticket = resumable_ticket(alice, noisy_png)
    key = f"temp/{ticket['upload_id']}"
    alice.put_parts(ticket, noisy_png, [1])

    assert not aborted(cleanup(services, dry_run=True))  # open, within its TTL
    past_ttl = Services(services.settings.model_copy(update={"multipart_ttl_seconds": 0}))

    assert aborted(cleanup(past_ttl, dry_run=True)) >= {key}
    assert key in [item.key for item in services.storage.list_temp_multipart_uploads()]
    assert key in aborted(cleanup(past_ttl))
    assert key not in [item.key for item in services.storage.list_temp_multipart_uploads()]
    past_ttl.db.dispose()


def aborted(report) -> set[str]:
    return {a["key"] for a in report.actions if a["stage"] == "abort_multipart"}


def test_part_plans_stay_within_s3_limits():
    assert plan_parts(1024 * MiB, 8 * MiB).part_count == 128
    huge = plan_parts(100 * 1024 * MiB, 8 * MiB)  # 100 GiB would need 12,800 parts of 8 MiB
    assert huge.part_count <= 10_000 and huge.part_size % MiB == 0
    assert plan_parts(6 * MiB, 1 * MiB).part_size == 5 * MiB  # S3's minimum
    last = plan_parts(21 * MiB, 8 * MiB)
    assert [last.part_length(n) for n in (1, 2, 3)] == [8 * MiB, 8 * MiB, 5 * MiB]


def test_the_store_refuses_part_urls_used_beyond_what_they_sign(alice, serve_with, noisy_png, services):
    """Each part URL signs its part's exact length, for at most the ticket TTL (the local gate enforces
    both as S3 does; moto alone would store all of these)."""
    short_lived = BrokerClient(serve_with(ticket_ttl_seconds=1).url, alice.token)
    ticket = resumable_ticket(short_lived, noisy_png)
    upload_id = ticket["upload_id"]
    [part] = short_lived.part_urls(upload_id, [1]).json()["parts"]
    chunk = noisy_png[: 8 * MiB]

    longer = requests.put(part["url"], data=chunk + b"x", timeout=30)
    assert (longer.status_code, b"SignatureDoesNotMatch" in longer.content) == (403, True)
    forged = part["url"].replace("X-Amz-Signature=", "X-Amz-Signature=0")
    refused = requests.put(forged, data=chunk, headers=part["headers"], timeout=30)
    assert (refused.status_code, b"SignatureDoesNotMatch" in refused.content) == (403, True)
    time.sleep(2.1)
    expired = requests.put(part["url"], data=chunk, headers=part["headers"], timeout=30)
    assert (expired.status_code, b"Request has expired" in expired.content) == (403, True)

    assert short_lived.stored_parts(upload_id).json()["parts"] == []  # none of them stored anything
