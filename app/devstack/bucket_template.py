"""The media bucket's configuration as the CloudFormation template defines it, for the local stack too.

`infra/cloudformation/upload-broker.yaml` is the one source of the bucket's CORS rules, lifecycle rules and
event notification. Production gets them by deploying the template; `broker dev` and the tests read the same
resource here and apply it to the local bucket through the S3 API, so the two cannot drift apart. (moto's own
CloudFormation skips exactly these bucket properties, which is why they are applied by hand.)

Only the media bucket's properties are read, and they use one intrinsic function: `!Ref` of a parameter
(the app origins) or of the events topic, which the caller supplies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

TEMPLATE = Path(__file__).resolve().parents[2] / "infra" / "cloudformation" / "upload-broker.yaml"
MEDIA_BUCKET = "MediaBucket"


class _TemplateLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short forms: `!Ref X` → `{"Ref": X}`, `!Sub s` → `{"Fn::Sub": s}`, …"""


def _short_form(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if suffix in ("Ref", "Condition"):
        return {suffix: value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


_TemplateLoader.add_multi_constructor("!", _short_form)


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    with path.open() as stream:
        return yaml.load(stream, Loader=_TemplateLoader)


# What the local bucket takes from the template; encryption, public access and ownership are AWS's business.
LOCAL_PROPERTIES = ("CorsConfiguration", "LifecycleConfiguration", "NotificationConfiguration")


def media_bucket_properties(refs: dict[str, Any], template: dict[str, Any] | None = None) -> dict[str, Any]:
    """The media bucket's CORS, lifecycle and notification properties, with every `Ref` replaced from `refs`
    (`AppOrigins`, `EventsTopic`); a reference `refs` does not name is an error, never silently dropped."""
    properties = (template or load_template())["Resources"][MEDIA_BUCKET]["Properties"]
    return {name: _resolve(properties[name], refs) for name in LOCAL_PROPERTIES}


def _resolve(node: Any, refs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_resolve(item, refs) for item in node]
    if isinstance(node, dict):
        if set(node) == {"Ref"}:
            return refs[node["Ref"]]
        return {key: _resolve(value, refs) for key, value in node.items()}
    return node


# --- CloudFormation properties → S3 API shapes ---------------------------------------------------------------
def bucket_cors(properties: dict[str, Any]) -> dict[str, Any]:
    names = {
        "Id": "ID",
        "AllowedMethods": "AllowedMethods",
        "AllowedOrigins": "AllowedOrigins",
        "AllowedHeaders": "AllowedHeaders",
        "ExposedHeaders": "ExposeHeaders",
        "MaxAge": "MaxAgeSeconds",
    }
    rules = properties["CorsConfiguration"]["CorsRules"]
    return {"CORSRules": [{names[key]: value for key, value in rule.items()} for rule in rules]}


def bucket_lifecycle(properties: dict[str, Any]) -> dict[str, Any]:
    rules = []
    for rule in properties["LifecycleConfiguration"]["Rules"]:
        api: dict[str, Any] = {"ID": rule["Id"], "Status": rule["Status"]}
        api["Filter"] = {"Prefix": rule.get("Prefix", "")}
        if "ExpirationInDays" in rule:
            api["Expiration"] = {"Days": rule["ExpirationInDays"]}
        if "AbortIncompleteMultipartUpload" in rule:
            api["AbortIncompleteMultipartUpload"] = rule["AbortIncompleteMultipartUpload"]
        rules.append(api)
    return {"Rules": rules}


def bucket_notifications(properties: dict[str, Any]) -> dict[str, Any]:
    topics = []
    for item in properties["NotificationConfiguration"].get("TopicConfigurations", []):
        api: dict[str, Any] = {"TopicArn": item["Topic"], "Events": [item["Event"]]}
        if "Filter" in item:
            api["Filter"] = {"Key": {"FilterRules": item["Filter"]["S3Key"]["Rules"]}}
        topics.append(api)
    return {"TopicConfigurations": topics}
