"""End to end in a real browser: ``flowerclf ui --api`` + ``flowerclf serve``, headless Chromium.

Needs the Debian packages ``chromium`` and ``chromium-driver`` (``make install-browser``);
skipped with the reason when they are missing.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.helpers.colour_package import split
from tests.helpers.server import LiveServer, free_port, stop_process, subprocess_env, wait_for_http

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture
def ui_url(live_server: LiveServer) -> Iterator[str]:
    port = free_port()
    command = [sys.executable, "-m", "flowerclf", "ui", "--api", live_server.url,
               "--port", str(port)]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=subprocess_env()
    )
    url = f"http://127.0.0.1:{port}"
    try:
        if wait_for_http(f"{url}/_stcore/health", process, time.monotonic() + 60) is not None:
            pytest.fail("flowerclf ui did not start")
        yield url
    finally:
        stop_process(process)


@pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="headless Chromium not installed: apt-get install -y chromium chromium-driver "
    "(make install-browser)",
)
def test_ui_in_headless_chromium(ui_url: str, tmp_path: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    photo = tmp_path / "flower.png"
    split("blue", "red", (120, 120)).save(photo)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1400,1600"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.get(ui_url)
        wait = WebDriverWait(driver, 60)
        upload = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "input[type=file]"))
        upload.send_keys(str(photo))
        wait.until(
            lambda d: "Most similar training images" in d.find_element(By.TAG_NAME, "body").text
        )
        text = driver.find_element(By.TAG_NAME, "body").text
        shot = tmp_path / "ui.png"
        driver.save_screenshot(str(shot))
    finally:
        driver.quit()
    assert "blue" in text and "flower.png" in text
    assert "colour-layout" in text
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 10_000
    image = Image.open(io.BytesIO(data))
    assert image.size[0] >= 1000
    # The page is not blank: many distinct colours (images, chart, text).
    assert len(image.convert("RGB").getcolors(maxcolors=1_000_000) or []) > 100
