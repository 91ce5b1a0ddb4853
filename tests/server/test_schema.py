"""Property-based API testing with schemathesis: requests generated from the server's own OpenAPI
schema never get a 500, and every response matches the schema."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

# Runtime limits (max tokens, body bytes, sessions per tenant) rightly refuse some requests the
# static schema allows, so "every schema-valid request is accepted" is not checked; the rest is.
KEY = {"Authorization": "Bearer schema-key-0123456789"}


def test_the_api_holds_to_its_schema(start_server, tmp_path):
    server = start_server(tmp_path / "data", "--api-key", "schema-key-0123456789", "--max-new-tokens", "16")
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 14
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=12, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def holds(case):
            # a generous read timeout: a busy machine must not turn a slow answer into a failure
            case.call_and_validate(headers=KEY, excluded_checks=[positive_data_acceptance], timeout=120)

        holds()
