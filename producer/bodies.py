"""JSON request bodies: read by hand (so bad JSON is a 400 in each service's own error shape,
never FastAPI's), and still documented in the OpenAPI schema with the services' examples."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fastapi import Request
from pydantic import BaseModel

from producer.errors import InvalidRequest


def inline_defs(schema: dict[str, Any]) -> dict[str, Any]:
    """The JSON schema with its (non-recursive) `$defs` written in place: an operation's own
    schema cannot point into `$defs`, and these models have no components of their own."""
    defs = schema.get("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return walk(defs[ref.removeprefix("#/$defs/")])
            return {k: walk(v) for k, v in node.items() if k != "$defs"}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    inlined: dict[str, Any] = walk(schema)
    return inlined


def json_body(
    model: type[BaseModel], examples: Mapping[str, Any] | None = None, *, by_alias: bool = True
) -> dict[str, Any]:
    """`openapi_extra` for a route whose JSON body is `model`, with named examples."""
    media: dict[str, Any] = {"schema": inline_defs(model.model_json_schema(by_alias=by_alias))}
    if examples:
        media["examples"] = dict(examples)
    return {"requestBody": {"required": True, "content": {"application/json": media}}}


def invalid(field: str, rule: str, code: int | None = None) -> InvalidRequest:
    """A 400 naming the field and the rule it broke."""
    return InvalidRequest(f"{field}: {rule}", [{"field": field, "rule": rule}], code=code)


async def read_json(request: Request) -> Any:
    """The body as JSON; malformed JSON (the seeds' own samples have trailing commas) is a
    400 naming the syntax error, and nothing is repaired."""
    raw = await request.body()
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise invalid("body", f"malformed JSON: {exc}") from exc
