"""/docs in a real headless browser, with no internet: Swagger UI loads from the package,
the native sections come first, and "Authorize" then "Try it out" pushes (202)."""

from __future__ import annotations

import json

import httpx
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver

from tests.browser import browser, wait_for
from tests.conftest import AppHandle

__all__ = ["browser"]  # the fixture, imported for this module
METHODS = {"get", "put", "post", "delete", "patch", "options", "head"}


def test_docs_serves_swagger_ui_from_the_package_not_a_cdn(app: AppHandle) -> None:
    page = httpx.get(f"{app.stack.api_url}/docs", timeout=10)
    assert page.status_code == 200
    assert "cdn" not in page.text.lower() and "https://" not in page.text
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        answer = httpx.get(f"{app.stack.api_url}/static/swagger-ui/{asset}", timeout=10)
        assert answer.status_code == 200 and len(answer.content) > 100_000


def test_document_orders_native_sections_first_and_declares_the_three_key_schemes(
    app: AppHandle,
) -> None:
    doc = httpx.get(f"{app.stack.api_url}/openapi.json", timeout=30).json()
    names = [t["name"] for t in doc["tags"]]
    assert names[:3] == ["push", "registrations", "schedules"]
    assert names.index("operations") < names.index("SAP Mobile Services")
    schemes = doc["components"]["securitySchemes"]
    assert schemes["ApiKey"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert schemes["Basic"]["scheme"] == "basic"
    assert schemes["App"]["name"] == "Authorization"
    assert {"ApiKey": []} in doc["paths"]["/v1/messages"]["post"]["security"]
    assert "security" not in doc["paths"]["/v1/health"]["get"]
    sap = doc["paths"]["/mobileservices/push/v1/backend/applications/{applicationId}/notifications"]
    assert {"Basic": []} in sap["post"]["security"]


def test_docs_renders_offline_and_try_it_out_pushes_with_the_authorized_key(
    app: AppHandle, browser: WebDriver
) -> None:
    token = app.ios("docs-ann")
    browser.get(f"{app.stack.api_url}/docs")
    sections = wait_for(browser, lambda b: b.find_elements(By.CSS_SELECTOR, ".opblock-tag"))
    titles = [s.get_attribute("data-tag") for s in sections]
    assert titles[:3] == ["push", "registrations", "schedules"], titles
    assert "SAP Mobile Services" in titles and "Microbizz" in titles
    doc = httpx.get(f"{app.stack.api_url}/openapi.json", timeout=30).json()
    operations = sum(len(set(item) & METHODS) for item in doc["paths"].values())
    rendered = browser.find_elements(By.CSS_SELECTOR, ".opblock")
    assert len(rendered) == operations  # every operation of every section
    assert len(browser.find_elements(By.CSS_SELECTOR, ".opblock .authorization__btn")) > 50

    # Authorize with the app's key, as X-API-Key.
    browser.find_element(By.CSS_SELECTOR, "button.authorize").click()
    field = wait_for(
        browser, lambda b: b.find_element(By.CSS_SELECTOR, ".auth-container input[type=text]")
    )
    field.send_keys(app.creds.api_key)
    browser.find_element(By.CSS_SELECTOR, ".auth-btn-wrapper button.authorize").click()
    browser.find_element(By.CSS_SELECTOR, ".auth-btn-wrapper button.btn-done").click()

    push = browser.find_element(By.ID, "operations-push-push_v1_messages_post")
    push.find_element(By.CSS_SELECTOR, ".opblock-summary-control").click()
    wait_for(browser, lambda b: push.find_element(By.CSS_SELECTOR, "button.try-out__btn")).click()
    body = wait_for(
        browser, lambda b: push.find_element(By.CSS_SELECTOR, "textarea.body-param__text")
    )
    body.send_keys(Keys.CONTROL, "a")
    body.send_keys(Keys.DELETE)
    request = {
        "target": {"type": "users", "usernames": ["docs-ann"]},
        "payload": {"alert": "from /docs"},
    }
    body.send_keys(json.dumps(request))
    push.find_element(By.CSS_SELECTOR, "button.execute").click()
    status = wait_for(
        browser,
        lambda b: push.find_element(
            By.CSS_SELECTOR, ".live-responses-table tr.response .response-col_status"
        ).text.strip(),
    )
    assert status == "202"
    answer = json.loads(
        push.find_element(By.CSS_SELECTOR, ".live-responses-table pre.microlight").text
    )
    assert app.wait(answer["id"]).by_status == {"SENT": 1}
    assert app.stack.apns.stats()["accepted"].get(token) == 1
