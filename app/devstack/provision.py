"""What the local S3 + SNS must hold for the stack to work, made by the moto server itself whenever it starts.

moto keeps everything in memory: a restarted moto has no bucket, no topic, no subscription and no bucket
notification, and an upload would fail, or worse, land in a bucket that tells nobody. So the moto server of
`broker dev` is started with the stack's `Wiring` and provisions it before it serves anyone: until the
buckets (CORS, lifecycle, public-read policy), the topic (with its policy), the webhook's subscription and the
bucket's notification exist, every request but the provisioner's is answered `503 ServiceUnavailable` (which
S3 clients retry). The topic's ARN depends only on its name, region and moto's account, so a restarted moto
gives the running API the same one.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from app.devstack.local_s3 import (
    PROVISIONING_HEADER,
    LocalS3,
    create_bucket,
    create_topic,
    wire_notifications,
)


@dataclass(frozen=True)
class Wiring:
    buckets: tuple[str, ...]  # every bucket of the stack (the media bucket, a public one if configured)
    events_bucket: str  # whose ObjectCreated under temp/ goes to the topic
    webhook_url: str  # the broker's webhook, subscribed to the topic

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Wiring:
        values = json.loads(text)
        return cls(tuple(values["buckets"]), values["events_bucket"], values["webhook_url"])


def provision(moto_url: str, wiring: Wiring) -> str:
    """Buckets, topic, subscription and notification, straight at moto; idempotent. Returns the topic's ARN.

    The subscription needs no confirmation from the webhook (moto confirms HTTP subscriptions itself), and
    the test event S3 sends on a new notification configuration is lost harmlessly if the API is not up yet.
    """
    stack = LocalS3(moto_url, moto_url, headers={PROVISIONING_HEADER: "1"})
    for bucket in wiring.buckets:
        create_bucket(stack, bucket)
    topic_arn = create_topic(stack, wiring.events_bucket)
    wire_notifications(stack, wiring.events_bucket, topic_arn, wiring.webhook_url)
    return topic_arn
