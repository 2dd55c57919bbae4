"""Headless Chromium driven like a person: Debian's ``chromium-driver``
(chromedriver) spoken to over the W3C WebDriver protocol, which is plain JSON
over HTTP, so no client library is needed. Where the Flower test only loads a
page (``chromium --dump-dom``), the console test types into forms and clicks
buttons, and chromedriver waits for each page a click loads."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from raptorflow_bus.embedded import free_port
from tests.harness import wait_until

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"


def binaries() -> tuple[str, str]:
    """chromedriver and the Chromium binary it drives; skip (fail in CI) if absent."""
    driver = shutil.which("chromedriver")
    browser = "/usr/lib/chromium/chromium"
    if not os.path.exists(browser):
        browser = shutil.which("chromium") or ""
    if driver and browser:
        return driver, browser
    if os.environ.get("CI"):
        pytest.fail("chromium-driver is not installed; .ci/run installs Debian's package")
    pytest.skip("chromium and chromium-driver are not installed (apt-get install chromium-driver)")


class WebDriverError(AssertionError):
    pass


class Browser:
    def __init__(self, driver: str, session: str) -> None:
        self._base = f"{driver}/session/{session}"

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self._base + path, data=data, method=method,
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.load(response)["value"]
        except urllib.error.HTTPError as exc:
            raise WebDriverError(f"{method} {path}: {exc.read()[:500]!r}") from None

    def open(self, url: str) -> None:
        self._call("POST", "/url", {"url": url})

    @property
    def url(self) -> str:
        return str(self._call("GET", "/url"))

    @property
    def title(self) -> str:
        return str(self._call("GET", "/title"))

    @property
    def source(self) -> str:
        return str(self._call("GET", "/source"))

    def find_all(self, css: str) -> list[str]:
        found = self._call("POST", "/elements", {"using": "css selector", "value": css})
        return [str(e[ELEMENT]) for e in found]

    def find(self, css: str) -> str:
        found = self.find_all(css)
        if not found:
            raise WebDriverError(f"nothing matches {css!r} on {self.url}")
        return found[0]

    def text(self, css: str) -> str:
        return str(self._call("GET", f"/element/{self.find(css)}/text"))

    def click(self, css: str) -> None:
        self._call("POST", f"/element/{self.find(css)}/click", {})

    def type(self, css: str, text: str) -> None:
        element = self.find(css)
        self._call("POST", f"/element/{element}/clear", {})
        self._call("POST", f"/element/{element}/value", {"text": text})

    def wait_for(self, text: str, timeout: float = 30) -> None:
        """Until the current page shows ``text``: chromedriver waits for the
        page a click loads only when the navigation has begun by then, and a
        form whose POST takes a moment may not have."""
        wait_until(lambda: text in self.source, timeout=timeout, what=f"{text!r} on the page")

    def script(self, source: str) -> Any:
        """Run JavaScript through the driver (the page's own CSP forbids scripts)."""
        return self._call("POST", "/execute/sync", {"script": source, "args": []})

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self._call("GET", "/screenshot")))


@contextmanager
def headless_chromium(profile: Path, log: Path) -> Iterator[Browser]:
    driver_binary, browser_binary = binaries()
    port = free_port()
    driver = subprocess.Popen(
        [driver_binary, f"--port={port}"],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/status", timeout=2) as response:
                return bool(json.load(response)["value"]["ready"])
        except OSError:
            return driver.poll() is not None

    try:
        wait_until(ready, timeout=30, what="chromedriver to listen")
        assert driver.poll() is None, log.read_text()[-2000:]
        options = {
            "binary": browser_binary,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-background-networking", "--disable-sync",
                "--window-size=1400,1000", f"--user-data-dir={profile}",
            ],
        }  # fmt: skip
        capabilities = {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": options}}
        request = urllib.request.Request(
            f"{url}/session",
            data=json.dumps({"capabilities": capabilities}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=90) as response:
            session = json.load(response)["value"]["sessionId"]
        browser = Browser(url, session)
        try:
            yield browser
        finally:
            browser._call("DELETE", "")
    finally:
        driver.terminate()
        try:
            driver.wait(timeout=30)
        except subprocess.TimeoutExpired:
            driver.kill()
            driver.wait(timeout=30)


def wait_for_page(browser: Browser, predicate: Any, what: str, timeout: float = 60) -> None:
    """Reload until ``predicate(browser)`` holds: the page is server-rendered,
    so a change made by a worker shows on the next load."""
    deadline = time.monotonic() + timeout
    while not predicate(browser):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.3)
        browser.open(browser.url)
