"""The seed services' own APIs (SAP Mobile Services, Backendless, Infobip, CM.com,
Microbizz), each a thin translation onto the native Message / Registration model.

Each surface module exposes `owns(path) -> bool`, `router(settings, engine) -> APIRouter`
and `error_response(exc: PushlineError) -> JSONResponse` (its service's error shape), and
for the OpenAPI document `ERROR_MODEL` (that shape's model) and, optionally,
`NEVER_ANSWERS` (statuses it answers as another, such as Backendless's 415 as a 400).
"""

from __future__ import annotations

from types import ModuleType

from fastapi import FastAPI
from sqlalchemy import Engine
from starlette.routing import BaseRoute

from producer.errors import ErrorShapes
from producer.openapi import ErrorDoc
from schemas.settings import Settings


def mount_surfaces(
    api: FastAPI, settings: Settings, engine: Engine, shapes: ErrorShapes
) -> tuple[list[ErrorDoc], list[BaseRoute]]:
    """Include every surface's routes, and register which paths answer in its error shape;
    returns how the OpenAPI document describes those errors, and the routes included."""
    docs: list[ErrorDoc] = []
    routes: list[BaseRoute] = []
    for surface in _surfaces():
        router = surface.router(settings, engine)
        api.include_router(router)
        routes.extend(router.routes)
        shapes.add(surface.owns, surface.error_response)
        if hasattr(surface, "ERROR_MODEL"):
            never: frozenset[int] = getattr(surface, "NEVER_ANSWERS", frozenset())
            docs.append(ErrorDoc(surface.owns, surface.ERROR_MODEL, never))
    return docs, routes


def _surfaces() -> list[ModuleType]:
    from producer import webhooks as webhooks
    from producer.surfaces import backendless
    from producer.surfaces import cm as cm
    from producer.surfaces import infobip as infobip  # one line each: parallel edits
    from producer.surfaces import microbizz as microbizz
    from producer.surfaces import sap as sap

    return [backendless, infobip, sap, cm, microbizz, webhooks]
