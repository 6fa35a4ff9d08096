"""The OpenAPI document covers the native API and all four seed surfaces, with examples,
and every reference in it resolves (a viewer such as /docs can render every body)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from producer.stack import Stack


@pytest.fixture(scope="module")
def document(pg_stack: Stack) -> dict[str, Any]:
    answer = httpx.get(f"{pg_stack.api_url}/openapi.json", timeout=30)
    assert answer.status_code == 200, answer.text
    doc: dict[str, Any] = answer.json()
    return doc


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_every_reference_in_the_document_resolves(document: dict[str, Any]) -> None:
    components = document.get("components", {}).get("schemas", {})
    dangling = {
        ref
        for ref in _refs(document)
        if not (ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in components)
    }
    assert dangling == set()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/v1/messages"),
        (
            "post",
            "/mobileservices/push/v2/backend/applications/{applicationId}/notifications/users",
        ),
        ("post", "/mobileservices/push/v1/backend/capabilities/{capability}/notifications"),
        ("post", "/{application_id}/{api_key}/messaging/{channel_name}"),
        ("post", "/push/2/message/single"),
        ("post", "/cm/events"),
    ],
)
def test_each_surfaces_push_route_is_documented_with_its_json_body(
    document: dict[str, Any], method: str, path: str
) -> None:
    operation = document["paths"][path][method]
    media = operation["requestBody"]["content"]["application/json"]
    assert media["schema"].get("properties") or media["schema"].get("$ref")


@pytest.mark.parametrize(
    ("path", "example_text"),
    [
        (
            "/mobileservices/push/v2/backend/applications/{applicationId}/notifications/users",
            "notifications",
        ),
        ("/{application_id}/{api_key}/messaging/{channel_name}", "pushBroadcast"),
        ("/push/2/message/single", "destinations"),
        ("/cm/events", "ClientInstalled"),
    ],
)
def test_seed_routes_carry_the_seeds_examples(
    document: dict[str, Any], path: str, example_text: str
) -> None:
    media = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]
    assert media.get("examples"), f"{path} has no examples"
    assert example_text in str(media["examples"])


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, op)
        for path, item in document["paths"].items()
        for method, op in item.items()
        if method in ("get", "put", "post", "delete", "patch")
    ]


def _error_schema(document: dict[str, Any], path: str) -> str:
    if path.startswith("/{application_id}/{api_key}/messaging"):
        return "ErrorAnswer"
    if path.startswith(("/push/", "/mobile/")):
        return "InfobipError"
    if path.startswith("/mobileservices/push/"):
        return "SapError"
    if path.startswith("/microbizz/"):
        return "MicrobizzErrorAnswer"
    return "ErrorBody"


def test_every_operation_documents_its_error_statuses_in_its_surfaces_schema(
    document: dict[str, Any],
) -> None:
    missing = []
    for method, path, op in _operations(document):
        want = {"400", "500"} | ({"401", "429", "503"} if path != "/v1/health" else set())
        if path == "/v1/ready":  # its 503 is the readiness report, naming what is not ready
            want.discard("503")
            ready = op["responses"]["503"]["content"]["application/json"]["schema"]
            assert ready == {"$ref": "#/components/schemas/ReadyOut"}
        if "requestBody" in op:
            want |= {"413"} | (set() if path.startswith("/{application_id}") else {"415"})
        for status in sorted(want):
            schema = op["responses"].get(status, {}).get("content", {})
            schema = schema.get("application/json", {}).get("schema", {})
            expected = f"#/components/schemas/{_error_schema(document, path)}"
            if schema.get("$ref") != expected:
                missing.append(f"{method.upper()} {path} {status}: {schema or 'undocumented'}")
    assert missing == []


def test_fastapis_own_validation_error_is_documented_nowhere(document: dict[str, Any]) -> None:
    assert "HTTPValidationError" not in str(document)
    assert all("422" not in op["responses"] for _, p, op in _operations(document) if p[:3] == "/v1")
