"""The OpenAPI document of the middleware's own endpoints: its structure, then fuzzing the live app from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aiobligations import Obligations
from aiobligations.keys import init_project
from aiobligations.middleware.openapi import openapi_document
from aiobligations.middleware.operators import token_digest

ME = {"Authorization": "Bearer my-key"}


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def test_the_document_is_openapi_3_1_and_covers_every_route() -> None:
    doc = openapi_document()
    json.dumps(doc)  # Serialisable as is.
    assert doc["openapi"].startswith("3.1")
    assert doc["components"]["securitySchemes"]["subjectKey"] == {
        **doc["components"]["securitySchemes"]["subjectKey"], "type": "http", "scheme": "bearer"}
    assert set(doc["paths"]) == {
        "/ai/explanations", "/ai/explanations/{request_id}", "/ai/explanations/{request_id}/complaints",
        "/ai/complaints", "/ai/receipts/{interaction_id}", "/.well-known/ai-transparency",
        "/ai/transparency", "/ai/checkpoint", "/ai/health", "/.well-known/security.txt",
        "/ai/operator/requests", "/ai/operator/requests/{request_id}", "/ai/operator/requests/{request_id}/review",
        "/ai/operator/requests/{request_id}/answer", "/ai/operator/requests/{request_id}/reject",
        "/ai/operator/requests/{request_id}/resolve", "/ai/operator/complaints",
        "/ai/operator/complaints/{request_id}/resolve",
        "/ai/operator/incidents", "/ai/operator/incidents/{incident_id}", "/ai/operator/takeover", "/ai/operator/termination",
        "/ai/incidents/{incident_id}",
    }
    assert all(operation["security"] == [{"operatorToken": []}] for path, item in doc["paths"].items()
               if "/operator/" in path for method, operation in item.items() if method != "parameters")
    schemas = doc["components"]["schemas"]
    for ref in _refs(doc):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, (path, method, status)
    ask = schemas["ExplanationAsk"]
    assert ask["required"] == ["interaction_id", "question"]
    assert ask["properties"]["question"]["maxLength"] == 20_000
    assert schemas["Complaint"]["properties"]["category"]["enum"] == ["general", "ip", "report"]


def test_the_prefix_moves_the_ai_paths_but_not_well_known() -> None:
    paths = set(openapi_document("/compliance/")["paths"])
    assert "/compliance/explanations" in paths and "/.well-known/ai-transparency" in paths
    assert not any(path.startswith("/ai/") for path in paths)


def test_the_document_is_a_valid_openapi_schema_for_schemathesis() -> None:
    schemathesis = pytest.importorskip("schemathesis")
    schema = schemathesis.openapi.from_dict(openapi_document())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 27


@pytest.fixture
def hub(tmp_path: Path):
    obligations = Obligations.from_file(init_project(tmp_path))
    yield obligations
    obligations.close()


def _fuzz_targets() -> list[str]:
    return [f"{method.upper()} {path}" for path, item in openapi_document()["paths"].items()
            for method in item if method != "parameters"]


@pytest.mark.parametrize("target", _fuzz_targets())
def test_fuzz_the_live_endpoints(hub, target: str) -> None:
    """Generated cases never get a 5xx, and every response is one the document names, shaped as it says."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings

    from aiobligations.demo import build_app, wrap
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    schema = schemathesis.openapi.from_dict(openapi_document())
    app = wrap(build_app(stream_delay=0), hub)
    # The subject's POSTs are rate limited (429, documented); lift the limits so the fuzzer reaches
    # the handlers instead of the limiter.
    desk_endpoints = app.endpoints.requests
    desk_endpoints.subject_limiter = desk_endpoints.address_limiter = None
    # The same token is an operator's too, so that the operator endpoints reach their handlers.
    desk_endpoints._operator_tokens = ((token_digest(ME["Authorization"].split(" ", 1)[1]), "fuzzer"),)
    schema.app = app
    method, path = target.split(" ", 1)
    operation = schema[path][method]
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]

    @settings(max_examples=50, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy())
    def run(case) -> None:
        response = case.call(headers=ME)
        case.validate_response(response, checks=checks)

    run()
