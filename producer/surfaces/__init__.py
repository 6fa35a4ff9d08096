"""The seed services' own APIs (SAP Mobile Services, Backendless, Infobip, CM.com,
Microbizz), each a thin translation onto the native Message / Registration model.

Each surface module exposes `owns(path) -> bool`, `router(settings, engine) -> APIRouter`
and `error_response(exc: PushlineError) -> JSONResponse` (its service's error shape).
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import Engine

from producer.errors import PushlineError
from schemas.settings import Settings

ErrorShape = Callable[[PushlineError], JSONResponse]
Surface = tuple[Callable[[str], bool], ErrorShape]


def mount_surfaces(api: FastAPI, settings: Settings, engine: Engine) -> list[Surface]:
    """Include every surface's routes; returns (owns path?, error shape) pairs."""
    shapes: list[Surface] = []
    for surface in _surfaces():
        api.include_router(surface.router(settings, engine))
        shapes.append((surface.owns, surface.error_response))
    return shapes


def _surfaces() -> list[ModuleType]:
    from producer import webhooks as webhooks
    from producer.surfaces import backendless
    from producer.surfaces import cm as cm
    from producer.surfaces import infobip as infobip  # one line each: parallel edits
    from producer.surfaces import microbizz as microbizz
    from producer.surfaces import sap as sap

    return [backendless, infobip, sap, cm, microbizz, webhooks]
