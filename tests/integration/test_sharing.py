"""Access and sharing over HTTP: grants, revocation, listing, deletion, rate limits and quotas."""

from __future__ import annotations

import logging
import uuid
from concurrent.futures import ThreadPoolExecutor

import jwt
import pytest
import requests

from app.repository import get_upload
from tests import images
from tests.conftest import client_for
from tests.support import BrokerClient

MiB = 1024 * 1024


def ready_upload(client: BrokerClient, drain, kind: str = "workout_photo", **extra) -> str:
    if kind == "workout_photo":
        extra.setdefault("context", {"workout_id": "leg-day"})
    upload_id = client.upload(kind, "image/jpeg", images.jpeg(320, 240), **extra)
    client.wait_status(upload_id, {"uploaded"})
    drain()
    assert client.status(upload_id).json()["status"] == "ready"
    return upload_id


def user_id_of(client: BrokerClient) -> str:
    return jwt.decode(client.token, options={"verify_signature": False})["sub"]


def grant(owner: BrokerClient, viewer: BrokerClient, relation: str = "friend") -> requests.Response:
    body = {"viewer_id": user_id_of(viewer), "relation": relation}
    return requests.post(f"{owner.api_url}/v1/grants", json=body, headers=owner.headers, timeout=10)


def listing(client: BrokerClient, **params) -> requests.Response:
    return requests.get(f"{client.api_url}/v1/media", params=params, headers=client.headers, timeout=10)


def test_grant_lets_a_friend_see_private_media_until_revoked(alice, bob, drain):
    photo = ready_upload(alice, drain)
    assert bob.media(photo).status_code == 404
    assert listing(bob, owner=user_id_of(alice)).json()["items"] == []

    created = grant(alice, bob, "trainer")
    assert created.status_code == 201
    assert created.json()["relation"] == "trainer"
    assert grant(alice, bob, "friend").status_code == 200  # updating is not a second grant

    seen = bob.media(photo)
    assert seen.status_code == 200
    assert seen.json()["url_expires_at"]
    assert requests.get(seen.json()["url"], timeout=10).status_code == 200
    assert [m["upload_id"] for m in listing(bob, owner=user_id_of(alice)).json()["items"]] == [photo]
    given = requests.get(f"{alice.api_url}/v1/grants", headers=alice.headers, timeout=10).json()["grants"]
    assert [(g["viewer_id"], g["relation"]) for g in given] == [(user_id_of(bob), "friend")]
    received = requests.get(
        f"{bob.api_url}/v1/grants", params={"direction": "received"}, headers=bob.headers, timeout=10
    ).json()["grants"]
    assert [g["owner_id"] for g in received] == [user_id_of(alice)]

    revoked = requests.delete(
        f"{alice.api_url}/v1/grants/{user_id_of(bob)}", headers=alice.headers, timeout=10
    )
    assert revoked.status_code == 204
    assert bob.media(photo).status_code == 404  # the very next request
    assert listing(bob, owner=user_id_of(alice)).json()["items"] == []
    again = requests.delete(f"{alice.api_url}/v1/grants/{user_id_of(bob)}", headers=alice.headers, timeout=10)
    assert again.status_code == 204


def test_public_media_are_visible_to_other_users_private_are_not(alice, bob, drain):
    avatar = ready_upload(alice, drain, "avatar")
    private = ready_upload(alice, drain)

    assert bob.media(avatar).status_code == 200
    assert bob.media(private).status_code == 404
    assert [m["upload_id"] for m in listing(bob, owner=user_id_of(alice)).json()["items"]] == [avatar]


def test_listing_is_newest_first_filtered_and_cursor_paginated(alice, drain):
    ids = [ready_upload(alice, drain, "food_image") for _ in range(3)]
    ids.append(ready_upload(alice, drain, "avatar"))

    first = listing(alice, limit=2).json()
    assert [m["upload_id"] for m in first["items"]] == [ids[3], ids[2]]
    second = listing(alice, limit=2, cursor=first["next_cursor"]).json()
    assert [m["upload_id"] for m in second["items"]] == [ids[1], ids[0]]
    assert "next_cursor" not in second
    food = listing(alice, kind="food_image").json()["items"]
    assert [m["upload_id"] for m in food] == [ids[2], ids[1], ids[0]]
    assert listing(alice, cursor="garbage!").status_code == 422
    assert listing(alice, limit=0).status_code == 422


def test_owner_deletes_media_idempotently_and_objects_go(alice, bob, drain, services):
    photo = ready_upload(alice, drain)
    with services.db.session() as session:
        final_key = get_upload(session, photo).final_key
    assert services.storage.head(final_key) is not None

    assert (
        requests.delete(f"{bob.api_url}/v1/media/{photo}", headers=bob.headers, timeout=10).status_code == 404
    )
    gone = requests.delete(f"{alice.api_url}/v1/media/{photo}", headers=alice.headers, timeout=10)
    assert gone.status_code == 204
    assert services.storage.head(final_key) is None
    assert alice.status(photo).json()["status"] == "deleted"
    assert alice.media(photo).status_code == 404
    assert listing(alice).json()["items"] == []
    again = requests.delete(f"{alice.api_url}/v1/media/{photo}", headers=alice.headers, timeout=10)
    assert again.status_code == 204


def test_ticket_rate_limit_per_user(serve_with):
    served = serve_with(ticket_rate_limit="3/minute")
    carol, dave = client_for(served), client_for(served)
    codes = [carol.request_ticket("avatar", "image/jpeg", 10).status_code for _ in range(4)]
    assert codes == [201, 201, 201, 429]
    refused = carol.request_ticket("avatar", "image/jpeg", 10)
    assert refused.json()["error"]["code"] == "rate_limited"
    assert 0 < int(refused.headers["Retry-After"]) <= 60
    assert dave.request_ticket("avatar", "image/jpeg", 10).status_code == 201  # per user


def test_storage_quota_counts_stored_media_and_open_tickets(serve_with):
    served = serve_with(storage_quota_bytes=100_000)
    erin = client_for(served, str(uuid.uuid4()))
    assert erin.request_ticket("avatar", "image/jpeg", 60_000).status_code == 201
    over = erin.request_ticket("avatar", "image/jpeg", 50_000)
    assert over.status_code == 413
    assert over.json()["error"]["code"] == "quota_exceeded"
    assert erin.request_ticket("avatar", "image/jpeg", 40_000).status_code == 201


def six_at_once(client: BrokerClient, resumable: bool) -> list[requests.Response]:
    """Six 6 MiB ticket requests sent together (a resumable ticket needs >= 5 MiB)."""

    def ask(_: int) -> requests.Response:
        context = {"workout_id": "race"}
        return client.request_ticket(
            "workout_photo", "image/jpeg", 6 * MiB, context=context, resumable=resumable
        )

    with ThreadPoolExecutor(6) as pool:
        return list(pool.map(ask, range(6)))


@pytest.mark.parametrize("resumable", [False, True], ids=["post", "resumable"])
def test_tickets_sent_at_once_get_no_more_than_the_quota_and_leave_nothing_behind(serve_with, resumable):
    """An app sending six pictures at once, with room for one: one ticket, five 413s, and no multipart upload
    left open in the store for the refused ones."""
    served = serve_with(storage_quota_bytes=8 * MiB)
    frank = client_for(served, str(uuid.uuid4()))
    storage = served.services.storage
    open_before = {upload.key for upload in storage.list_temp_multipart_uploads()}

    answers = six_at_once(frank, resumable)
    assert sorted(a.status_code for a in answers) == [201] + [413] * 5
    assert {a.json()["error"]["code"] for a in answers if a.status_code == 413} == {"quota_exceeded"}
    [issued] = [a.json() for a in answers if a.status_code == 201]
    assert issued["upload"]["method"] == ("MULTIPART" if resumable else "POST")
    opened = {upload.key for upload in storage.list_temp_multipart_uploads()} - open_before
    assert opened == ({f"temp/{issued['upload_id']}"} if resumable else set())


def test_a_refused_resumable_ticket_is_refused_even_when_its_multipart_upload_cannot_be_aborted(
    serve_with, monkeypatch, caplog
):
    served = serve_with(storage_quota_bytes=8 * MiB)
    storage = served.services.storage
    open_before = {upload.key for upload in storage.list_temp_multipart_uploads()}

    def store_unreachable(key: str, multipart_id: str) -> None:
        raise ConnectionError("store unreachable")

    monkeypatch.setattr(storage, "abort_multipart", store_unreachable)
    with caplog.at_level(logging.WARNING, logger="app.tickets"):
        answers = six_at_once(client_for(served, str(uuid.uuid4())), resumable=True)
    assert sorted(a.status_code for a in answers) == [201] + [413] * 5  # refusals, not 500s
    left = [upload for upload in storage.list_temp_multipart_uploads() if upload.key not in open_before]
    not_aborted = [
        r for r in caplog.records if r.getMessage() == "refused ticket's multipart upload not aborted"
    ]
    assert len(left) == 1 + len(not_aborted)  # the issued one, and those left to the clean-up sweep
    for upload in left:
        storage.client.abort_multipart_upload(
            Bucket=storage.bucket, Key=upload.key, UploadId=upload.upload_id
        )


def test_media_asked_for_too_early_is_not_ready_for_its_owner_and_no_such_upload_for_anyone_else(
    alice, bob, drain
):
    """The README's poll step: right after the upload the owner is told "not ready yet" (409 `not_ready`,
    with the status), never "no such upload"; others learn nothing of it until it is ready."""
    ticket = alice.ticket("avatar", "image/jpeg", images.jpeg(64, 64))  # public once ready
    waiting = alice.media(ticket["upload_id"])
    assert waiting.status_code == 409
    assert waiting.json()["error"]["code"] == "not_ready"
    assert waiting.json()["error"]["status"] == "pending"
    assert int(waiting.headers["Retry-After"]) > 0

    upload_id = alice.upload("avatar", "image/jpeg", images.jpeg(64, 64))
    alice.wait_status(upload_id, {"uploaded"})
    early = alice.media(upload_id).json()["error"]
    assert (early["code"], early["status"]) == ("not_ready", "uploaded")
    assert bob.media(upload_id).json()["error"]["code"] == "not_found"

    drain()
    assert alice.media(upload_id).status_code == 200
    assert bob.media(upload_id).status_code == 200
