"""Headless Chromium for the dashboard's browser tests (``tests/test_web_browser.py``).

Debian's ``chromium`` driven through its ``chromedriver`` (packages ``chromium`` and
``chromium-driver``, installed by ``.ci/run``); Selenium Manager is never used, so nothing
is downloaded. Screenshots go to ``$ATTENDANCE_TEST_ARTIFACTS/web`` (default:
``artifacts/web/`` in the repository), as the window tests keep theirs in ``artifacts/``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from PIL import Image
from selenium import webdriver
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

REPO = Path(__file__).resolve().parent.parent
WINDOW = (1280, 900)

T = TypeVar("T")


def artifacts_dir() -> Path:
    """Where screenshots go (created): ``$ATTENDANCE_TEST_ARTIFACTS/web`` or ``artifacts/web``."""
    folder = Path(os.environ.get("ATTENDANCE_TEST_ARTIFACTS") or REPO / "artifacts") / "web"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def chromium_paths() -> tuple[str, str]:
    """``(chromium, chromedriver)``; fails the test (never skips) when one is missing."""
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    missing = [name for name, path in (("chromium", browser), ("chromedriver", driver)) if not path]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} not found: the browser tests need Debian's chromium and "
            "chromium-driver packages; .ci/run installs them (apt-get install chromium "
            "chromium-driver)",
            pytrace=False,
        )
    assert browser and driver
    return browser, driver


def start_chromium(*, downloads: Path | None = None, fake_video: Path | None = None) -> WebDriver:
    """Headless Chromium, ``WINDOW`` sized, with a fake camera (``fake_video``: a ``.y4m`` or
    ``.mjpeg`` it plays in a loop; default: Chromium's test pattern) that needs no permission
    prompt, and downloads saved to ``downloads`` without asking."""
    browser, driver = chromium_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in (
        "--headless=new",
        "--no-sandbox",  # the tests may run as root
        "--disable-dev-shm-usage",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--password-store=basic",
        "--lang=en-US",
    ):
        options.add_argument(arg)
    if fake_video is not None:
        options.add_argument(f"--use-file-for-fake-video-capture={fake_video}")
    if downloads is not None:
        options.add_experimental_option(
            "prefs",
            {
                "download.default_directory": str(downloads),
                "download.prompt_for_download": False,
                "download.directory_upgrade": True,
                "safebrowsing.enabled": False,
            },
        )
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    chrome = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    try:
        chrome.set_window_size(*WINDOW)
        chrome.set_page_load_timeout(30)
        if downloads is not None:  # headless Chromium also wants it through DevTools
            chrome.execute_cdp_cmd(
                "Browser.setDownloadBehavior",
                {"behavior": "allow", "downloadPath": str(downloads), "eventsEnabled": True},
            )
    except BaseException:
        chrome.quit()
        raise
    return chrome


def screenshot(driver: WebDriver, name: str) -> Path:
    """Save the visible page as ``<artifacts>/web/<name>.png``; its path. Fails when the
    picture is not the window's width or is one flat colour (a blank page)."""
    path = artifacts_dir() / (name if name.endswith(".png") else f"{name}.png")
    assert driver.save_screenshot(str(path)), f"could not save the screenshot {path}"
    with Image.open(path) as picture:
        width = picture.size[0]
        darkest, brightest = picture.convert("L").getextrema()
    assert width == WINDOW[0], f"{path}: {width} px wide, not {WINDOW[0]}"
    assert brightest - darkest > 50, f"{path} is blank"
    return path


def wait_for(
    driver: WebDriver,
    condition: Callable[[WebDriver], T],
    what: str,
    timeout: float = 10.0,
    poll: float = 0.05,
) -> T:
    """Poll ``condition(driver)`` until it returns something truthy (then return that), or
    fail after ``timeout`` seconds saying ``what`` was awaited. Exceptions other than
    "element not found" and "element replaced" (a live redraw) propagate at once."""
    ignored = (NoSuchElementException, StaleElementReferenceException)
    try:
        return WebDriverWait(driver, timeout, poll, ignored_exceptions=ignored).until(condition)
    except TimeoutException:
        raise AssertionError(
            f"timed out after {timeout:g} s waiting for {what} (at {driver.current_url})"
        ) from None


def text_of(driver: WebDriver, css: str) -> str:
    """The visible text of the first element matching ``css`` ("" when there is none)."""
    found = driver.find_elements(By.CSS_SELECTOR, css)
    return found[0].text if found else ""


def texts_of(driver: WebDriver, css: str) -> list[str]:
    """The visible texts of every element matching ``css``."""
    return [element.text for element in driver.find_elements(By.CSS_SELECTOR, css)]


def console_errors(driver: WebDriver) -> list[dict[str, Any]]:
    """Browser console entries of level SEVERE since the last call (script errors, CSP
    violations, resources that failed to load)."""
    return [entry for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]
