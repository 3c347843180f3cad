"""The local bucket is configured from the CloudFormation template (one source for production and
`broker dev`): its CORS, lifecycle and event notification are the template's."""

from __future__ import annotations

from app.devstack.bucket_template import load_template


def test_the_local_bucket_has_the_templates_cors_lifecycle_and_notification(local_s3, settings, api):
    s3 = local_s3.client("s3")
    bucket = load_template()["Resources"]["MediaBucket"]["Properties"]

    [cors] = s3.get_bucket_cors(Bucket=settings.s3_bucket)["CORSRules"]
    [template_cors] = bucket["CorsConfiguration"]["CorsRules"]
    assert cors["AllowedMethods"] == template_cors["AllowedMethods"]  # POST tickets and PUT parts
    assert cors["ExposeHeaders"] == template_cors["ExposedHeaders"] == ["ETag"]
    assert cors["AllowedOrigins"] == ["*"]  # locally any origin; production: the AppOrigins parameter

    rules = s3.get_bucket_lifecycle_configuration(Bucket=settings.s3_bucket)["Rules"]
    assert [rule["ID"] for rule in rules] == [
        rule["Id"] for rule in bucket["LifecycleConfiguration"]["Rules"]
    ]
    aborts = [rule for rule in rules if "AbortIncompleteMultipartUpload" in rule]
    assert aborts[0]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}

    [topic] = s3.get_bucket_notification_configuration(Bucket=settings.s3_bucket)["TopicConfigurations"]
    assert topic["TopicArn"] == settings.sns_topic_arn
    assert topic["Events"] == ["s3:ObjectCreated:*"]
    assert topic["Filter"]["Key"]["FilterRules"] == [{"Name": "prefix", "Value": "temp/"}]
