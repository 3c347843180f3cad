"""The CloudFormation template (infra/cloudformation/upload-broker.yaml): linted, policy-checked, deployed.

- cfn-lint (installed by the `infra` extra) and checkov must both pass with 0 errors. checkov pins old
  versions of boto3 and packaging, so it cannot share the project's environment: it gets a virtualenv of its
  own under the project's (`<venv>/tools/checkov`), made on first use and reused after.
- The template is deployed into a moto server of this module's own (its IAM enforcement is switched on and
  off, which the session's shared local stack must never see), completed where moto's CloudFormation skips
  properties (see infra/cloudformation/local_cloud.py), and every resource is read back through the APIs.
- With moto's IAM enforcement on, each role's own credentials (STS AssumeRole) prove what it may and may not
  do. moto checks only requests with an `Authorization` header, so a presigned POST or URL itself cannot be
  checked there; but S3 authorizes a presigned request exactly as the signer's own s3:PutObject on that key,
  which is what is denied or allowed below.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import subprocess
import sys
import uuid
from fnmatch import fnmatchcase
from pathlib import Path

import boto3
import pytest
import requests
from botocore.exceptions import ClientError

from app.devstack.processes import LOOPBACK, ManagedProcess, free_port, python_module

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "infra" / "cloudformation" / "upload-broker.yaml"
CHECKOV_VERSION = "3.3.30"
ORIGINS = ["https://app.example.com", "http://localhost:3000"]
# Connection refused at once: moto posts the notifications S3 raises to the subscription, and drops failures.
WEBHOOK = f"https://{LOOPBACK}:9/v1/events/s3"
PREFIXES = ("temp", "private", "public")


def load_local_cloud():
    spec = importlib.util.spec_from_file_location("local_cloud", TEMPLATE.with_name("local_cloud.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


local_cloud = load_local_cloud()


# --- lint and policy checks ------------------------------------------------------------------------------
def test_cfn_lint_passes():
    result = subprocess.run(
        [str(Path(sys.executable).with_name("cfn-lint")), str(TEMPLATE)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def checkov_executable() -> Path:
    """checkov in a virtualenv of its own (its pins clash with the project's), made once under a lock."""
    home = Path(sys.prefix) / "tools" / "checkov"
    executable = home / "bin" / "checkov"
    marker = home / f".installed-{CHECKOV_VERSION}"
    home.parent.mkdir(parents=True, exist_ok=True)
    with (home.parent / "checkov.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not marker.exists():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(home)], check=True)
            subprocess.run(
                [str(home / "bin" / "pip"), "install", "--quiet", f"checkov=={CHECKOV_VERSION}"],
                check=True,
                timeout=900,
            )
            marker.touch()
    return executable


@pytest.mark.timeout(1200)  # the first run installs checkov
def test_checkov_passes():
    result = subprocess.run(
        [
            str(checkov_executable()),
            "--file",
            str(TEMPLATE),
            "--framework",
            "cloudformation",
            "--skip-download",  # no network: the built-in checks only
            "--compact",
            "--quiet",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_skip_is_justified():
    template = local_cloud.load_template(TEMPLATE)
    for name, resource in template["Resources"].items():
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
            assert len(skip.get("comment", "")) > 40, f"{name}: {skip['id']} needs its reason"


# --- deployed into moto ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def moto_url(logs_dir: Path):
    port = free_port()
    server = ManagedProcess(
        f"moto-infra-{port}", python_module("moto.server", "-H", LOOPBACK, "-p", str(port)), logs_dir
    )
    url = f"http://{LOOPBACK}:{port}"
    try:
        server.wait_http(f"{url}/moto-api/")
        yield url
    finally:
        server.stop()


def aws(service: str, url: str, credentials: dict | None = None):
    keys = credentials or {"aws_access_key_id": "local", "aws_secret_access_key": "local"}
    return boto3.client(service, endpoint_url=url, region_name="us-east-1", **keys)


def deploy(url: str, public_bucket: bool) -> dict[str, str]:
    run = uuid.uuid4().hex[:10]
    parameters = {
        "MediaBucketName": f"media-{run}",
        "AppOrigins": ",".join(ORIGINS),
        "WebhookUrl": WEBHOOK,
        "EnableCdn": "false",  # moto's CloudFormation has no CloudFront
    }
    if public_bucket:
        parameters["PublicBucketName"] = f"public-{run}"
    return local_cloud.deploy(url, f"broker-{run}", parameters, TEMPLATE)


@pytest.fixture(scope="module", params=["one-bucket", "public-bucket"])
def stack(request, moto_url: str) -> dict[str, str]:
    return deploy(moto_url, public_bucket=request.param == "public-bucket")


def policy_of(url: str, role_arn: str) -> dict:
    iam = aws("iam", url)
    role = role_arn.rsplit("/", 1)[-1]
    assert iam.list_role_policies(RoleName=role)["PolicyNames"] == ["media"]
    assert iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"] == []
    document = iam.get_role_policy(RoleName=role, PolicyName="media")["PolicyDocument"]
    return json.loads(document) if isinstance(document, str) else document


def allows(policy: dict, action: str, resource: str) -> bool:
    """Identity-policy evaluation for these Allow-only documents (wildcards as IAM matches them)."""

    def listed(value):
        return value if isinstance(value, list) else [value]

    return any(
        statement["Effect"] == "Allow"
        and any(fnmatchcase(action, a) for a in listed(statement["Action"]))
        and any(fnmatchcase(resource, r) for r in listed(statement["Resource"]))
        for statement in policy["Statement"]
    )


def test_outputs_name_everything_the_broker_needs(stack):
    assert stack["MediaBucketName"].startswith("media-")
    assert stack["PublicBucketName"].startswith(("media-", "public-"))
    assert stack["Region"] == "us-east-1"
    assert stack["EventsTopicArn"].endswith(f":{stack['MediaBucketName']}-events")
    assert stack["ApiRoleArn"].startswith("arn:aws:iam::") and stack["WorkerRoleArn"].startswith(
        "arn:aws:iam::"
    )
    assert "CdnDomainName" not in stack and "PublicBaseUrl" not in stack  # CDN off here


def test_buckets_are_private_encrypted_and_owner_enforced(stack, moto_url):
    s3 = aws("s3", moto_url)
    for bucket in {stack["MediaBucketName"], stack["PublicBucketName"]}:
        rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
        assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
        block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        assert block == {
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        }
        ownership = s3.get_bucket_ownership_controls(Bucket=bucket)["OwnershipControls"]["Rules"]
        assert ownership == [{"ObjectOwnership": "BucketOwnerEnforced"}]
        assert "Status" not in s3.get_bucket_versioning(Bucket=bucket)  # never enabled
        # CDN off: the bucket policy only refuses plain HTTP, which moto cannot evaluate (local_cloud), so the
        # policy is checked on the resolved template below and is absent from moto.
        with pytest.raises(ClientError, match="NoSuchBucketPolicy"):
            s3.get_bucket_policy(Bucket=bucket)


@pytest.mark.parametrize("public_bucket", ["", "media-public"])
def test_bucket_policies_refuse_plain_http(public_bucket):
    stack = resolved(public_bucket, cdn=False)
    policies = {
        p["Bucket"]: p["PolicyDocument"]["Statement"] for _, p in stack.resources("AWS::S3::BucketPolicy")
    }
    assert sorted(policies) == sorted({"media", public_bucket or "media"})
    for bucket, (statement,) in policies.items():
        assert statement == {
            "Sid": "DenyInsecureTransport",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        }


def test_media_bucket_cors_and_lifecycle(stack, moto_url):
    s3 = aws("s3", moto_url)
    bucket = stack["MediaBucketName"]
    (rule,) = s3.get_bucket_cors(Bucket=bucket)["CORSRules"]
    assert rule["AllowedOrigins"] == ORIGINS
    assert sorted(rule["AllowedMethods"]) == ["GET", "HEAD", "POST", "PUT"]
    assert rule["ExposeHeaders"] == ["ETag"]
    rules = {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}
    assert rules["expire-temp-uploads"]["Filter"] == {"Prefix": "temp/"}
    assert rules["expire-temp-uploads"]["Expiration"] == {"Days": 1}
    assert rules["abort-incomplete-multipart-uploads"]["AbortIncompleteMultipartUpload"] == {
        "DaysAfterInitiation": 1
    }
    assert all(r["Status"] == "Enabled" for r in rules.values())


def test_uploads_under_temp_notify_the_topic(stack, moto_url):
    s3 = aws("s3", moto_url)
    notification = s3.get_bucket_notification_configuration(Bucket=stack["MediaBucketName"])
    (topic,) = notification["TopicConfigurations"]
    assert topic["TopicArn"] == stack["EventsTopicArn"]
    assert topic["Events"] == ["s3:ObjectCreated:*"]
    assert topic["Filter"]["Key"]["FilterRules"] == [{"Name": "prefix", "Value": "temp/"}]
    if stack["PublicBucketName"] != stack["MediaBucketName"]:
        assert not s3.get_bucket_notification_configuration(Bucket=stack["PublicBucketName"]).get(
            "TopicConfigurations"
        )


def test_only_the_media_bucket_may_publish(stack, moto_url):
    sns = aws("sns", moto_url)
    attributes = sns.get_topic_attributes(TopicArn=stack["EventsTopicArn"])["Attributes"]
    (statement,) = json.loads(attributes["Policy"])["Statement"]
    assert statement["Principal"] == {"Service": "s3.amazonaws.com"}
    assert statement["Action"] == "sns:Publish"
    assert statement["Resource"] == stack["EventsTopicArn"]
    assert statement["Condition"] == {
        "ArnLike": {"aws:SourceArn": f"arn:aws:s3:::{stack['MediaBucketName']}"},
        "StringEquals": {"aws:SourceAccount": "123456789012"},
    }


def test_webhook_subscription_with_dead_letter_queue(stack, moto_url):
    sns, sqs = aws("sns", moto_url), aws("sqs", moto_url)
    (subscription,) = sns.list_subscriptions_by_topic(TopicArn=stack["EventsTopicArn"])["Subscriptions"]
    assert (subscription["Protocol"], subscription["Endpoint"]) == ("https", WEBHOOK)
    attributes = sns.get_subscription_attributes(SubscriptionArn=subscription["SubscriptionArn"])[
        "Attributes"
    ]
    queue_url = stack["EventsDeadLetterQueueUrl"]
    queue = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
    assert json.loads(attributes["RedrivePolicy"]) == {"deadLetterTargetArn": queue["QueueArn"]}
    assert json.loads(attributes["DeliveryPolicy"])["healthyRetryPolicy"]["numRetries"] == 10
    (statement,) = json.loads(queue["Policy"])["Statement"]
    assert statement["Principal"] == {"Service": "sns.amazonaws.com"}
    assert statement["Condition"] == {"ArnEquals": {"aws:SourceArn": stack["EventsTopicArn"]}}


def test_role_policies_are_least_privilege(stack, moto_url):
    media, public = stack["MediaBucketName"], stack["PublicBucketName"]
    api, worker = policy_of(moto_url, stack["ApiRoleArn"]), policy_of(moto_url, stack["WorkerRoleArn"])
    buckets = {media, public}
    for policy in (api, worker):
        for statement in policy["Statement"]:
            assert statement["Effect"] == "Allow" and "Condition" not in statement
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            assert all(a.startswith("s3:") and "*" not in a for a in actions), actions
            resources = statement["Resource"]
            for resource in resources if isinstance(resources, list) else [resources]:
                bucket, _, key = resource.removeprefix("arn:aws:s3:::").partition("/")
                assert bucket in buckets, resource
                assert key in ("", *(f"{prefix}/*" for prefix in PREFIXES)), resource  # no bucket-wide keys

    def obj(prefix):
        return f"arn:aws:s3:::{public if prefix == 'public' else media}/{prefix}/x"

    expected = [
        # the API: tickets and multipart on temp/ only, private links, deletes; never writes final media
        (api, "s3:PutObject", obj("temp"), True),
        (api, "s3:AbortMultipartUpload", obj("temp"), True),
        (api, "s3:ListMultipartUploadParts", obj("temp"), True),
        (api, "s3:GetObject", obj("private"), True),
        (api, "s3:DeleteObject", obj("private"), True),
        (api, "s3:DeleteObject", obj("public"), True),
        (api, "s3:PutObject", obj("public"), False),
        (api, "s3:PutObject", obj("private"), False),
        (api, "s3:GetObject", obj("temp"), False),
        (api, "s3:GetObject", obj("public"), False),
        (api, "s3:ListBucketMultipartUploads", f"arn:aws:s3:::{media}", False),
        (api, "s3:ListBucket", f"arn:aws:s3:::{media}", True),
        # the worker: reads and drops uploads, writes final media; can never sign a ticket
        (worker, "s3:PutObject", obj("temp"), False),
        (worker, "s3:ListMultipartUploadParts", obj("temp"), False),
        (worker, "s3:GetObject", obj("temp"), True),
        (worker, "s3:DeleteObject", obj("temp"), True),
        (worker, "s3:AbortMultipartUpload", obj("temp"), True),
        (worker, "s3:PutObject", obj("public"), True),
        (worker, "s3:PutObject", obj("private"), True),
        (worker, "s3:DeleteObject", obj("public"), True),
        (worker, "s3:GetObject", obj("public"), False),
        (worker, "s3:ListBucket", f"arn:aws:s3:::{media}", True),
        (worker, "s3:ListBucketMultipartUploads", f"arn:aws:s3:::{media}", True),
    ]
    wrong = [(a, r, want) for p, a, r, want in expected if allows(p, a, r) != want]
    assert not wrong
    if public != media:  # nothing of public/ stays in the media bucket, nor of temp/ in the public one
        assert not allows(worker, "s3:PutObject", f"arn:aws:s3:::{media}/public/x")
        assert not allows(worker, "s3:PutObject", f"arn:aws:s3:::{public}/private/x")


# --- IAM enforced by moto, with each role's own credentials ------------------------------------------------
def assume(url: str, role_arn: str) -> dict:
    credentials = aws("sts", url).assume_role(RoleArn=role_arn, RoleSessionName="test")["Credentials"]
    return {
        "aws_access_key_id": credentials["AccessKeyId"],
        "aws_secret_access_key": credentials["SecretAccessKey"],
        "aws_session_token": credentials["SessionToken"],
    }


def denied(call, **kwargs) -> bool:
    try:
        call(**kwargs)
    except ClientError as error:
        assert error.response["Error"]["Code"] == "AccessDenied", error.response
        return True
    return False


def test_each_role_can_do_only_its_part(stack, moto_url):
    media, public = stack["MediaBucketName"], stack["PublicBucketName"]
    api = aws("s3", moto_url, assume(moto_url, stack["ApiRoleArn"]))
    worker = aws("s3", moto_url, assume(moto_url, stack["WorkerRoleArn"]))
    requests.post(f"{moto_url}/moto-api/reset-auth", data=b"0", timeout=5).raise_for_status()
    try:
        # The API lands uploads in temp/ (a POST ticket or a part URL is this same s3:PutObject)...
        api.put_object(Bucket=media, Key="temp/upload-1", Body=b"x")
        multipart = api.create_multipart_upload(Bucket=media, Key="temp/upload-2")["UploadId"]
        api.list_parts(Bucket=media, Key="temp/upload-2", UploadId=multipart)
        api.abort_multipart_upload(Bucket=media, Key="temp/upload-2", UploadId=multipart)
        # ...and cannot write processed media, nor read what users uploaded.
        assert denied(api.put_object, Bucket=public, Key="public/forged.jpg", Body=b"x")
        assert denied(api.put_object, Bucket=media, Key="private/forged.jpg", Body=b"x")
        assert denied(api.get_object, Bucket=media, Key="temp/upload-1")
        assert denied(api.list_multipart_uploads, Bucket=media, Prefix="temp/")

        # The worker reads the upload, promotes it, drops it; it cannot put anything new into temp/, so no
        # ticket or part URL it signed would ever be honoured.
        assert worker.get_object(Bucket=media, Key="temp/upload-1")["Body"].read() == b"x"
        worker.put_object(Bucket=public, Key="public/upload-1.jpg", Body=b"y")
        worker.put_object(Bucket=media, Key="private/upload-1.jpg", Body=b"y")
        worker.list_multipart_uploads(Bucket=media, Prefix="temp/")
        worker.delete_object(Bucket=media, Key="temp/upload-1")
        assert denied(worker.put_object, Bucket=media, Key="temp/forged", Body=b"x")
        assert denied(worker.create_multipart_upload, Bucket=media, Key="temp/forged")

        # Deleting media is the API's (DELETE /v1/media/<id>).
        api.delete_object(Bucket=public, Key="public/upload-1.jpg")
        api.delete_object(Bucket=media, Key="private/upload-1.jpg")
    finally:
        requests.post(f"{moto_url}/moto-api/reset-auth", data=b"inf", timeout=5).raise_for_status()


# --- the CDN half, which moto cannot deploy: checked on the resolved template --------------------------------
def resolved(public_bucket: str, cdn: bool):
    """The template resolved as CloudFormation would, with made-up physical ids."""
    template = local_cloud.load_template(TEMPLATE)
    physical = {name: name.lower() for name in template["Resources"]}
    physical |= {"MediaBucket": "media", "CdnDistribution": "E2EXAMPLE", "CdnOriginAccessControl": "OAC1"}
    if public_bucket:
        physical["PublicBucket"] = public_bucket
    parameters = {
        "MediaBucketName": "media",
        "PublicBucketName": public_bucket,
        "EnableCdn": str(cdn).lower(),
    }
    parameters |= {"AppOrigins": ",".join(ORIGINS), "WebhookUrl": WEBHOOK}
    return local_cloud.Stack(template, parameters, physical, "1" * 12)


@pytest.mark.parametrize("public_bucket", ["", "media-public"])
def test_cdn_reads_only_public_media(public_bucket):
    stack = resolved(public_bucket, cdn=True)
    public = public_bucket or "media"
    ((_, distribution),) = stack.resources("AWS::CloudFront::Distribution")
    config = distribution["DistributionConfig"]
    (origin,) = config["Origins"]
    assert origin["DomainName"] == f"{public}.s3.us-east-1.amazonaws.com"
    assert origin["OriginAccessControlId"] == "OAC1"
    assert config["DefaultCacheBehavior"]["AllowedMethods"] == ["GET", "HEAD"]
    assert config["DefaultCacheBehavior"]["ViewerProtocolPolicy"] == "redirect-to-https"
    policies = {
        p["Bucket"]: p["PolicyDocument"]["Statement"] for _, p in stack.resources("AWS::S3::BucketPolicy")
    }
    cdn = [s for statements in policies.values() for s in statements if s["Sid"] == "CdnReadsPublicMediaOnly"]
    assert [policy for policy, statements in policies.items() if len(statements) == 2] == [public]
    assert cdn == [
        {
            "Sid": "CdnReadsPublicMediaOnly",
            "Effect": "Allow",
            "Principal": {"Service": "cloudfront.amazonaws.com"},
            "Action": "s3:GetObject",
            "Resource": f"arn:aws:s3:::{public}/public/*",
            "Condition": {
                "StringEquals": {"AWS:SourceArn": "arn:aws:cloudfront::111111111111:distribution/E2EXAMPLE"}
            },
        }
    ]


def test_one_command_deploys_into_a_moto_server_of_its_own():
    """The README's one command: no server to start first, example parameters, every resource printed."""
    deployed = subprocess.run(
        [sys.executable, str(TEMPLATE.with_name("local_cloud.py")), "AppOrigins=https://app.example.com"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert deployed.returncode == 0, deployed.stderr[-2000:]
    seen = json.loads(deployed.stdout)
    assert seen["outputs"]["MediaBucketName"] == "upload-broker-media"
    media = seen["resources"]["s3://upload-broker-media"]
    assert media["cors"][0]["AllowedOrigins"] == ["https://app.example.com"]
    assert {"ApiRoleArn", "WorkerRoleArn", "EventsTopicArn"} <= set(seen["outputs"])
