"""Request bodies the routes parse by hand (to answer bad JSON in each service's own way)
still belong in the OpenAPI document, with the services' examples."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel


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
