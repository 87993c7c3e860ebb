"""Drive the Argilla web UI headless (Playwright + Debian chromium) as an annotator: log in, open
the dataset, answer the first record (FAIL) and submit. Screenshots go to OUT.

Run with a Python that has playwright (the test uses .argilla-venv):
    python annotate_in_browser.py URL USERNAME PASSWORD DATASET_ID OUT
"""

from __future__ import annotations

import sys
from pathlib import Path

from playwright.sync_api import sync_playwright


def main() -> None:
    url, username, password, dataset_id, out = sys.argv[1:6]
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{url}/sign-in", wait_until="networkidle")
        page.fill("input[name=username], input#username, input[type=text]", username)
        page.fill("input[name=password], input#password, input[type=password]", password)
        page.keyboard.press("Enter")
        page.wait_for_url(lambda u: "sign-in" not in u, timeout=60_000)
        page.goto(f"{url}/dataset/{dataset_id}/annotation-mode", wait_until="networkidle")
        page.get_by_text("FAIL", exact=True).first.wait_for(timeout=60_000)
        page.screenshot(path=str(out_dir / "annotation-view.png"), full_page=True)
        page.get_by_text("FAIL", exact=True).first.click()
        page.screenshot(path=str(out_dir / "answered.png"), full_page=True)
        page.get_by_role("button", name="Submit").click()
        page.wait_for_timeout(3000)
        page.screenshot(path=str(out_dir / "submitted.png"), full_page=True)
        browser.close()


if __name__ == "__main__":
    main()
