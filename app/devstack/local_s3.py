"""The local S3 + SNS: a moto server on loopback behind the POST-policy gate, wired to the broker's webhook.

moto alone accepts any browser POST whatever its policy says; the gate (see `policy_gate`) enforces the
policy as AWS does, so tickets are tested for real. SNS stays on moto itself: it signs its notifications
for real and serves the signing certificate at `/<name>.pem`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from app.devstack.bucket_template import (
    bucket_cors,
    bucket_lifecycle,
    bucket_notifications,
    media_bucket_properties,
)
from app.devstack.processes import LOOPBACK, ManagedProcess, free_port, python_module

# Credentials of the local stack only; moto accepts any, the gate checks signatures against these.
LOCAL_ACCESS_KEY = "local-broker"
LOCAL_SECRET_KEY = "local-broker-secret"
LOCAL_REGION = "us-east-1"
TOPIC_NAME = "upload-broker-events"

# The moto server of `broker dev` provisions itself (`app.devstack.provision`): until it is done it answers
# everyone but requests with this header 503, and this path 503 (then 200).
PROVISIONING_HEADER = "X-Local-Stack-Provisioning"
PROVISIONED_PATH = "/_local/provisioned"

# Locally any origin may upload: the ticket is the authority. Every other rule is the template's.
LOCAL_ORIGINS = ["*"]


def local_credentials_env() -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": LOCAL_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": LOCAL_SECRET_KEY,
        "AWS_DEFAULT_REGION": LOCAL_REGION,
    }


@dataclass
class LocalS3:
    moto_url: str  # SNS, the certificate host, and S3 for the broker's own requests
    s3_url: str  # the gate: S3 as clients see it (presigned URLs and public links name it)
    processes: list[ManagedProcess] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)  # added to every request of `client()`

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()

    def client(self, service: str) -> Any:
        endpoint = self.s3_url if service == "s3" else self.moto_url
        client = boto3.client(
            service,
            endpoint_url=endpoint,
            region_name=LOCAL_REGION,
            aws_access_key_id=LOCAL_ACCESS_KEY,
            aws_secret_access_key=LOCAL_SECRET_KEY,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )
        if self.headers:
            client.meta.events.register("before-sign.*.*", self._add_headers)
        return client

    def _add_headers(self, request: Any, **_: Any) -> None:
        for name, value in self.headers.items():
            request.headers[name] = value


def start_local_s3(log_dir: Path, provision: str | None = None) -> LocalS3:
    """moto and the gate on free ports. With `provision` (a `provision.Wiring` as JSON), moto makes the
    stack's buckets, topic and wiring itself whenever it starts, a restart included, and serves nobody else
    until they exist; this returns once they do."""
    moto_port, gate_port = free_port(), free_port()
    argv = python_module("app.devstack.moto_server", "--host", LOOPBACK, "--port", str(moto_port))
    moto = ManagedProcess("moto", [*argv, "--provision", provision] if provision else argv, log_dir)
    stack = LocalS3(f"http://{LOOPBACK}:{moto_port}", f"http://{LOOPBACK}:{gate_port}", [moto])
    try:
        moto.wait_http(f"{stack.moto_url}/moto-api/")
        if provision:
            moto.wait_http(f"{stack.moto_url}{PROVISIONED_PATH}", ok_only=True)
        gate = ManagedProcess(
            "s3-gate",
            python_module(
                "app.devstack.policy_gate",
                "--upstream",
                stack.moto_url,
                "--port",
                str(gate_port),
                "--credential",
                f"{LOCAL_ACCESS_KEY}:{LOCAL_SECRET_KEY}",
            ),
            log_dir,
        )
        stack.processes.append(gate)
        gate.wait_http(stack.s3_url)
    except Exception:
        stack.stop()
        raise
    return stack


def create_bucket(stack: LocalS3, bucket: str) -> None:
    """The bucket, with CORS for browser uploads and anonymous reads of `public/` only.

    In production a CDN in front of the bucket serves `public/` (BROKER_PUBLIC_BASE_URL); locally the
    bucket's own URL plays that part, so only `public/*` is readable without a signature.
    """
    s3 = stack.client("s3")
    s3.create_bucket(Bucket=bucket)
    # CORS and lifecycle exactly as the CloudFormation template gives them to the production bucket.
    template = media_bucket_properties({"AppOrigins": LOCAL_ORIGINS, "EventsTopic": None})
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration=bucket_cors(template))
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration=bucket_lifecycle(template))
    s3.put_bucket_policy(Bucket=bucket, Policy=public_read_policy(bucket))


def public_read_policy(bucket: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "PublicMediaRead",
                    "Effect": "Allow",
                    "Principal": "*",
                    "Action": "s3:GetObject",
                    "Resource": f"arn:aws:s3:::{bucket}/public/*",
                }
            ],
        }
    )


def create_topic(stack: LocalS3, bucket: str) -> str:
    """The SNS topic S3 publishes to; created before the API starts so it can be told which topic to trust."""
    sns = stack.client("sns")
    topic_arn: str = sns.create_topic(Name=TOPIC_NAME)["TopicArn"]
    sns.set_topic_attributes(
        TopicArn=topic_arn, AttributeName="Policy", AttributeValue=topic_policy(topic_arn, bucket)
    )
    return topic_arn


def wire_notifications(stack: LocalS3, bucket: str, topic_arn: str, webhook_url: str) -> None:
    """S3 ObjectCreated under temp/ (the template's notification) → SNS topic → HTTP POST to the webhook.

    The webhook must already answer: SNS may send it a SubscriptionConfirmation on subscribe.
    """
    stack.client("sns").subscribe(TopicArn=topic_arn, Protocol="http", Endpoint=webhook_url)
    template = media_bucket_properties({"AppOrigins": LOCAL_ORIGINS, "EventsTopic": topic_arn})
    stack.client("s3").put_bucket_notification_configuration(
        Bucket=bucket, NotificationConfiguration=bucket_notifications(template)
    )


def topic_policy(topic_arn: str, bucket: str) -> str:
    """The topic policy AWS needs before S3 may publish (moto does not check it; set for parity with AWS)."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "s3.amazonaws.com"},
                    "Action": "SNS:Publish",
                    "Resource": topic_arn,
                    "Condition": {"ArnLike": {"aws:SourceArn": f"arn:aws:s3:::{bucket}"}},
                }
            ],
        }
    )
