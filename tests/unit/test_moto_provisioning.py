"""The dev stack's moto answers nobody but its provisioner until its buckets, topic and wiring exist: a
restarted local S3 is never seen empty. (The whole restart, through the real processes, is in
tests/e2e/test_dev_supervision.py.)"""

from __future__ import annotations

from typing import Any

from werkzeug.test import Client

from app.devstack.local_s3 import PROVISIONED_PATH, PROVISIONING_HEADER
from app.devstack.moto_server import UntilProvisioned
from app.devstack.provision import Wiring


def moto(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"moto"]


def test_everyone_but_the_provisioner_waits_until_it_is_done():
    gate = UntilProvisioned(moto)
    client = Client(gate)
    waiting = client.get("/upload-broker/temp/x")
    assert waiting.status_code == 503
    assert waiting.headers["Retry-After"] == "1"
    assert b"<Code>ServiceUnavailable</Code>" in waiting.data  # S3's own code: every S3 client retries it
    assert client.get(PROVISIONED_PATH).status_code == 503
    assert client.put("/upload-broker", headers={PROVISIONING_HEADER: "1"}).data == b"moto"

    gate.done.set()
    assert client.get(PROVISIONED_PATH).status_code == 200
    assert client.get("/upload-broker/temp/x").data == b"moto"


def test_the_wiring_travels_as_json():
    wiring = Wiring(("media", "public-media"), "media", "http://127.0.0.1:8000/v1/events/s3")
    assert Wiring.from_json(wiring.to_json()) == wiring
