"""A real headless browser for the /docs and /console tests: Debian's chromium driven by its
own chromedriver through Selenium (scripts/browser.sh installs both; nothing is downloaded
at test time)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")


def install() -> tuple[str, str]:
    """Debian's chromium and chromedriver, installed by the project's own script if absent."""
    subprocess.run(["bash", str(ROOT / "scripts" / "browser.sh")], check=True)
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "scripts/browser.sh did not install chromium and chromedriver"
    return chromium, driver


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    chromium, driver = install()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    options.add_argument("--window-size=1400,1000")
    session = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    try:
        yield session
    finally:
        session.quit()


def wait_for(browser: WebDriver, found: Callable[[WebDriver], T], timeout: float = 20) -> T:
    """What `found` returns once it is truthy; fails with the page's console after `timeout`."""
    try:
        # A page that redraws while it polls can make an element found a moment ago stale:
        # look again, as for one not there yet.
        result: T = WebDriverWait(
            browser,
            timeout,
            poll_frequency=0.1,
            ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
        ).until(found)
    except Exception as exc:
        raise AssertionError(f"not found in {timeout}s on {browser.current_url}") from exc
    return result


def click(browser: WebDriver, css: str, timeout: float = 20) -> None:
    """Clicks the element `css` finds, finding it again if the page redrew it meanwhile."""

    def clicked(b: WebDriver) -> bool:
        b.find_element(By.CSS_SELECTOR, css).click()
        return True

    wait_for(browser, clicked, timeout)


def cells(browser: WebDriver, row_css: str) -> list[str] | None:
    """The text of each cell of the first row `row_css` finds, read in one step (None if
    there is no such row), so a redraw between two reads cannot leave a stale element."""
    found: list[str] | None = browser.execute_script(
        "const tr = document.querySelector(arguments[0]);"
        " return tr ? [...tr.querySelectorAll('td')].map((td) => td.innerText) : null;",
        row_css,
    )
    return found


def attributes(browser: WebDriver, css: str, name: str) -> list[str | None]:
    """Attribute `name` of every element `css` finds, read in one step."""
    found: list[str | None] = browser.execute_script(
        "return [...document.querySelectorAll(arguments[0])]"
        ".map((e) => e.getAttribute(arguments[1]));",
        css,
        name,
    )
    return found
