"""One current avatar per user, over real interfaces: a newer ready avatar supersedes the previous one (object
deleted, record kept, old link 404), the newest *ticket* wins when processing finishes out of order, and
`GET /v1/users/<uid>/avatar` answers the current one to any signed-in user."""

from __future__ import annotations

import uuid

import jwt
import requests

from app.avatars import supersede_older
from app.repository import get_upload
from tests import images
from tests.support import BrokerClient


def avatar_url(client: BrokerClient, user_id: str) -> requests.Response:
    return requests.get(f"{client.api_url}/v1/users/{user_id}/avatar", headers=client.headers, timeout=10)


def user_of(client: BrokerClient) -> str:
    return str(jwt.decode(client.token, options={"verify_signature": False})["sub"])


def post_ticket(client: BrokerClient, ticket: dict, data: bytes) -> str:
    stored = client.post_to_store(ticket, data)
    assert stored.status_code in (200, 201, 204), stored.text
    client.wait_status(ticket["upload_id"], {"uploaded"})
    return str(ticket["upload_id"])


def test_a_new_avatar_supersedes_the_previous_one(alice, bob, drain):
    first_data, second_data = images.jpeg(800, 800), images.jpeg(640, 640)
    first = post_ticket(alice, alice.ticket("avatar", "image/jpeg", first_data), first_data)
    drain()
    first_link = alice.media(first).json()["url"]
    assert requests.get(first_link, timeout=10).status_code == 200
    assert avatar_url(bob, user_of(alice)).json()["upload_id"] == first

    second = post_ticket(alice, alice.ticket("avatar", "image/jpeg", second_data), second_data)
    drain()

    assert alice.status(second).json()["status"] == "ready"
    assert alice.status(first).json()["status"] == "superseded"  # the record is kept
    assert alice.media(first).status_code == 404
    assert requests.get(first_link, timeout=10).status_code == 404  # the object is gone
    current = avatar_url(bob, user_of(alice))
    assert current.status_code == 200
    assert current.json()["upload_id"] == second
    assert current.json()["width"] == 640


def test_the_newest_ticket_stays_current_when_avatars_finish_out_of_order(alice, drain, services):
    older_data, newer_data = images.jpeg(500, 500), images.jpeg(400, 400)
    older_ticket = alice.ticket("avatar", "image/jpeg", older_data)
    newer_ticket = alice.ticket("avatar", "image/jpeg", newer_data)

    newer = post_ticket(alice, newer_ticket, newer_data)  # the newer one is processed first...
    drain()
    older = post_ticket(alice, older_ticket, older_data)  # ...and the older one last
    drain()

    assert alice.status(newer).json()["status"] == "ready"
    assert alice.status(older).json()["status"] == "superseded"
    assert avatar_url(alice, user_of(alice)).json()["upload_id"] == newer

    # A replayed follow-up changes nothing.
    with services.db.session() as session:
        replayed = get_upload(session, older)
    supersede_older(services, replayed)
    assert alice.status(newer).json()["status"] == "ready"
    assert services.storage.head(
        alice.media(newer).json()["url"].split(f"/{services.settings.s3_bucket}/")[1]
    )


def test_no_avatar_is_a_404(alice):
    assert avatar_url(alice, str(uuid.uuid4())).status_code == 404
    assert avatar_url(alice, "not-a-uuid").status_code == 404
