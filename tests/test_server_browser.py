"""The web page in headless Chromium (Debian's chromium + chromium-driver, driven by Selenium):
type a prompt, generate, and find the image in the gallery with its parameters."""

from __future__ import annotations

import base64
import io
import json
import shutil
import threading

import numpy as np
import pytest
from PIL import Image
from tiny_models import write_tiny_autoregressive_model, write_tiny_model

from t2i.families import load
from t2i.params import PNG_KEY
from t2i.server import ServerConfig, make_server

webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium (setup --dev)")
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER), reason="apt-get install chromium chromium-driver (setup --dev)"
)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    vocab = "a red blue green circle square star above below".split()
    folder = tmp_path_factory.mktemp("model")
    write_tiny_model(folder, sampler="euler", steps=6, vocab=vocab)
    tokens = write_tiny_autoregressive_model(tmp_path_factory.mktemp("tokens"))
    pipes = {"tiny": load(folder), "tokens": load(tokens)}
    server = make_server(pipes, ServerConfig(port=0))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.url
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=DRIVER))
    driver.set_page_load_timeout(30)
    driver.set_window_size(1280, 1400)  # the whole form in view, none of it under the buttons
    yield driver
    driver.quit()


def test_page_generates_an_image_that_carries_its_parameters(url, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    wait = WebDriverWait(browser, 30)
    wait.until(lambda d: d.find_element(By.ID, "steps").get_attribute("value") == "6")
    prompt = browser.find_element(By.ID, "prompt")
    prompt.clear()
    prompt.send_keys("a green star below a red circle")
    browser.find_element(By.ID, "random").click()  # off: a fixed seed
    seed = browser.find_element(By.ID, "seed")
    seed.clear()
    seed.send_keys("41")
    browser.find_element(By.ID, "n").clear()
    browser.find_element(By.ID, "n").send_keys("2")
    browser.find_element(By.ID, "generate").click()

    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "figure.result")) == 2)
    wait.until(
        lambda d: d.execute_script(
            "return [...document.querySelectorAll('figure.result img')]"
            ".every(i => i.naturalWidth > 0)"
        )
    )
    figures = browser.find_elements(By.CSS_SELECTOR, "figure.result")
    params = [json.loads(f.get_attribute("data-params")) for f in figures]
    assert sorted(p["seed"] for p in params) == [41, 42]
    assert {p["prompt"] for p in params} == {"a green star below a red circle"}
    assert all((p["steps"], p["sampler"], p["width"]) == (6, "euler", 16) for p in params)
    for figure, p in zip(figures, params):
        assert f"seed {p['seed']}" in figure.find_element(By.TAG_NAME, "figcaption").text
        link = figure.find_element(By.CSS_SELECTOR, "a.download")
        png = base64.b64decode(link.get_attribute("href").split(",", 1)[1])
        assert json.loads(Image.open(io.BytesIO(png)).text[PNG_KEY]) == p  # the download too
    assert "done in" in browser.find_element(By.ID, "status").text
    assert browser.find_element(By.ID, "progress").get_attribute("value") == "1"


def test_page_warns_about_words_the_model_cannot_read(url, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    wait = WebDriverWait(browser, 30)
    wait.until(lambda d: d.find_element(By.ID, "steps").get_attribute("value") == "6")
    prompt = browser.find_element(By.ID, "prompt")
    prompt.clear()
    prompt.send_keys("a turquoise circle above a minuscule square")
    browser.find_element(By.ID, "generate").click()
    wait.until(lambda d: "done in" in d.find_element(By.ID, "status").text)
    text = browser.find_element(By.ID, "status").text
    assert 'cannot read "turquoise", "minuscule"' in text, text
    prompt.clear()
    prompt.send_keys("a red circle above a blue square")
    browser.find_element(By.ID, "generate").click()
    wait.until(lambda d: d.find_element(By.ID, "status").text != text)
    wait.until(lambda d: "done in" in d.find_element(By.ID, "status").text)
    assert "cannot read" not in browser.find_element(By.ID, "status").text


def test_page_shows_the_servers_error_for_a_bad_request(url, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    wait = WebDriverWait(browser, 30)
    wait.until(lambda d: d.find_element(By.ID, "steps").get_attribute("value") == "6")
    steps = browser.find_element(By.ID, "steps")
    browser.execute_script("arguments[0].removeAttribute('max')", steps)
    steps.clear()
    steps.send_keys("5000")
    browser.find_element(By.ID, "generate").click()
    wait.until(lambda d: "max_steps" in d.find_element(By.ID, "status").text)
    assert browser.find_element(By.ID, "status").get_attribute("class") == "error"


def test_page_inpaints_a_painted_region_of_a_result(url, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    wait = WebDriverWait(browser, 30)
    wait.until(lambda d: d.find_element(By.ID, "steps").get_attribute("value") == "6")
    browser.find_element(By.ID, "generate").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "figure.result")) == 1)
    browser.find_element(By.CSS_SELECTOR, "figure.result button.edit").click()
    canvas = browser.find_element(By.ID, "mask-canvas")
    wait.until(lambda d: canvas.is_displayed())
    drag = ActionChains(browser).move_to_element_with_offset(canvas, -60, 0).click_and_hold()
    drag.move_by_offset(60, 0).move_by_offset(60, 0).release().perform()
    assert browser.find_element(By.ID, "inpaint").is_selected()
    browser.find_element(By.ID, "generate").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "figure.result")) == 2)

    new, old = browser.find_elements(By.CSS_SELECTOR, "figure.result")  # newest first
    assert "inpainted" in new.find_element(By.TAG_NAME, "figcaption").text
    p = json.loads(new.get_attribute("data-params"))
    assert p["init"] and p["mask"] and p["strength"] == 1.0

    def pixels(figure):
        src = figure.find_element(By.TAG_NAME, "img").get_attribute("src")
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))))

    same = (pixels(new) == pixels(old)).all(axis=-1).mean()
    assert 0.3 < same < 1.0  # the painted stripe was redrawn, the rest kept exactly


def test_page_sends_the_guidance_interval_and_shows_a_bad_one(url, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    wait = WebDriverWait(browser, 30)
    wait.until(lambda d: d.find_element(By.ID, "steps").get_attribute("value") == "6")
    field = browser.find_element(By.ID, "interval")
    assert field.get_attribute("value") == "all"  # the tiny model has no default interval
    field.clear()
    field.send_keys("0.5,3")
    browser.find_element(By.ID, "generate").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "figure.result")) == 1)
    figure = browser.find_element(By.CSS_SELECTOR, "figure.result")
    assert json.loads(figure.get_attribute("data-params"))["guidance_interval"] == [0.5, 3.0]
    assert "sigma in (0.5, 3]" in figure.find_element(By.TAG_NAME, "figcaption").text

    field.clear()
    field.send_keys("3,0.5")
    browser.find_element(By.ID, "generate").click()
    wait.until(lambda d: "interval" in d.find_element(By.ID, "status").text)
    assert browser.find_element(By.ID, "status").get_attribute("class") == "error"
    assert "got [3, 0.5]" in browser.find_element(By.ID, "status").text  # the value, named


def test_page_sends_the_variety_cads_noise(url, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    wait = WebDriverWait(browser, 30)
    wait.until(lambda d: d.find_element(By.ID, "steps").get_attribute("value") == "6")
    field = browser.find_element(By.ID, "cads")
    assert field.get_attribute("value") == "0" and field.is_enabled()
    field.clear()
    field.send_keys("0.75")
    browser.find_element(By.ID, "generate").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "figure.result")) == 1)
    figure = browser.find_element(By.CSS_SELECTOR, "figure.result")
    assert json.loads(figure.get_attribute("data-params"))["cads_noise"] == 0.75
    assert "variety (CADS) 0.75" in figure.find_element(By.TAG_NAME, "figcaption").text

    field.clear()
    field.send_keys("-2")  # the form refuses it before a request is made (min 0)
    assert not browser.execute_script('return document.getElementById("cads").checkValidity()')


def test_page_offers_what_the_selected_model_supports(url, browser):
    """An autoregressive model fixes its steps and edits nothing: the page disables those."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    browser.get(url)
    wait = WebDriverWait(browser, 30)
    wait.until(lambda d: d.find_element(By.ID, "steps").get_attribute("value") == "6")
    enabled = {i: browser.find_element(By.ID, i).is_enabled() for i in ("steps", "interval")}
    assert enabled == {"steps": True, "interval": True}
    assert browser.find_element(By.ID, "edit").get_attribute("disabled") is None
    Select(browser.find_element(By.ID, "model")).select_by_value("tokens")
    wait.until(
        lambda d: d.find_element(By.ID, "sampler").get_attribute("value") == "autoregressive"
    )
    assert not browser.find_element(By.ID, "steps").is_enabled()
    assert not browser.find_element(By.ID, "interval").is_enabled()
    assert not browser.find_element(By.ID, "cads").is_enabled()  # no noise levels to anneal over
    assert browser.find_element(By.ID, "edit").get_attribute("disabled") is not None
    Select(browser.find_element(By.ID, "model")).select_by_value("tiny")
    wait.until(lambda d: d.find_element(By.ID, "steps").is_enabled())


def test_page_applies_a_ticked_lora_at_its_scale(tmp_path, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    from test_adapters_lora_pipeline import make_lora

    folder = write_tiny_model(tmp_path / "model", sampler="euler", steps=4)
    pipe = load(folder)
    make_lora(pipe, tmp_path / "loras", "style", 0)
    server = make_server({"tiny": pipe}, ServerConfig(port=0, lora_dir=str(tmp_path / "loras")))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        browser.get(server.url)
        wait = WebDriverWait(browser, 30)
        wait.until(lambda d: d.find_element(By.ID, "steps").get_attribute("value") == "4")
        assert browser.find_element(By.ID, "lora-box").is_displayed()
        browser.find_element(By.ID, "random").click()  # a fixed seed
        browser.find_element(By.CSS_SELECTOR, "input[data-lora='style']").click()
        scale = browser.find_element(By.CSS_SELECTOR, "input[data-scale='style']")
        scale.clear()
        scale.send_keys("0.5")
        browser.find_element(By.ID, "generate").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "figure.result")) == 1)
        figure = browser.find_element(By.CSS_SELECTOR, "figure.result")
        params = json.loads(figure.get_attribute("data-params"))
        assert [entry[:2] for entry in params["loras"]] == [["style", 0.5]]
        assert "LoRAs style:0.5" in figure.find_element(By.TAG_NAME, "figcaption").text
    finally:
        server.shutdown()
        server.server_close()


def test_page_draws_variations_of_an_uploaded_image_with_an_unclip_model(tmp_path, browser):
    """The image-prompt box is offered only to a model that reads one; an uploaded image with
    an empty prompt comes back as variations that record it."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait
    from tiny_models import write_tiny_unclip_model

    unclip = load(write_tiny_unclip_model(tmp_path / "unclip"))
    plain = load(write_tiny_model(tmp_path / "plain", sampler="euler", steps=4))
    source = tmp_path / "source.png"
    unclip("a red circle", seed=1)[0].save(source)
    server = make_server({"plain": plain, "unclip": unclip}, ServerConfig(port=0))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        browser.get(server.url)
        wait = WebDriverWait(browser, 30)
        wait.until(lambda d: d.find_element(By.ID, "steps").get_attribute("value") == "4")
        assert browser.find_element(By.ID, "image-prompt").get_attribute("disabled") is not None
        Select(browser.find_element(By.ID, "model")).select_by_value("unclip")
        wait.until(
            lambda d: d.find_element(By.ID, "image-prompt").get_attribute("disabled") is None
        )
        browser.find_element(By.ID, "image-prompt-file").send_keys(str(source))
        wait.until(lambda d: d.find_element(By.ID, "image-prompt-preview").is_displayed())
        browser.find_element(By.ID, "prompt").clear()
        browser.find_element(By.ID, "generate").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "figure.result")) == 1)
        figure = browser.find_element(By.CSS_SELECTOR, "figure.result")
        params = json.loads(figure.get_attribute("data-params"))
        assert params["prompt"] == "" and params["image_prompt"].endswith(".png")
    finally:
        server.shutdown()
        server.server_close()
