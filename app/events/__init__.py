"""Inbound event sources (S3 notifications via SNS or a direct webhook): authenticity checks live here."""
