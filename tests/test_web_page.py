"""The upload page in real headless Chromium: choose a photo, see the preview, the top-3 bars,
and the "not one of my breeds" verdict when the model says so."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from benchmarks.harness.server import GunicornServer
from benchmarks.photos import jpeg_bytes
from model.metadata import OpenSetRule
from tests.support.artifacts import rewrite_metadata
from tests.support.server import start_gunicorn

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
    reason="Debian chromium + chromium-driver not installed (apt-get install chromium "
    "chromium-driver)",
)


@pytest.fixture(scope="module")
def browser() -> Iterator:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="breedrec-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("photos") / "dog.jpg"
    path.write_bytes(jpeg_bytes(400, 300, seed=11))
    return path


@pytest.fixture(scope="module")
def rejecting_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornServer]:
    """The shipped weights with an open-set rule no photo passes: every answer is "unknown"."""
    artifact = rewrite_metadata(
        tmp_path_factory.mktemp("artifact") / "rejecting.pt",
        open_set=OpenSetRule(method="max_softmax", threshold=1.5),
        version="test-rejects-everything",
    )
    server = start_gunicorn({"MODEL_URI": str(artifact)})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def accepting_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornServer]:
    """The shipped weights with open-set rule none: the generated photo gets a breed.

    (The shipped calibrated rule rightly refuses generated noise photos.)
    """
    artifact = rewrite_metadata(
        tmp_path_factory.mktemp("artifact") / "accepting.pt",
        open_set=OpenSetRule(method="none"),
        version="test-accepts-everything",
    )
    server = start_gunicorn({"MODEL_URI": str(artifact)})
    yield server
    server.stop()


def _upload(browser, base_url: str, photo: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{base_url}/")
    assert browser.title == "BreedRecognizer"
    browser.find_element(By.ID, "image-input").send_keys(str(photo))
    WebDriverWait(browser, 10).until(
        ec.visibility_of_element_located((By.ID, "preview")), "preview not shown"
    )
    assert browser.find_element(By.ID, "preview").get_attribute("src").startswith("blob:")
    browser.find_element(By.ID, "submit-button").click()
    WebDriverWait(browser, 30).until(
        lambda b: (
            len(b.find_elements(By.CSS_SELECTOR, "#top-k li")) == 3
            or b.find_element(By.ID, "status").text.startswith("Sorry")
        ),
        "no result shown",
    )


def test_upload_shows_top3_with_bars(
    browser, accepting_server: GunicornServer, photo: Path
) -> None:
    from selenium.webdriver.common.by import By

    base_url = accepting_server.base_url

    expected = requests.post(
        f"{base_url}/predict", files={"image": ("dog.jpg", photo.read_bytes())}, timeout=30
    ).json()
    _upload(browser, base_url, photo)
    items = browser.find_elements(By.CSS_SELECTOR, "#top-k li")
    names = [li.find_element(By.CLASS_NAME, "breed-name").text for li in items]
    assert [n.split(" — ")[0] for n in names] == [b["name"] for b in expected["top_k"]]
    widths = [
        li.find_element(By.CSS_SELECTOR, ".bar > span").value_of_css_property("width")
        for li in items
    ]
    pixels = [float(w.removesuffix("px")) for w in widths]
    assert pixels == sorted(pixels, reverse=True) and pixels[0] > 0
    verdict = browser.find_element(By.ID, "verdict")
    assert verdict.is_displayed()
    assert verdict.text.startswith(expected["breed"]["name"])


def test_page_shows_not_one_of_my_breeds(
    browser, rejecting_server: GunicornServer, photo: Path
) -> None:
    from selenium.webdriver.common.by import By

    _upload(browser, rejecting_server.base_url, photo)
    verdict = browser.find_element(By.ID, "verdict")
    assert verdict.text == "Not one of my breeds"
    assert "unknown" in verdict.get_attribute("class")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#top-k li")) == 3  # still shown


def test_page_shows_api_error_message(browser, base_url: str, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    not_a_photo = tmp_path / "notes.jpg"
    not_a_photo.write_bytes(b"this is not a photo" * 20)
    _upload(browser, base_url, not_a_photo)
    status = browser.find_element(By.ID, "status")
    assert status.text == "Sorry: the file is not an image format we can read"
    assert not browser.find_elements(By.CSS_SELECTOR, "#top-k li")
