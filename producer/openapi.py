"""The OpenAPI document, completed: every operation lists every status it can answer, each
error in the schema of the surface the path belongs to.

FastAPI documents what a route declares; the answers that come from the layers around the
routes (producer.guard, producer.bodies, authentication, quotas, a store that is down) are
added here, once, for all routes, so the document cannot forget one. FastAPI's own 422
`HTTPValidationError` is removed: validation answers 400 in the surface's shape.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from pydantic import BaseModel

from producer.bodies import inline_defs

PUBLIC_PATHS = frozenset({"/v1/health"})
_METHODS = ("get", "put", "post", "delete", "patch", "options", "head")


@dataclass(frozen=True)
class ErrorDoc:
    """A surface's error schema and the paths it owns."""

    owns: Callable[[str], bool]
    model: type[BaseModel]
    #: Statuses the surface answers differently (Backendless: a 415 is its 400).
    never: frozenset[int] = field(default_factory=frozenset)


def statuses(path: str, operation: dict[str, Any]) -> set[int]:
    """Every error status an operation can answer."""
    found = {400, 500}  # a NUL in any parameter; an internal fault, never for bad input
    if path not in PUBLIC_PATHS:
        found |= {401, 403, 429, 503}  # key, role, quota, store or broker down
    if "{" in path:
        found.add(404)
    if "requestBody" in operation:
        found |= {413, 415}
    return found


def complete(doc: dict[str, Any], surfaces: Iterable[ErrorDoc], native: type[BaseModel]) -> None:
    """Add the missing error statuses to every operation of `doc`, in place."""
    schemas: dict[str, Any] = doc.setdefault("components", {}).setdefault("schemas", {})
    owners = list(surfaces)
    for model in (native, *(s.model for s in owners)):
        schemas.setdefault(_name(model), inline_defs(model.model_json_schema()))
    for path, item in doc.get("paths", {}).items():
        owner = next((s for s in owners if s.owns(path)), None)
        model, never = (owner.model, owner.never) if owner else (native, frozenset())
        ref = {"$ref": f"#/components/schemas/{_name(model)}"}
        for method in _METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            responses: dict[str, Any] = operation.setdefault("responses", {})
            _drop_fastapi_422(responses)
            for status in statuses(path, operation) - never:
                _document(responses, status, ref)
            for key, answer in list(responses.items()):
                code = str(key)
                if code.isdigit() and int(code) >= 400 and int(code) not in never:
                    _document(responses, int(code), ref, answer)
    for unused in ("HTTPValidationError", "ValidationError"):
        if unused not in str(doc.get("paths")):
            schemas.pop(unused, None)


def _name(model: type[BaseModel]) -> str:
    return model.__name__  # FastAPI's own name for a model it documents


def _drop_fastapi_422(responses: dict[str, Any]) -> None:
    answer = responses.get("422")
    if answer is not None and "HTTPValidationError" in str(answer):
        del responses["422"]


def _document(
    responses: dict[str, Any], status: int, ref: dict[str, str], answer: Any = None
) -> None:
    """The status with the error schema, keeping a description and examples given."""
    answer = answer if isinstance(answer, dict) else responses.get(str(status), {})
    answer.setdefault("description", HTTPStatus(status).phrase)
    media = answer.setdefault("content", {}).setdefault("application/json", {})
    media.setdefault("schema", ref)
    responses[str(status)] = answer
