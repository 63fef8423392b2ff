"""Cold start as a first-time visitor sees it: a fresh server, then Home in headless Chromium.

For each of N cold loads: start `streamlit run app.py` (new process: nothing imported, nothing
cached), wait for the health check, open `/` and sample the sidebar every 100 ms until Home is
painted. Prints, per load and as the median: time to the first paint of Home's title, time to
Home's real content (the active dataset's classes), and whether the sidebar ever listed anything
but the app's own pages (Streamlit's automatic `pages/` list shows "app" and "common").

    .venv/bin/python bench/first_paint_bench.py [--loads 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.browser_helpers import CHROMIUM, CHROMIUM_ARGS, sample_first_load, streamlit_server  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loads", type=int, default=5)
    args = parser.parse_args()
    if CHROMIUM is None:
        sys.exit("Debian's chromium is needed: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    title_times, content_times, foreign = [], [], set()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for i in range(args.loads):
            with streamlit_server() as url:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                result = sample_first_load(page, url, content_text="PNEUMONIA (150)")
                page.close()
            title_times.append(result["title_s"])
            content_times.append(result["content_s"])
            foreign |= set(result["foreign_entries"])
            print(f"load {i + 1}: title {result['title_s']:.2f} s, content {result['content_s']:.2f} s, "
                  f"sidebar entries seen {sorted(result['entries_seen'])}")
        browser.close()
    print(f"median of {args.loads} cold loads: first paint of Home's title {statistics.median(title_times):.2f} s, "
          f"Home's content {statistics.median(content_times):.2f} s after the health check")
    print("sidebar listed pages that are not the app's: " + (", ".join(sorted(foreign)) if foreign else "never"))


if __name__ == "__main__":
    main()
