"""End to end in a real headless Chromium: the served dashboard shows the demo dataset's classes."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Flags for a sandboxed root CI machine with no network beyond loopback.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
    "--disable-background-networking", "--disable-component-update",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it as root)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server_url():
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), "--server.headless", "true"],
        cwd=ROOT, env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    url = f"http://localhost:{port}"
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("streamlit did not become healthy in 90 s")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _launch(p):
    return p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def test_deep_link_as_first_request_goes_through_app(server_url: str) -> None:
    """A bookmark to /lab right after a server start must still get app.py's navigation and sidebar.

    Runs first in this module on purpose: Streamlit's legacy pages/ mode only bites on the first run.
    """
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = _launch(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{server_url}/lab")
            page.get_by_text("threshold used").first.wait_for(timeout=120_000)
            page.get_by_text("Active dataset").first.wait_for(timeout=30_000)
            nav = page.locator("[data-testid='stSidebarNav']").inner_text()
            assert "Preprocessing lab" in nav and "common" not in nav
            assert page.locator("[data-testid='stException']").count() == 0
        finally:
            browser.close()


def test_home_page_shows_demo_classes_in_chromium(server_url: str) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = _launch(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(server_url)
            page.get_by_text("PNEUMONIA (150)").first.wait_for(timeout=120_000)
            assert page.get_by_text("NORMAL (150)").first.is_visible()
            assert page.locator("[data-testid='stException']").count() == 0
            page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / "home.png"), full_page=True)
            page.locator("[data-testid='stSidebarNav'] a", has_text="Dataset").first.click()
            page.get_by_text("Image sizes").first.wait_for(timeout=60_000)
            assert page.locator("[data-testid='stException']").count() == 0
            page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / "dataset.png"), full_page=True)
        finally:
            browser.close()
