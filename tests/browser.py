"""Open a page in headless Chromium (Debian's chromium + chromium-driver) and report what a reader
would meet: images that failed to load, console errors, and a full-page screenshot."""

from __future__ import annotations

import shutil
from pathlib import Path

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
)


def available() -> bool:
    return bool(shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER))


def check_page(page: Path, screenshot: Path, width: int = 1280) -> dict:
    """Load ``page`` from disk; return broken images, console errors, the page height, its open
    sections, and its height with every section folded."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--window-size={width},1000")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get(page.resolve().as_uri())
        images = driver.execute_script(
            "return Array.from(document.images)"
            ".map(i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0])"
        )
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(width, min(height, 30000))
        driver.save_screenshot(str(screenshot))
        errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        sections = driver.execute_script("return document.querySelectorAll('details[open]').length")
        # The body's own height: the window now spans the whole page, so the document's is at least that.
        body = "return document.body.getBoundingClientRect().height"
        unfolded = driver.execute_script(body)
        folded = driver.execute_script(
            "document.querySelectorAll('details').forEach(d => d.open = false);" + body
        )
    finally:
        driver.quit()
    return {
        "images": len(images),
        "broken": [src for src, ok in images if not ok],
        "errors": errors,
        "height": height,
        "sections": sections,
        "body_height": unfolded,
        "folded_height": folded,
    }
