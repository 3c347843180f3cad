"""An optional bucket of its own for public media (`BROKER_S3_PUBLIC_BUCKET`): private and temporary objects
never share a bucket (and its policy) with what the CDN serves."""

from __future__ import annotations

import uuid

import requests

from app.devstack.local_s3 import create_bucket
from tests import images
from tests.support import BrokerClient
from workers import context
from workers.worker import InProcessWorker


def test_public_media_are_promoted_to_the_public_bucket_and_deleted_from_it(
    serve_with, alice, local_s3, settings, services
):
    public_bucket = f"broker-public-{uuid.uuid4().hex[:8]}"
    create_bucket(local_s3, public_bucket)
    api = serve_with(s3_public_bucket=public_bucket)
    client = BrokerClient(api.url, alice.token)
    own = api.services
    photo_id = client.upload("food_image", "image/jpeg", images.jpeg(640, 480))
    client.wait_status(photo_id, {"uploaded"})  # the temp object is in the main bucket, whose events we get
    context.use_services(own)
    try:
        InProcessWorker(own.processing_queues, connection=own.redis).work(burst=True, with_scheduler=False)
    finally:
        context.use_services(services)

    media = client.media(photo_id).json()
    assert f"/{public_bucket}/public/" in media["url"]
    assert requests.get(media["url"], timeout=10).status_code == 200
    s3 = local_s3.client("s3")
    key = media["url"].split(f"/{public_bucket}/", 1)[1]
    assert s3.list_objects_v2(Bucket=settings.s3_bucket, Prefix=key).get("KeyCount") == 0

    assert client.cancel(photo_id).status_code == 204  # deleting the upload removes its public object
    assert s3.list_objects_v2(Bucket=public_bucket, Prefix=key).get("KeyCount") == 0
