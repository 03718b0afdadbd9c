"""Headless Chromium (Debian's `chromium`) driven by Playwright, with every request off loopback refused and recorded."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# as the workplace's machines need: no sandbox as root, no GPU, no calls home
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def need_chromium() -> None:
    """Skip without Chromium; fail instead where it must be there (CI sets PRICER_REQUIRE_BROWSER=1)."""
    if not Path(CHROMIUM).exists():
        message = f"headless Chromium not found at {CHROMIUM} (apt-get install chromium)"
        if os.environ.get("PRICER_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)


@dataclass
class PageLog:
    console_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # requests that tried to leave the machine

    def clean(self) -> bool:
        return not self.console_errors and not self.refused


def _local(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("file", "data", "about") or parts.hostname in LOCAL_HOSTS


@contextmanager
def chromium_page(width: int = 1280, height: int = 900) -> Iterator[tuple[object, PageLog]]:
    """A fresh page and the log of what it printed and asked for."""
    need_chromium()
    from playwright.sync_api import sync_playwright

    log = PageLog()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.on("console", lambda message: message.type == "error" and log.console_errors.append(message.text))
            page.on("pageerror", lambda error: log.console_errors.append(str(error)))

            def route(route) -> None:
                url = route.request.url
                log.requests.append(url)
                if _local(url):
                    route.continue_()
                else:
                    log.refused.append(url)
                    route.abort()

            page.route("**/*", route)
            yield page, log
        finally:
            browser.close()


def screenshot(page, name: str) -> Path:
    """Save a full-page screenshot under test-artifacts/ (kept after the run, to look at)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path
