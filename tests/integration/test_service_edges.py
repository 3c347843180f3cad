"""Health, readiness, the CDN URL, RS256 tokens from a JWKS, and the structured logs of a real worker."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from app.devstack.processes import free_port
from tests import images
from tests.conftest import client_for
from tests.support import REPO, BrokerClient, settings_env


def test_liveness_and_readiness(api):
    assert requests.get(f"{api.url}/healthz", timeout=10).json() == {"status": "ok"}
    ready = requests.get(f"{api.url}/readyz", timeout=10)
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"database": "ok", "redis": "ok", "s3": "ok"}}


def test_readiness_reports_each_dependency(serve_with):
    broken = serve_with(redis_url=f"redis://127.0.0.1:{free_port()}/0", s3_bucket="no-such-bucket")
    ready = requests.get(f"{broken.url}/readyz", timeout=30)
    assert ready.status_code == 503
    checks = ready.json()["checks"]
    assert checks["database"] == "ok"
    assert checks["redis"].startswith("error")
    assert checks["s3"].startswith("error")


def test_public_media_links_use_the_cdn(alice: BrokerClient, drain, serve_with):
    upload_id = alice.upload("avatar", "image/png", images.png_with_alpha())
    alice.wait_status(upload_id, {"uploaded"})
    drain()
    cdn = serve_with(public_base_url="https://cdn.fitness.example/")
    as_seen_through_cdn = BrokerClient(cdn.url, alice.token).media(upload_id).json()
    assert as_seen_through_cdn["url"].startswith("https://cdn.fitness.example/public/user_")
    assert as_seen_through_cdn["url"].endswith(f"/profile/{upload_id}.jpg")


class _Jwks(BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args) -> None:
        pass


def test_rs256_tokens_are_verified_with_keys_from_the_jwks_url(serve_with):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    _Jwks.body = json.dumps({"keys": [{**public, "kid": "app-2026", "use": "sig", "alg": "RS256"}]}).encode()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Jwks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        api = serve_with(jwt_secret=None, jwt_jwks_url=f"http://127.0.0.1:{server.server_port}/jwks.json")
        claims = {"sub": str(uuid.uuid4()), "exp": datetime.now(UTC) + timedelta(minutes=5)}
        signed = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "app-2026"})
        assert BrokerClient(api.url, signed).request_ticket("avatar", "image/jpeg", 10).status_code == 201
        other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        forged = jwt.encode(claims, other_key, algorithm="RS256", headers={"kid": "app-2026"})
        assert BrokerClient(api.url, forged).request_ticket("avatar", "image/jpeg", 10).status_code == 401
        hs256 = client_for(api)  # signed with the shared secret, which this deployment does not trust
        assert hs256.request_ticket("avatar", "image/jpeg", 10).status_code == 401
    finally:
        server.shutdown()


def test_a_worker_logs_every_step_as_json_with_upload_key_stage_and_outcome(alice: BrokerClient, settings):
    good = alice.upload("avatar", "image/jpeg", images.jpeg(300, 200))
    bad = alice.upload("avatar", "image/jpeg", b"<html>" * 50)
    for upload_id in (good, bad):
        alice.wait_status(upload_id, {"uploaded"})

    worker = subprocess.run(
        [sys.executable, "-m", "app.cli", "worker", "--burst"],
        env=settings_env(settings),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert worker.returncode == 0, worker.stderr
    records = [json.loads(line) for line in worker.stderr.splitlines() if line.startswith("{")]
    steps = {(r.get("upload_id"), r.get("stage"), r.get("outcome")) for r in records}
    assert {(good, "fetch", "ok"), (good, "image", "ok"), (good, "done", "ready")} <= steps
    assert (bad, "validate", "rejected") in steps
    rejected = next(r for r in records if r.get("upload_id") == bad and r.get("outcome") == "rejected")
    assert rejected["key"] == f"temp/{bad}"
    assert rejected["code"] == "type_mismatch"
    assert rejected["level"] == "WARNING"
    assert alice.status(good).json()["status"] == "ready"


def test_readiness_answers_within_its_deadline_while_redis_and_s3_stall(serve_with, tmp_path):
    """A SIGSTOPped Redis and an S3 that accepts connections but never answers: `/readyz` says which, fast."""
    import os
    import signal
    import socket
    import time

    from app.devstack.redis_server import start_redis

    redis_url, redis_process = start_redis(tmp_path)
    silent = socket.create_server(("127.0.0.1", 0))  # listens, never reads: every request stalls
    stalled = serve_with(
        redis_url=redis_url, s3_internal_endpoint_url=f"http://127.0.0.1:{silent.getsockname()[1]}"
    )
    try:
        os.kill(redis_process.process.pid, signal.SIGSTOP)
        for _ in range(3):  # again and again during the outage: each answer as fast, no thread piles up
            started = time.monotonic()
            ready = requests.get(f"{stalled.url}/readyz", timeout=30)
            assert time.monotonic() - started < 4  # the 2 s deadline, plus HTTP on a busy 2-core machine
            assert ready.status_code == 503
            checks = ready.json()["checks"]
            assert checks["database"] == "ok"
            assert checks["redis"] in ("timeout", "error: TimeoutError")
            assert checks["s3"] in ("timeout", "error: ReadTimeoutError", "error: ConnectTimeoutError")
        os.kill(redis_process.process.pid, signal.SIGCONT)
        deadline = time.monotonic() + 15
        while requests.get(f"{stalled.url}/readyz", timeout=30).json()["checks"]["redis"] != "ok":
            assert time.monotonic() < deadline, "Redis never reported back after SIGCONT"
            time.sleep(0.2)
    finally:
        os.kill(redis_process.process.pid, signal.SIGCONT)
        redis_process.stop()
        silent.close()


def test_a_delete_the_store_does_not_answer_is_503_and_the_repeat_finishes_it(
    alice, drain, serve_with, services
):
    upload_id = alice.upload(
        "workout_photo", "image/jpeg", images.jpeg(400, 300), context={"workout_id": "w-1"}
    )
    alice.wait_status(upload_id, {"uploaded"})
    drain()
    media = alice.media(upload_id).json()
    nowhere = f"http://127.0.0.1:{free_port()}"
    storeless = serve_with(s3_endpoint_url=nowhere, s3_internal_endpoint_url=nowhere)

    answer = requests.delete(f"{storeless.url}/v1/media/{upload_id}", headers=alice.headers, timeout=60)
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "store_unavailable"
    assert answer.headers["Retry-After"] == "5"
    assert requests.get(media["url"], timeout=10).status_code == 200  # the file is still in the store

    repeated = requests.delete(f"{alice.api_url}/v1/media/{upload_id}", headers=alice.headers, timeout=30)
    assert repeated.status_code == 204
    assert requests.get(media["url"], timeout=10).status_code in (403, 404)  # gone now
