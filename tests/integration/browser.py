"""Debian's headless Chromium, driven through its ChromeDriver by Selenium (no downloaded
browser), with its own profile and temp folder, removed afterwards."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
#: no background traffic to Google's hosts (the network is closed here), no sandbox as root
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1300",
)


@contextmanager
def chromium() -> Iterator[WebDriver]:
    """A WebDriver on headless Chromium; quit and its folders removed on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        raise RuntimeError(
            f"{CHROMIUM} / {CHROMEDRIVER} missing: `make browser` installs Debian's chromium "
            "and chromium-driver"
        )
    home = Path(tempfile.mkdtemp(prefix="pc-browser-"))
    try:
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in (*FLAGS, f"--user-data-dir={home / 'profile'}"):
            options.add_argument(flag)
        (home / "tmp").mkdir()
        service = Service(str(CHROMEDRIVER), env={"TMPDIR": str(home / "tmp"), "HOME": str(home)})
        driver = webdriver.Chrome(service=service, options=options)
        try:
            yield driver
        finally:
            driver.quit()
    finally:
        shutil.rmtree(home, ignore_errors=True)
