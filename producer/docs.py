"""/docs without the internet: Swagger UI's assets ship in the package (producer/static), the
native routes come first and each seed surface after them, and every authenticated operation
names the three ways a key travels, so "Authorize" works.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).with_name("static")
STATIC_URL = "/static"

#: Sections of /docs in this order: Swagger UI follows the document's `tags` list.
TAGS: list[dict[str, str]] = [
    {"name": "push", "description": "Push, follow and cancel Messages; a Delivery's story."},
    {"name": "registrations", "description": "Devices and browsers, their users and topics."},
    {"name": "schedules", "description": "Delayed and repeating pushes."},
    {"name": "webhooks", "description": "CM-shaped event documents posted to your URL."},
    {"name": "apps and keys (admin)", "description": "Apps, credentials and keys: admin keys."},
    {"name": "console (admin)", "description": "What /console reads: admin keys only."},
    {"name": "operations", "description": "Liveness, readiness and metrics."},
    {"name": "SAP Mobile Services", "description": "SAP's push API under its own paths."},
    {"name": "Backendless", "description": "Backendless messaging: the key is in the path."},
    {"name": "infobip", "description": "Infobip's mobile push API."},
    {"name": "CM.com", "description": "CM.com's push events, in and out."},
    {"name": "Microbizz", "description": "Microbizz's app Envelope and pushes."},
]

SECURITY_SCHEMES: dict[str, dict[str, str]] = {
    "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "Basic": {
        "type": "http",
        "scheme": "basic",
        "description": "the key's alias as user name, the key as password (SAP)",
    },
    "App": {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "`App <key>` (Infobip): type App, a space, then the key",
    },
}
_ANY_KEY: list[dict[str, list[str]]] = [{name: []} for name in SECURITY_SCHEMES]

#: Answered without a key; Backendless carries its key in the path instead.
UNSECURED_PATHS = frozenset(
    {"/v1/health", "/v1/ready", "/metrics", "/v1/apps/{app_id}/webpush/public-key"}
)


def secured(path: str) -> bool:
    return path not in UNSECURED_PATHS and "{api_key}" not in path


def add_security(doc: dict[str, Any]) -> None:
    """The security schemes, applied to every operation that takes a key in a header."""
    doc.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
    for path, item in doc.get("paths", {}).items():
        if not secured(path):
            continue
        for operation in item.values():
            if isinstance(operation, dict) and "responses" in operation:
                operation.setdefault("security", _ANY_KEY)


def mount_docs(api: FastAPI) -> None:
    """Static assets (Swagger UI's and the console's) and the /docs page that uses them."""
    api.mount(STATIC_URL, StaticFiles(directory=STATIC_DIR), name="static")

    @api.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="Pushline API",
            swagger_js_url=f"{STATIC_URL}/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url=f"{STATIC_URL}/swagger-ui/swagger-ui.css",
            swagger_favicon_url=f"{STATIC_URL}/swagger-ui/favicon-32x32.png",
            # Keys typed into Authorize survive a reload of the page.
            swagger_ui_parameters={"persistAuthorization": True, "tryItOutEnabled": False},
        )
