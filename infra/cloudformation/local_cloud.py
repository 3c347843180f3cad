"""Deploy upload-broker.yaml into a local moto server, and finish what moto's CloudFormation leaves out.

moto 5.2.5's CloudFormation creates the stack's buckets (with their encryption only), topic, queue and roles
(with their inline policies), and skips, with a warning, every other property and resource type this template
uses: a bucket's CORS, lifecycle, public access block, ownership controls and notification configuration,
`AWS::S3::BucketPolicy`, `AWS::SNS::TopicPolicy`, `AWS::SNS::Subscription`, `AWS::SQS::QueuePolicy` and all of
CloudFront (so deploy with EnableCdn=false: the distribution's outputs cannot be resolved there). It also
stores a role's inline policy as a Python dict where IAM keeps JSON, so the role answers GetRolePolicy with
`{'Version': ...}` and moto's own IAM enforcement cannot read it.

`deploy` therefore creates the stack through moto's CloudFormation, then reads the same template, resolves
its intrinsic functions against the stack's parameters and the resources moto made, and applies the skipped
parts through the ordinary S3 / SNS / SQS APIs, so every resource can be inspected through the real APIs.

    python infra/cloudformation/local_cloud.py              # a moto server of its own, example parameters
    python infra/cloudformation/local_cloud.py --endpoint http://127.0.0.1:5000 \
        MediaBucketName=demo-media AppOrigins=http://localhost:3000 \
        WebhookUrl=https://localhost:8000/v1/events/s3 EnableCdn=false
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from cfnlint.decode import cfn_yaml

from app.devstack.bucket_template import bucket_cors, bucket_lifecycle, bucket_notifications

TEMPLATE = Path(__file__).with_name("upload-broker.yaml")
REGION = "us-east-1"
NO_VALUE = object()  # AWS::NoValue: the key or list item disappears


@dataclass
class Stack:
    """A template with its parameters and the physical resources moto created, enough to resolve it."""

    template: dict[str, Any]
    parameters: dict[str, Any]
    physical: dict[str, str]  # logical id -> physical id (bucket name, topic ARN, queue URL, role name)
    account: str
    region: str = REGION
    name: str = "upload-broker"
    conditions: dict[str, bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key, spec in self.template.get("Parameters", {}).items():
            value = self.parameters.get(key, spec.get("Default"))
            if spec.get("Type") == "CommaDelimitedList" and isinstance(value, str):
                value = [item.strip() for item in value.split(",")] if value else []
            self.parameters[key] = value
        for key, expression in self.template.get("Conditions", {}).items():
            self.conditions[key] = bool(self.resolve(expression))

    def ref(self, name: str) -> Any:
        pseudo = {
            "AWS::Region": self.region,
            "AWS::AccountId": self.account,
            "AWS::Partition": "aws",
            "AWS::StackName": self.name,
            "AWS::NoValue": NO_VALUE,
        }
        if name in pseudo:
            return pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        return self.physical[name]

    def get_att(self, name: str, attribute: str) -> str:
        kind = self.template["Resources"][name]["Type"]
        physical = self.physical[name]
        attributes = {
            ("AWS::S3::Bucket", "Arn"): f"arn:aws:s3:::{physical}",
            ("AWS::S3::Bucket", "RegionalDomainName"): f"{physical}.s3.{self.region}.amazonaws.com",
            (
                "AWS::SQS::Queue",
                "Arn",
            ): f"arn:aws:sqs:{self.region}:{self.account}:{physical.rsplit('/', 1)[-1]}",
            ("AWS::IAM::Role", "Arn"): f"arn:aws:iam::{self.account}:role/{physical}",
            ("AWS::CloudFront::OriginAccessControl", "Id"): physical,
            ("AWS::CloudFront::Distribution", "DomainName"): f"{physical.lower()}.cloudfront.net",
        }
        return attributes[(kind, attribute)]

    def sub(self, text: str) -> str:
        out, rest = "", text
        while "${" in rest:
            before, _, after = rest.partition("${")
            name, _, rest = after.partition("}")
            value = self.get_att(*name.split(".", 1)) if "." in name else self.ref(name)
            out += before + str(value)
        return out + rest

    def resolve(self, node: Any) -> Any:
        if isinstance(node, list):
            return [item for item in (self.resolve(item) for item in node) if item is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, arg),) = node.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Condition":
                return self.conditions[arg]
            if key == "Fn::Sub":
                return self.sub(arg)
            if key == "Fn::GetAtt":
                return self.get_att(*(arg.split(".", 1) if isinstance(arg, str) else arg))
            if key == "Fn::If":
                name, when_true, when_false = arg
                return self.resolve(when_true if self.conditions[name] else when_false)
            if key == "Fn::Equals":
                left, right = self.resolve(arg)
                return left == right
            if key == "Fn::Not":
                return not self.resolve(arg[0])
            if key == "Fn::And":
                return all(self.resolve(arg))
            if key == "Fn::Or":
                return any(self.resolve(arg))
            if key == "Fn::Join":
                separator, items = arg
                return separator.join(self.resolve(items))
            if key.startswith("Fn::"):
                raise NotImplementedError(key)
        return {
            key: value
            for key, value in ((k, self.resolve(v)) for k, v in node.items())
            if value is not NO_VALUE
        }

    def resources(self, kind: str) -> list[tuple[str, dict[str, Any]]]:
        """The resources of one type that this stack creates, with their properties resolved."""
        chosen = []
        for name, spec in self.template["Resources"].items():
            if spec["Type"] == kind and self.conditions.get(spec.get("Condition", ""), True):
                chosen.append((name, self.resolve(spec.get("Properties", {}))))
        return chosen


# --- what moto's CloudFormation skips, applied through the APIs (bucket shapes: app.devstack.bucket_template) ---
def moto_can_evaluate(statement: dict[str, Any]) -> bool:
    """moto evaluates a policy's conditions without the request's context, as if they all held: a Deny on
    `aws:SecureTransport` false would refuse every request there (and the local endpoint is plain HTTP)."""
    return not (
        statement["Effect"] == "Deny" and "aws:SecureTransport" in json.dumps(statement.get("Condition"))
    )


def complete(stack: Stack, endpoint: str) -> None:
    """Apply, through the APIs, what moto's CloudFormation skipped or stored wrongly."""
    s3, sns, sqs, iam = (client(name, endpoint) for name in ("s3", "sns", "sqs", "iam"))
    for name, properties in stack.resources("AWS::IAM::Role"):
        for policy in properties.get("Policies", []):
            document = json.dumps(policy["PolicyDocument"])
            iam.put_role_policy(
                RoleName=stack.physical[name], PolicyName=policy["PolicyName"], PolicyDocument=document
            )
    for _, properties in stack.resources("AWS::S3::Bucket"):
        bucket = properties["BucketName"]
        if "PublicAccessBlockConfiguration" in properties:
            config = properties["PublicAccessBlockConfiguration"]
            s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=config)
        if "OwnershipControls" in properties:
            s3.put_bucket_ownership_controls(Bucket=bucket, OwnershipControls=properties["OwnershipControls"])
        if "CorsConfiguration" in properties:
            s3.put_bucket_cors(Bucket=bucket, CORSConfiguration=bucket_cors(properties))
        if "LifecycleConfiguration" in properties:
            configuration = bucket_lifecycle(properties)
            s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration=configuration)
    # The notification needs the topic policy first, as in AWS (the template's DependsOn).
    for _, properties in stack.resources("AWS::SNS::TopicPolicy"):
        for topic in properties["Topics"]:
            policy = json.dumps(properties["PolicyDocument"])
            sns.set_topic_attributes(TopicArn=topic, AttributeName="Policy", AttributeValue=policy)
    for _, properties in stack.resources("AWS::S3::Bucket"):
        if "NotificationConfiguration" in properties:
            s3.put_bucket_notification_configuration(
                Bucket=properties["BucketName"], NotificationConfiguration=bucket_notifications(properties)
            )
    for _, properties in stack.resources("AWS::S3::BucketPolicy"):
        document = dict(properties["PolicyDocument"])
        document["Statement"] = [s for s in document["Statement"] if moto_can_evaluate(s)]
        if document["Statement"]:
            s3.put_bucket_policy(Bucket=properties["Bucket"], Policy=json.dumps(document))
    for _, properties in stack.resources("AWS::SQS::QueuePolicy"):
        for queue in properties["Queues"]:
            sqs.set_queue_attributes(
                QueueUrl=queue, Attributes={"Policy": json.dumps(properties["PolicyDocument"])}
            )
    for _, properties in stack.resources("AWS::SNS::Subscription"):
        attributes = {
            key: json.dumps(properties[key])
            for key in ("DeliveryPolicy", "RedrivePolicy")
            if key in properties
        }
        sns.subscribe(
            TopicArn=properties["TopicArn"],
            Protocol=properties["Protocol"],
            Endpoint=properties["Endpoint"],
            Attributes=attributes,
        )


def client(service: str, endpoint: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    return cfn_yaml.load(str(path))


def deploy(
    endpoint: str, stack_name: str, parameters: dict[str, str], path: Path = TEMPLATE
) -> dict[str, str]:
    """Create the stack in moto, complete it, and return its outputs."""
    cloudformation = client("cloudformation", endpoint)
    cloudformation.create_stack(
        StackName=stack_name,
        TemplateBody=path.read_text(),
        Parameters=[{"ParameterKey": key, "ParameterValue": value} for key, value in parameters.items()],
        Capabilities=["CAPABILITY_IAM"],
    )
    cloudformation.get_waiter("stack_create_complete").wait(
        StackName=stack_name, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
    )
    summaries = cloudformation.list_stack_resources(StackName=stack_name)["StackResourceSummaries"]
    # moto lists the resource types it skipped too, with neither logical nor physical id.
    physical = {
        r["LogicalResourceId"]: r["PhysicalResourceId"] for r in summaries if r.get("LogicalResourceId")
    }
    account = client("sts", endpoint).get_caller_identity()["Account"]
    stack = Stack(load_template(path), dict(parameters), physical, account, name=stack_name)
    complete(stack, endpoint)
    described = cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]
    return {output["OutputKey"]: output["OutputValue"] for output in described.get("Outputs", [])}


def describe(endpoint: str, outputs: dict[str, str]) -> dict[str, Any]:
    """Every resource of the stack as the APIs answer for it (what a new user wants to see)."""
    s3, sns, iam = (client(name, endpoint) for name in ("s3", "sns", "iam"))

    def answer(call: Any, key: str, **kwargs: Any) -> Any:
        try:
            return call(**kwargs).get(key)
        except s3.exceptions.ClientError as error:
            return error.response["Error"]["Code"]

    seen: dict[str, Any] = {}
    for bucket in dict.fromkeys([outputs["MediaBucketName"], outputs["PublicBucketName"]]):
        seen[f"s3://{bucket}"] = {
            "encryption": answer(
                s3.get_bucket_encryption, "ServerSideEncryptionConfiguration", Bucket=bucket
            ),
            "public_access_block": answer(
                s3.get_public_access_block, "PublicAccessBlockConfiguration", Bucket=bucket
            ),
            "ownership": answer(s3.get_bucket_ownership_controls, "OwnershipControls", Bucket=bucket),
            "cors": answer(s3.get_bucket_cors, "CORSRules", Bucket=bucket),
            "lifecycle": answer(s3.get_bucket_lifecycle_configuration, "Rules", Bucket=bucket),
            "notifications": answer(
                s3.get_bucket_notification_configuration, "TopicConfigurations", Bucket=bucket
            ),
            "policy": answer(s3.get_bucket_policy, "Policy", Bucket=bucket),
        }
    topic = outputs["EventsTopicArn"]
    seen[topic] = {
        "policy": json.loads(sns.get_topic_attributes(TopicArn=topic)["Attributes"]["Policy"]),
        "subscriptions": sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"],
    }
    for output in ("ApiRoleArn", "WorkerRoleArn"):
        role = outputs[output].rsplit("/", 1)[-1]
        seen[outputs[output]] = {
            "trust": iam.get_role(RoleName=role)["Role"]["AssumeRolePolicyDocument"],
            "policies": {
                name: iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
                for name in iam.list_role_policies(RoleName=role)["PolicyNames"]
            },
        }
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--endpoint", help="a running moto server [default: start one on 127.0.0.1 for this run only]"
    )
    parser.add_argument("--stack", default="upload-broker")
    parser.add_argument("parameters", nargs="*", metavar="KEY=VALUE", help=f"defaults: {EXAMPLE_PARAMETERS}")
    args = parser.parse_args()
    parameters = EXAMPLE_PARAMETERS | dict(item.split("=", 1) for item in args.parameters)
    with _moto_server(args.endpoint) as endpoint:
        outputs = deploy(endpoint, args.stack, parameters)
        seen = {"outputs": outputs, "resources": describe(endpoint, outputs)}
    json.dump(seen, sys.stdout, indent=2, default=str)
    print()


# What a first look needs; EnableCdn=false because moto has no CloudFront in CloudFormation.
EXAMPLE_PARAMETERS = {
    "MediaBucketName": "upload-broker-media",
    "AppOrigins": "http://localhost:3000",
    "WebhookUrl": "https://localhost:8000/v1/events/s3",
    "EnableCdn": "false",
}


@contextlib.contextmanager
def _moto_server(endpoint: str | None) -> Iterator[str]:
    if endpoint:
        yield endpoint
        return
    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:  # a free port on loopback
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


if __name__ == "__main__":
    main()
