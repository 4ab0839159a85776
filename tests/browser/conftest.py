"""One headless Chromium (Debian's ``chromium`` + ``chromium-driver``) per browser test module,
at 1400x900, with screenshots saved as test artefacts."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Screenshots land here (gitignored); CI keeps the directory as an artefact.
ARTIFACTS = Path(os.environ.get("DJANGO_RAY_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "browser"
WIDTH, HEIGHT = 1400, 900


def _binary(*names: str) -> str:
    for name in names:
        found = shutil.which(name) or shutil.which(name, path="/usr/lib/chromium")
        if found:
            return found
    raise RuntimeError(
        f"none of {', '.join(names)} found: the browser tests need Debian's chromium and "
        "chromium-driver (scripts/test installs them: apt-get install chromium chromium-driver)"
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """A headless Chromium driven by Selenium through Debian's chromedriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = _binary("chromium", "chromium-browser")
    for arg in (
        "--headless=new",
        f"--window-size={WIDTH},{HEIGHT}",
        "--no-sandbox",  # root in CI containers
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--lang=en-US",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(_binary("chromedriver")), options=options)
    driver.set_window_size(WIDTH, HEIGHT)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def screenshots(request: pytest.FixtureRequest) -> Path:
    """The directory this module's screenshots go to (printed, so a run names it)."""
    directory = ARTIFACTS / Path(request.module.__file__).stem
    directory.mkdir(parents=True, exist_ok=True)
    print(f"\nbrowser screenshots: {directory}")
    return directory


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Name the screenshot directory at the end of every run that made screenshots."""
    if ARTIFACTS.is_dir() and any(ARTIFACTS.rglob("*.png")):
        terminalreporter.write_line(f"browser screenshots (1400x900): {ARTIFACTS}")
