"""Screenshots of the web page before and after generating, for the README
(docs/samples/page-before.png, page-after.png): the bundled `shapes` model served on a free
port, driven by headless Chromium as tests/test_server_browser.py drives it.

    python3 experiments/page_screenshots.py docs/samples
"""

from __future__ import annotations

import shutil
import sys
import threading
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

import t2i
from t2i.server import ServerConfig, make_server


def main(out: str) -> None:
    server = make_server({"shapes": t2i.load("shapes")}, ServerConfig(port=0))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    driver.set_window_size(1100, 860)
    try:
        driver.get(server.url)
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: d.find_element(By.ID, "steps").get_attribute("value") != "")
        driver.save_screenshot(str(Path(out) / "page-before.png"))
        prompt = driver.find_element(By.ID, "prompt")
        prompt.clear()
        prompt.send_keys("a small green star to the left of a large red heart")
        n = driver.find_element(By.ID, "n")
        n.clear()
        n.send_keys("4")
        driver.find_element(By.ID, "generate").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "figure.result")) == 4)
        driver.save_screenshot(str(Path(out) / "page-after.png"))
    finally:
        driver.quit()
        server.shutdown()
        server.server_close()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/samples")
