"""The page's conveniences in headless Chromium: a live preview while sampling, Cancel, Reuse
seed, and the settings of a dropped PNG (t2i's or A1111's) read back into the form."""

from __future__ import annotations

import base64
import io
import json
import threading
import time

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from test_server_browser import CHROMIUM, DRIVER, browser  # noqa: F401 (the fixture)
from tiny_models import write_tiny_model

from t2i.families import load
from t2i.server import ServerConfig, jobs, make_server

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER), reason="apt-get install chromium chromium-driver (setup --dev)"
)
VOCAB = "a red blue green circle square star above below".split()


@pytest.fixture(scope="module")
def slow_url(tmp_path_factory):
    """A server whose sampling steps take 0.15 s each (a slow machine), previews every step."""
    folder = tmp_path_factory.mktemp("model")
    write_tiny_model(folder, sampler="euler", steps=8, vocab=VOCAB)
    pipe = load(folder)
    preview = pipe.preview

    def slow_preview(info, index=0):
        time.sleep(0.15)
        return preview(info, index)

    pipe.preview = slow_preview
    saved, jobs.PREVIEW_EVERY = jobs.PREVIEW_EVERY, 0.0
    server = make_server({"tiny": pipe}, ServerConfig(port=0))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.url
    jobs.PREVIEW_EVERY = saved
    server.shutdown()
    server.server_close()


def ready(driver, url):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    wait = WebDriverWait(driver, 30)
    wait.until(lambda d: d.find_element(By.ID, "steps").get_attribute("value") == "8")
    return wait


def test_live_preview_then_the_seed_used_and_reuse_seed(slow_url, browser):  # noqa: F811
    from selenium.webdriver.common.by import By

    wait = ready(browser, slow_url)
    assert "diffusion model, 16x16 px" in browser.find_element(By.ID, "model-info").text
    browser.find_element(By.ID, "generate").click()
    shown = lambda d: d.find_element(By.ID, "preview").get_attribute("src") or ""  # noqa: E731
    wait.until(lambda d: shown(d).startswith("data:"))
    assert browser.find_element(By.ID, "preview").is_displayed()  # while it samples
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "figure.result")) == 1)
    figure = browser.find_element(By.CSS_SELECTOR, "figure.result")
    used = str(json.loads(figure.get_attribute("data-params"))["seed"])
    assert browser.find_element(By.ID, "seed").get_attribute("value") == used  # random, shown
    browser.find_element(By.ID, "seed").clear()
    browser.find_element(By.ID, "random").click()
    figure.find_element(By.CSS_SELECTOR, "button.reuse-seed").click()
    assert browser.find_element(By.ID, "seed").get_attribute("value") == used
    assert not browser.find_element(By.ID, "random").is_selected()


def test_cancel_stops_the_running_job_and_the_batches_left(slow_url, browser):  # noqa: F811
    from selenium.webdriver.common.by import By

    wait = ready(browser, slow_url)
    steps = browser.find_element(By.ID, "steps")
    steps.clear()
    steps.send_keys("60")  # 9 s at 0.15 s a step
    count = browser.find_element(By.ID, "count")
    count.clear()
    count.send_keys("3")
    browser.find_element(By.ID, "generate").click()
    wait.until(lambda d: "sampling: step" in d.find_element(By.ID, "status").text)
    browser.find_element(By.ID, "cancel").click()
    wait.until(lambda d: "cancelled" in d.find_element(By.ID, "status").text)
    assert browser.find_elements(By.CSS_SELECTOR, "figure.result") == []
    assert not browser.find_element(By.ID, "cancel").is_displayed()


def _drop(driver, png: bytes, name: str) -> None:
    """Drop a PNG file on the page as a person drags it from their files."""
    driver.execute_script(
        """
        const bytes = Uint8Array.from(atob(arguments[0]), (c) => c.charCodeAt(0));
        const data = new DataTransfer();
        data.items.add(new File([bytes], arguments[1], { type: "image/png" }));
        document.body.dispatchEvent(new DragEvent("drop", { dataTransfer: data, bubbles: true }));
        """,
        base64.b64encode(png).decode(),
        name,
    )


def test_a_dropped_png_fills_the_form_with_its_settings(slow_url, browser):  # noqa: F811
    from selenium.webdriver.common.by import By

    wait = ready(browser, slow_url)
    info = PngInfo()  # an image made by A1111: only its "parameters" text
    info.add_text(
        "parameters",
        "a blue star\nNegative prompt: red\nSteps: 5, Sampler: Euler a, CFG scale: 3.5, "
        "Seed: 77, Size: 16x16, Model: tiny",
    )
    buf = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buf, format="PNG", pnginfo=info)
    _drop(browser, buf.getvalue(), "a1111.png")
    wait.until(lambda d: "settings read from a1111.png" in d.find_element(By.ID, "status").text)
    value = lambda i: browser.find_element(By.ID, i).get_attribute("value")  # noqa: E731
    assert (value("prompt"), value("negative"), value("steps")) == ("a blue star", "red", "5")
    assert (value("guidance"), value("seed"), value("sampler")) == ("3.5", "77", "euler_ancestral")
    assert not browser.find_element(By.ID, "random").is_selected()
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")  # no parameters at all
    _drop(browser, buf.getvalue(), "plain.png")
    wait.until(lambda d: "carries no parameters" in d.find_element(By.ID, "status").text)
