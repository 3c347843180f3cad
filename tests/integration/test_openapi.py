"""`GET /openapi.json` documents every route the app serves, with the wire schemas."""

from __future__ import annotations

import re

import requests

from app import create_app
from schemas.uploads import UUID_PATTERN


def test_openapi_documents_every_route(api, services):
    spec = requests.get(f"{api.url}/openapi.json", timeout=10).json()

    assert spec["openapi"].startswith("3.1")
    documented = {(path, method.upper()) for path, ops in spec["paths"].items() for method in ops}
    app = create_app(services=services)
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (path, method) in documented, (path, method)
    ticket = spec["paths"]["/v1/uploads"]["post"]
    assert ticket["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "CreateUploadRequest"
    )
    assert "kind" in spec["components"]["schemas"]["CreateUploadRequest"]["properties"]
    assert spec["components"]["schemas"]["ErrorResponse"]


def test_every_operation_has_an_id_and_documents_the_edge_statuses(api) -> None:
    document = requests.get(f"{api.url}/openapi.json", timeout=10).json()
    ids = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            ids.append(operation["operationId"])
            responses = operation["responses"]
            if operation["security"]:
                assert "401" in responses, (method, path)
            if "{" in path:
                assert "404" in responses, (method, path)
                # Ids are UUIDs (a pattern: with `format` too, schemathesis' generation slows 30-fold); a document
                # is named by its owner (`[A-Za-z0-9_-]{1,64}`).
                assert all(
                    p["schema"].get("pattern") == UUID_PATTERN or p["name"] == "document_id"
                    for p in operation["parameters"]
                    if p["in"] == "path"
                )
            if method == "post":
                assert {"400", "413"} <= set(responses), (method, path)
    assert len(ids) == len(set(ids))
