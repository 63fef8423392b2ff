"""What the browser tests and the first-paint benchmark share: Debian's Chromium, a served app, and
the sampling of a first load."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Flags for a sandboxed root CI machine with no network beyond loopback.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
    "--disable-background-networking", "--disable-component-update",
]
ARTIFACTS = ROOT / "test-artifacts"
APP_PAGES = {"Home", "Dataset", "Preprocessing lab", "Train", "Evaluate", "Predict"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def streamlit_server(timeout_s: float = 90) -> Iterator[str]:
    """`streamlit run app.py` on a free port; yields its URL once the health check answers."""
    port = free_port()
    with tempfile.TemporaryFile() as log:  # a pipe nobody reads would fill and block the server
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), "--server.headless", "true"],
            cwd=ROOT, env=os.environ.copy(), stdout=log, stderr=subprocess.STDOUT,
        )
        url = f"http://localhost:{port}"
        try:
            deadline = time.time() + timeout_s
            while True:
                try:
                    if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                        break
                except OSError:
                    if time.time() > deadline or proc.poll() is not None:
                        log.seek(0)
                        raise RuntimeError(f"streamlit did not become healthy:\n{log.read().decode(errors='replace')[-2000:]}") from None
                    time.sleep(0.1)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def choose(page, label: str, option: str) -> None:
    """Pick a selectbox option; typing filters the list and Enter picks the match. Retried: a click that lands
    while the page is still rerunning is lost."""
    box = page.locator("[data-testid='stSelectbox']").filter(has=page.get_by_text(label, exact=True))
    for _ in range(3):
        box.click()
        page.keyboard.type(option)
        page.keyboard.press("Enter")
        for _ in range(30):
            page.wait_for_timeout(500)
            if box.get_by_role("combobox").input_value() == option:
                return
        page.keyboard.press("Escape")
    raise AssertionError(f"could not choose {option} in {label}")


def wait_until_idle(page, timeout_ms: int = 120_000) -> None:
    """Until the app is connected and no script run is under way (Streamlit marks both on its root element): a click
    that lands mid-rerun can be lost, and a rerun can replace the element being clicked."""
    page.wait_for_timeout(300)  # a rerun just asked for may not have started yet
    page.wait_for_selector("[data-testid='stApp'][data-test-connection-state='CONNECTED']"
                           ":not([data-test-script-state='running']):not([data-test-script-state='rerunRequested'])",
                           timeout=timeout_ms)


def click_in_tab(page, tab: str, button: str, attempts: int = 3) -> None:
    """Click a button inside a tab, choosing the tab again if a rerun showed another one (seen on a loaded CI
    machine: the Evaluate page came back on its first tab after a rerun, and the button went out of reach)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    target = page.get_by_role("button", name=button, exact=True)
    for attempt in range(attempts):
        wait_until_idle(page)
        if not target.is_visible():
            page.get_by_role("tab", name=tab).click()
        try:
            target.click(timeout=20_000)
            return
        except PlaywrightTimeout:  # retried, then reported with a screenshot
            if attempt == attempts - 1:
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / f"click_in_tab_{button}.png"), full_page=True)
                raise


_SAMPLE_JS = """([title, content]) => {
  const sidebar = document.querySelector("[data-testid='stSidebar']");
  const entries = sidebar ? [...sidebar.querySelectorAll("a")].map(a => a.innerText.trim().split("\\n").pop().trim()).filter(Boolean) : [];
  const h1 = [...document.querySelectorAll("h1")].some(h => h.innerText.includes(title));
  const body = document.body ? document.body.innerText : "";
  return {entries, title: h1, content: body.includes(content)};
}"""


def sample_first_load(page, url: str, title: str = "MedImage Studio", content_text: str = "", timeout_s: float = 60,
                      path: str = "") -> dict:
    """Open `url` and look every 100 ms until `content_text` shows: the links the sidebar listed at any
    moment, and the seconds to the page's title and to its content (from the request)."""
    seen: set[str] = set()
    start = time.perf_counter()
    page.goto(url + path, wait_until="commit")
    title_s = content_s = None
    while time.perf_counter() - start < timeout_s:
        state = page.evaluate(_SAMPLE_JS, [title, content_text or title])
        now = time.perf_counter() - start
        seen |= set(state["entries"])
        if state["title"] and title_s is None:
            title_s = now
        if state["content"] and content_s is None:
            content_s = now
        if title_s is not None and content_s is not None:
            break
        page.wait_for_timeout(100)
    for _ in range(10):  # and a second more: a late navigation message would still count
        page.wait_for_timeout(100)
        seen |= set(page.evaluate(_SAMPLE_JS, [title, content_text or title])["entries"])
    return {"title_s": title_s, "content_s": content_s, "entries_seen": seen,
            "foreign_entries": sorted(e for e in seen if e not in APP_PAGES)}
