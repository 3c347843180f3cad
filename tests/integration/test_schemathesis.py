"""Schemathesis against the served API over real HTTP: every documented operation, every check, 0 failures.

All checks means all that schemathesis 3.39 has for OpenAPI: the default set (`ALL_CHECKS`: no 5xx, statuses,
content types, headers and bodies as documented, negative data refused, auth not ignored) plus the ones its CLI
adds behind flags — `positive_data_acceptance` (data the schema allows is not refused as invalid),
`unsupported_method` and `missing_required_header`. Data is generated both ways (positive and negative), and
the coverage phase adds the boundary cases (empty strings, missing fields, wrong types, one past a limit).

Positive data may still be refused for what a schema cannot say: 409 (the upload's state), 413 (a kind's size
limit or the quota), 415 (a kind's content types) — never 422, which means "the schema says no".

Excluded, on purpose: `POST /v1/events/s3` (SNS messages must carry a valid AWS signature, and the direct path
a secret token; generated bodies can only ever be refused there, which test_webhook.py covers) and `/metrics`
(Prometheus text, not JSON). Examples are bounded and derandomized (a fixed seed), so the run is repeatable
and stays well under 2 minutes on a busy 2-core machine; the ticket rate limit is raised so 429 never
surprises the run. `SCHEMATHESIS_MAX_EXAMPLES` raises the bound for a deeper run by hand.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from typing import Any

import hypothesis
import jsonschema
import requests
import schemathesis
from schemathesis import Case, DataGenerationMethod, checks, experimental, hooks
from schemathesis.auths import AuthContext
from schemathesis.generation import GenerationConfig
from schemathesis.hooks import HookContext
from schemathesis.internal.checks import CheckConfig, PositiveDataAcceptanceConfig
from schemathesis.runner import events, from_schema
from schemathesis.specs.openapi.checks import (
    missing_required_header,
    positive_data_acceptance,
    unsupported_method,
)

from tests.conftest import client_for
from tests.support import ServedApp

FORMATS = jsonschema.Draft202012Validator.FORMAT_CHECKER  # `date` is asserted, as the server does
EXCLUDED = ("/v1/events/s3", "/metrics")
MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "30"))
SEED = 22
EVERY_CHECK = (*checks.ALL_CHECKS, positive_data_acceptance, unsupported_method, missing_required_header)
POSITIVE_MAY_BE_REFUSED_WITH = ["2xx", "401", "403", "404", "409", "413", "415"]


def _before_call(document: dict[str, Any]) -> Callable[[HookContext, Case], None]:
    """Two corrections of what schemathesis 3.39 generates, registered for this test only:
    - a cursor is opaque (only what `next_cursor` returned): no schema can say which strings are cursors, so
      positive cases send none; negative ones keep theirs (and get 422);
    - a mutation meant to make a body negative can leave it valid (an `anyOf` with `null`); a case of an
      operation without parameters whose body validates against its schema is then positive, as it is."""

    def before_call(context: HookContext, case: Case) -> None:
        if case.data_generation_method == DataGenerationMethod.positive and case.query:
            case.query.pop("cursor", None)
        operation = document["paths"][case.operation.path][case.operation.method.lower()]
        body = operation.get("requestBody")
        if (
            case.data_generation_method == DataGenerationMethod.negative
            and body
            and "parameters" not in operation
        ):
            schema = {**body["content"]["application/json"]["schema"], "components": document["components"]}
            validator = jsonschema.Draft202012Validator(schema, format_checker=FORMATS)
            if validator.is_valid(case.body):
                case.data_generation_method = DataGenerationMethod.positive

    return before_call


def _describe(event: events.AfterExecution) -> str:
    errors = [error.exception for error in event.result.errors]
    failed = sorted(
        {
            f"{check.name} ({check.example.method} {check.example.url} query={check.example.query} "
            f"media_type={check.example.media_type} headers={check.example.headers} body={check.example.body!r} -> {check.response.status_code if check.response else None}): "
            f"{check.message}"
            for check in event.result.checks
            if check.value.name == "failure"
        }
    )
    return f"{event.result.verbose_name}: {event.status.name} {errors[:1]} {failed[:5]}"


def test_the_api_conforms_to_its_openapi_document(serve_with) -> None:
    served: ServedApp = serve_with(ticket_rate_limit="100000/minute")
    document = copy.deepcopy(requests.get(f"{served.url}/openapi.json", timeout=10).json())
    for path in EXCLUDED:
        document["paths"].pop(path, None)
    # OpenAPI 3.1 and the coverage phase are behind flags in schemathesis 3.x.
    experimental.OPEN_API_3_1.enable()
    experimental.COVERAGE_PHASE.enable()
    schema = schemathesis.from_dict(
        document,
        base_url=served.url,
        data_generation_methods=DataGenerationMethod.all(),
        # The bearer token is set on every case below; generated (and mutated) Authorization headers would
        # only be overwritten, leaving cases marked negative whose data is all valid.
        generation_config=GenerationConfig(with_security_parameters=False),
    )

    token = client_for(served).headers["Authorization"]

    @schema.auth()
    class _Bearer:
        """The token on every case (the `ignored_auth` check sends each once without it, expecting 401)."""

        def get(self, case: Case, context: AuthContext) -> str:
            return token

        def set(self, case: Case, data: str, context: AuthContext) -> None:
            case.headers = {**(case.headers or {}), "Authorization": data}

    runner = from_schema(
        schema,
        checks=EVERY_CHECK,
        checks_config=CheckConfig(
            positive_data_acceptance=PositiveDataAcceptanceConfig(
                allowed_statuses=POSITIVE_MAY_BE_REFUSED_WITH
            )
        ),
        request_timeout=10_000,  # milliseconds
        seed=SEED,
        hypothesis_settings=hypothesis.settings(
            max_examples=MAX_EXAMPLES,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=list(hypothesis.HealthCheck),
        ),
    )
    failures: list[str] = []
    cases: set[str] = set()
    finished = None
    before_call = hooks.register(_before_call(document))
    try:
        for event in runner.execute():
            if isinstance(event, events.AfterExecution):
                cases.update(check.example.id for check in event.result.checks)
                if event.status.name != "success":
                    failures.append(_describe(event))
            if isinstance(event, events.Finished):
                finished = event
    finally:
        hooks.unregister(before_call)
    assert finished is not None
    assert finished.passed_count > 0
    print(f"schemathesis: {len(cases)} cases, {len(failures)} operations failing")  # shown with -s
    assert failures == [], "\n".join(failures)
