"""The upload page in real headless Chromium against real gunicorn: choose a photo (file
input, drag-and-drop, paste), see the preview, the verdict in the user's language and the
top-3 bars, and correct the answer with Right / Wrong where the server takes corrections."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from model.looks_like import OTHER_CLASSES
from model.metadata import IMAGEWOOF_CLASSES, OpenSetRule
from model.preprocessing import decode_image
from service.breed_names import BREED_NAMES, OTHER_NAMES
from service.feedback.photo import private_copy
from tests.support.artifacts import rewrite_metadata, shipped_metadata
from tests.support.data import data_dir
from tests.support.gunicorn_server import GunicornServer
from tests.support.photos import jpeg_bytes
from tests.support.server import start_gunicorn

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
    reason="Debian chromium + chromium-driver not installed (apt-get install chromium "
    "chromium-driver)",
)

THANKS = "Thank you! Your answer is saved."


def _chromium(javascript: bool = True) -> Any:
    """Headless Chromium asking for English pages (whatever this machine's locale)."""
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
    prefs: dict[str, Any] = {"intl.accept_languages": "en-US,en"}
    if not javascript:
        prefs["profile.managed_default_content_settings.javascript"] = 2
    options.add_experimental_option("prefs", prefs)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    driver.profile_dir = profile
    return driver


@pytest.fixture(scope="module")
def browser() -> Iterator:
    driver = _chromium()
    yield driver
    driver.quit()
    shutil.rmtree(driver.profile_dir, ignore_errors=True)


@pytest.fixture
def russian(browser) -> Iterator:
    """The same browser with navigator.language ru-RU, for one test."""
    agent = browser.execute_script("return navigator.userAgent")
    override = "Network.setUserAgentOverride"
    browser.execute_cdp_cmd(override, {"userAgent": agent, "acceptLanguage": "ru-RU"})
    yield browser
    browser.execute_cdp_cmd(override, {"userAgent": agent, "acceptLanguage": "en-US"})


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("photos") / "dog.jpg"
    path.write_bytes(jpeg_bytes(400, 300, seed=11))
    return path


@dataclass(frozen=True)
class FeedbackServer:
    server: GunicornServer
    folder: Path  # FEEDBACK_URI: records/ and photos/ land here

    @property
    def base_url(self) -> str:
        return self.server.base_url


def _serve(
    tmp_path_factory: pytest.TempPathFactory, rule: OpenSetRule, name: str, feedback: bool
) -> tuple[GunicornServer, Path]:
    """The shipped weights with ``rule``, under gunicorn; corrections stored when ``feedback``."""
    artifact = rewrite_metadata(
        tmp_path_factory.mktemp("artifact") / f"{name}.pt", open_set=rule, version=f"test-{name}"
    )
    folder = tmp_path_factory.mktemp(f"feedback-{name}")
    env = {"MODEL_URI": str(artifact)}
    if feedback:
        env["FEEDBACK_URI"] = str(folder)
    return start_gunicorn(env), folder


@pytest.fixture(scope="module")
def rejecting_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FeedbackServer]:
    """An open-set rule no photo passes: every answer is "unknown"; corrections on."""
    rule = OpenSetRule(method="max_softmax", threshold=1.5)
    server, folder = _serve(tmp_path_factory, rule, "rejects-everything", feedback=True)
    yield FeedbackServer(server, folder)
    server.stop()


@pytest.fixture(scope="module")
def accepting_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornServer]:
    """Open-set rule none: the generated photo gets a breed, "sure"; corrections off.

    (The shipped calibrated rule rightly refuses generated noise photos.)
    """
    server, _ = _serve(tmp_path_factory, OpenSetRule(method="none"), "accepts", feedback=False)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def feedback_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FeedbackServer]:
    """Open-set rule none (every answer names a breed, "sure"), corrections stored."""
    rule = OpenSetRule(method="none")
    server, folder = _serve(tmp_path_factory, rule, "feedback", feedback=True)
    yield FeedbackServer(server, folder)
    server.stop()


@pytest.fixture(scope="module")
def unsure_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornServer]:
    """Every photo is known but no answer reaches the sure threshold: every answer "unsure"."""
    rule = OpenSetRule(method="none", sure_method="max_softmax", sure_threshold=1.5)
    server, _ = _serve(tmp_path_factory, rule, "unsure", feedback=False)
    yield server
    server.stop()


def _wait(browser, condition, message: str, timeout: float = 30) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout).until(condition, message)


def _wait_for_answer(browser) -> None:
    from selenium.webdriver.common.by import By

    _wait(
        browser,
        lambda b: (
            len(b.find_elements(By.CSS_SELECTOR, "#top-k li")) == 3
            or b.find_element(By.ID, "status").get_attribute("class") == "error"
        ),
        "no result shown",
    )


def _upload(browser, base_url: str, photo: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    browser.get(f"{base_url}/")
    assert browser.title == "BreedRecognizer"
    browser.find_element(By.ID, "image-input").send_keys(str(photo))
    _wait(browser, ec.visibility_of_element_located((By.ID, "preview")), "preview not shown", 10)
    assert browser.find_element(By.ID, "preview").get_attribute("src").startswith("blob:")
    browser.find_element(By.ID, "submit-button").click()
    _wait_for_answer(browser)


def _answer_of(base_url: str, data: bytes) -> dict[str, Any]:
    """What the API answers for these bytes (the page must say the same)."""
    response = requests.post(f"{base_url}/predict", files={"image": ("dog.jpg", data)}, timeout=30)
    assert response.status_code == 200
    return response.json()


def _records_of(folder: Path, data: bytes) -> list[dict[str, Any]]:
    """The stored corrections of this photo; its bytes must be stored once too."""
    # What the service stores of a photo: its private copy, made from the model's decode.
    resize = shipped_metadata().preprocessing.resize_size
    kept = private_copy(decode_image(data, min_side_hint=resize), 1024)
    sha256 = hashlib.sha256(kept).hexdigest()
    records = [json.loads(p.read_text()) for p in sorted((folder / "records").glob("*.json"))]
    mine = [r for r in records if r["photo_sha256"] == sha256]
    if mine:
        assert (folder / "photos" / sha256).read_bytes() == kept
    return mine


def _send_correction(browser, choice: str | None) -> str:
    """Click Right (``choice`` None) or Wrong then ``choice``; the line shown afterwards."""
    from selenium.webdriver.common.by import By

    if choice is None:
        browser.find_element(By.ID, "feedback-right").click()
    else:
        browser.find_element(By.ID, "feedback-wrong").click()
        choices = browser.find_element(By.ID, "feedback-choices")
        _wait(browser, lambda b: choices.is_displayed(), "no breeds offered", 10)
        browser.find_element(By.CSS_SELECTOR, f'#feedback-choices [data-label="{choice}"]').click()
    status = browser.find_element(By.ID, "feedback-status")
    _wait(browser, lambda b: status.get_attribute("class") in ("thanks", "error"), "no reply")
    return status.text


def test_upload_shows_top3_with_bars(
    browser, accepting_server: GunicornServer, photo: Path
) -> None:
    from selenium.webdriver.common.by import By

    base_url = accepting_server.base_url
    expected = _answer_of(base_url, photo.read_bytes())
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
    assert expected["verdict"] == "sure"
    confidence = f"{expected['breed']['confidence'] * 100:.1f}%"
    assert verdict.text == f"{expected['breed']['name']} ({confidence})"
    assert verdict.get_attribute("class") == "sure"


def test_no_feedback_buttons_when_feedback_is_off(
    browser, accepting_server: GunicornServer, photo: Path
) -> None:
    from selenium.webdriver.common.by import By

    _upload(browser, accepting_server.base_url, photo)
    assert browser.find_element(By.ID, "verdict").is_displayed()
    assert not browser.find_elements(By.ID, "feedback")
    assert not browser.find_elements(By.ID, "feedback-right")
    assert not browser.find_elements(By.ID, "feedback-wrong")


def test_page_shows_not_one_of_my_breeds(
    browser, rejecting_server: FeedbackServer, photo: Path
) -> None:
    from selenium.webdriver.common.by import By

    _upload(browser, rejecting_server.base_url, photo)
    verdict = browser.find_element(By.ID, "verdict")
    assert verdict.text == "Not one of my breeds"
    assert "unknown" in verdict.get_attribute("class")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#top-k li")) == 3  # still shown


def test_right_on_not_one_of_my_breeds_stores_none(
    browser, rejecting_server: FeedbackServer, tmp_path: Path
) -> None:
    picture = tmp_path / "cat.jpg"
    picture.write_bytes(jpeg_bytes(360, 280, seed=21))
    _upload(browser, rejecting_server.base_url, picture)
    assert _send_correction(browser, None) == THANKS
    [record] = _records_of(rejecting_server.folder, picture.read_bytes())
    assert record["label"] == "none"
    assert record["answer"]["verdict"] == "unknown"


def test_wrong_then_a_breed_stores_that_breed(
    browser, feedback_server: FeedbackServer, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    picture = tmp_path / "dog.jpg"
    picture.write_bytes(jpeg_bytes(400, 300, seed=12))
    expected = _answer_of(feedback_server.base_url, picture.read_bytes())
    _upload(browser, feedback_server.base_url, picture)
    assert browser.find_element(By.ID, "feedback-right").is_displayed()
    assert not browser.find_element(By.ID, "feedback-choices").is_displayed()
    named = expected["breed"]["wnid"]
    browser.find_element(By.ID, "feedback-wrong").click()
    offered = browser.find_elements(By.CSS_SELECTOR, "#feedback-choice-list button")
    labels = [b.get_attribute("data-label") for b in offered]
    assert labels == [*(c.wnid for c in IMAGEWOOF_CLASSES), "none"]
    assert offered[-1].text == "None of these"
    other = next(label for label in labels if label not in (named, "none"))
    assert _send_correction(browser, other) == THANKS
    assert not browser.find_element(By.ID, "feedback-buttons").is_displayed()
    assert not browser.find_element(By.ID, "feedback-question").is_displayed()
    [record] = _records_of(feedback_server.folder, picture.read_bytes())
    assert record["label"] == other
    assert record["answer"]["breed"]["wnid"] == named


def test_wrong_then_none_of_these_stores_none(
    browser, feedback_server: FeedbackServer, tmp_path: Path
) -> None:
    picture = tmp_path / "dog.jpg"
    picture.write_bytes(jpeg_bytes(400, 300, seed=13))
    _upload(browser, feedback_server.base_url, picture)
    assert _send_correction(browser, "none") == THANKS
    [record] = _records_of(feedback_server.folder, picture.read_bytes())
    assert record["label"] == "none"


def test_right_stores_the_breed_the_answer_named(
    browser, feedback_server: FeedbackServer, tmp_path: Path
) -> None:
    picture = tmp_path / "dog.jpg"
    picture.write_bytes(jpeg_bytes(400, 300, seed=14))
    expected = _answer_of(feedback_server.base_url, picture.read_bytes())
    _upload(browser, feedback_server.base_url, picture)
    assert _send_correction(browser, None) == THANKS
    [record] = _records_of(feedback_server.folder, picture.read_bytes())
    assert record["label"] == expected["breed"]["wnid"]


def test_feedback_error_is_a_friendly_line(
    browser, feedback_server: FeedbackServer, tmp_path: Path
) -> None:
    """An answer the server no longer keeps: said in words, no stack of codes."""
    picture = tmp_path / "dog.jpg"
    picture.write_bytes(jpeg_bytes(400, 300, seed=15))
    _upload(browser, feedback_server.base_url, picture)
    browser.execute_script("feedback.answerId = 'AAAAAAAAAAAAAAAA';")  # never given
    line = _send_correction(browser, None)
    assert line == "This answer is too old to correct: upload the photo again."
    assert not _records_of(feedback_server.folder, picture.read_bytes())


def test_unsure_answer_is_worded_as_unsure(
    browser, unsure_server: GunicornServer, photo: Path
) -> None:
    from selenium.webdriver.common.by import By

    expected = _answer_of(unsure_server.base_url, photo.read_bytes())
    assert expected["verdict"] == "unsure" and expected["known"] is True
    _upload(browser, unsure_server.base_url, photo)
    verdict = browser.find_element(By.ID, "verdict")
    name = expected["breed"]["name"]
    article = "an" if name[0] in "AEIOU" else "a"
    assert verdict.text == f"I think it's {article} {name}, but I'm not sure"
    assert verdict.get_attribute("class") == "unsure"


def test_russian_browser_gets_russian_page(
    russian, unsure_server: GunicornServer, photo: Path
) -> None:
    from selenium.webdriver.common.by import By

    expected = _answer_of(unsure_server.base_url, photo.read_bytes())
    _upload(russian, unsure_server.base_url, photo)
    assert russian.execute_script("return document.documentElement.lang") == "ru"
    label = russian.find_element(By.CSS_SELECTOR, "label[for=image-input]").text
    assert label == "Фото (JPEG, PNG, HEIC, WebP или GIF, до 10 МБ)"
    assert russian.find_element(By.ID, "submit-button").text == "Определить породу"
    name = BREED_NAMES[expected["breed"]["wnid"]]["ru"]
    assert russian.find_element(By.ID, "verdict").text == f"Думаю, это {name}, но я не уверен"
    first = russian.find_element(By.CSS_SELECTOR, "#top-k li .breed-name").text
    assert first.startswith(f"{name} — ")


def test_russian_not_one_of_my_breeds(
    russian, rejecting_server: FeedbackServer, photo: Path
) -> None:
    from selenium.webdriver.common.by import By

    _upload(russian, rejecting_server.base_url, photo)
    assert russian.find_element(By.ID, "verdict").text == "Это не одна из моих пород"
    assert russian.find_element(By.ID, "feedback-right").text == "Верно"
    assert russian.find_element(By.ID, "feedback-wrong").text == "Неверно"


# A File built from bytes, handed to the page as a drop or a paste is.
_HAND_OVER = """
const [encoded, name, type, how] = arguments;
const bytes = Uint8Array.from(atob(encoded), (c) => c.charCodeAt(0));
const transfer = new DataTransfer();
transfer.items.add(new File([bytes], name, { type }));
const form = document.getElementById("upload-form");
const init = { bubbles: true, cancelable: true };
if (how === "paste") {
  document.body.dispatchEvent(new ClipboardEvent("paste", { ...init, clipboardData: transfer }));
} else {
  for (const kind of how.split(",")) {
    form.dispatchEvent(new DragEvent(kind, { ...init, dataTransfer: transfer }));
  }
}
return form.classList.contains("dragging");
"""


def _hand_over(browser, data: bytes, how: str, name: str = "dog.jpg") -> bool:
    encoded = base64.b64encode(data).decode()
    return browser.execute_script(_HAND_OVER, encoded, name, "image/jpeg", how)


@pytest.mark.parametrize("how", ["drop", "paste"])
def test_dropped_or_pasted_photo_is_recognised_and_corrected(
    browser, feedback_server: FeedbackServer, how: str
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    data = jpeg_bytes(420, 310, seed=30 if how == "drop" else 31)
    expected = _answer_of(feedback_server.base_url, data)
    browser.get(f"{feedback_server.base_url}/")
    if how == "drop":
        assert _hand_over(browser, data, "dragenter,dragover") is True  # the form lights up
        assert _hand_over(browser, data, "drop") is False
    else:
        _hand_over(browser, data, "paste", name="image.png")
    _wait(browser, ec.visibility_of_element_located((By.ID, "preview")), "preview not shown", 10)
    # The form's own input holds the photo, so its "required" check passes.
    chosen = browser.execute_script("return document.getElementById('image-input').files.length")
    assert chosen == 1
    browser.find_element(By.ID, "submit-button").click()
    _wait_for_answer(browser)
    assert browser.find_element(By.ID, "verdict").text.startswith(expected["breed"]["name"])
    assert _send_correction(browser, "none") == THANKS
    [record] = _records_of(feedback_server.folder, data)
    assert record["label"] == "none"


def test_upload_inputs_take_phone_photos(browser, accepting_server: GunicornServer) -> None:
    """HEIC is accepted by the picker, and the camera input opens the rear camera."""
    from selenium.webdriver.common.by import By

    browser.get(f"{accepting_server.base_url}/")
    picker = browser.find_element(By.ID, "image-input")
    assert picker.get_attribute("accept") == "image/*,.heic,.heif"
    assert picker.get_attribute("capture") is None  # the gallery stays reachable
    camera = browser.find_element(By.ID, "camera-input")
    assert camera.get_attribute("capture") == "environment"
    assert camera.get_attribute("accept") == "image/*,.heic,.heif"
    label = browser.find_element(By.CSS_SELECTOR, "label[for=image-input]").text
    assert label == "Photo (JPEG, PNG, HEIC, WebP or GIF, up to 10 MB)"
    assert browser.find_element(By.ID, "drop-hint").is_displayed()


def test_form_works_without_javascript(accepting_server: GunicornServer, photo: Path) -> None:
    """A browser without JS posts the form to /predict and gets the answer."""
    from selenium.webdriver.common.by import By

    driver = _chromium(javascript=False)
    try:
        driver.get(f"{accepting_server.base_url}/")
        assert not driver.find_element(By.ID, "drop-hint").is_displayed()
        driver.find_element(By.ID, "image-input").send_keys(str(photo))
        driver.find_element(By.ID, "submit-button").click()
        _wait(driver, lambda d: d.current_url.endswith("/predict"), "form not posted")
        answer = json.loads(driver.find_element(By.TAG_NAME, "pre").text)
        assert answer["verdict"] == "sure" and len(answer["id"]) == 16
    finally:
        driver.quit()
        shutil.rmtree(driver.profile_dir, ignore_errors=True)


def test_page_shows_api_error_message(browser, base_url: str, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    not_a_photo = tmp_path / "notes.jpg"
    not_a_photo.write_bytes(b"this is not a photo" * 20)
    browser.get(f"{base_url}/")
    browser.find_element(By.ID, "image-input").send_keys(str(not_a_photo))
    browser.find_element(By.ID, "submit-button").click()
    _wait_for_answer(browser)
    status = browser.find_element(By.ID, "status")
    assert status.text == "Sorry: the file is not an image format we can read"
    assert not browser.find_elements(By.CSS_SELECTOR, "#top-k li")


# /predict answered with a crafted body, so the page's wording of any answer can be checked.
_CRAFTED_PREDICT = """
const body = arguments[0];
const real = window.fetch.bind(window);
window.fetch = (url, init) =>
  String(url).startsWith("/predict")
    ? Promise.resolve(new Response(JSON.stringify(body), {
        status: 200, headers: { "Content-Type": "application/json" } }))
    : real(url, init);
"""


def _crafted(answer: dict[str, Any], looks_like: dict[str, Any] | None, verdict: str) -> dict:
    """A real answer of the server, made to say ``verdict`` with this ``looks_like``."""
    breed = None if verdict == "unknown" else answer["top_k"][0]
    return {**answer, "verdict": verdict, "breed": breed, "looks_like": looks_like}


def _show_crafted(browser, base_url: str, photo: Path, body: dict[str, Any]) -> Any:
    from selenium.webdriver.common.by import By

    browser.get(f"{base_url}/")
    browser.execute_script(_CRAFTED_PREDICT, body)
    browser.find_element(By.ID, "image-input").send_keys(str(photo))
    browser.find_element(By.ID, "submit-button").click()
    _wait_for_answer(browser)
    return browser.find_element(By.ID, "verdict")


LABRADOR = {
    "wnid": "n02099712",
    "name": "Labrador retriever",
    "kind": "dog",
    "confidence": 0.62,
    "kind_confidence": 0.97,
}
SIAMESE = {
    "wnid": "n02123597",
    "name": "Siamese cat",
    "kind": "cat",
    "confidence": 0.81,
    "kind_confidence": 0.9,
}
LYNX_LIKE = {
    "wnid": "n02127052",
    "name": "Lynx",
    "kind": "cat",
    "confidence": 0.33,
    "kind_confidence": 0.7,
}


@pytest.mark.parametrize(
    ("looks_like", "verdict", "said"),
    [
        (
            LABRADOR,
            "unknown",
            "Not one of my 10 breeds — it looks like a Labrador retriever (62.0%)",
        ),
        (
            {**LABRADOR, "confidence": 0.31, "kind_confidence": 0.9},
            "unsure",
            "Probably not one of my 10 breeds — it may be a Labrador retriever (31.0%), but "
            "I'm not sure",
        ),
        (
            {
                "wnid": "n02119022",
                "name": "Red fox",
                "kind": "wild",
                "confidence": 0.7,
                "kind_confidence": 0.8,
            },
            "unknown",
            "Not one of my 10 breeds: it looks like a wild animal — Red fox (70.0%)",
        ),
        (SIAMESE, "unknown", "It's a cat — I recognise dogs (Siamese cat, I'd say: 81.0%)"),
        # A third for its class, but all cats together outweigh the rest: plainly a cat.
        (LYNX_LIKE, "unknown", "It's a cat — I recognise dogs (Lynx, I'd say: 33.0%)"),
        ({**LYNX_LIKE, "kind_confidence": 0.4}, "unknown", "It may be a cat — I recognise dogs"),
    ],
    ids=["dog", "dog-unsure-low", "wild", "cat", "cat-by-its-kind", "cat-unsure"],
)
def test_the_page_says_what_else_a_photo_looks_like(
    browser,
    feedback_server: FeedbackServer,
    photo: Path,
    looks_like: dict[str, Any],
    verdict: str,
    said: str,
) -> None:
    answer = _answer_of(feedback_server.base_url, photo.read_bytes())
    shown = _show_crafted(
        browser, feedback_server.base_url, photo, _crafted(answer, looks_like, verdict)
    )
    assert shown.text == said
    assert shown.get_attribute("class") == f"{verdict} looks-like {looks_like['kind']}"
    # Right confirms what the answer named first: the class it looks like.
    assert browser.execute_script("return feedback.named") == looks_like["wnid"]


def test_the_russian_page_says_it_too(
    russian, feedback_server: FeedbackServer, photo: Path
) -> None:
    answer = _answer_of(feedback_server.base_url, photo.read_bytes())
    dog = _show_crafted(
        russian, feedback_server.base_url, photo, _crafted(answer, LABRADOR, "unknown")
    )
    assert dog.text == "Это не одна из моих 10 пород — похоже, это лабрадор-ретривер (62,0 %)"
    cat = _show_crafted(
        russian, feedback_server.base_url, photo, _crafted(answer, SIAMESE, "unknown")
    )
    assert cat.text == "Это кошка, а я узнаю собак (похоже, сиамская кошка: 81,0 %)"


def test_wrong_then_another_breed_from_the_list_stores_its_wnid(
    browser, feedback_server: FeedbackServer, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    picture = tmp_path / "dog.jpg"
    picture.write_bytes(jpeg_bytes(400, 300, seed=16))
    _upload(browser, feedback_server.base_url, picture)
    browser.find_element(By.ID, "feedback-wrong").click()
    select = Select(browser.find_element(By.ID, "feedback-other-select"))
    offered = [o.get_attribute("value") for o in select.options]
    assert sorted(offered) == sorted(c.wnid for c in OTHER_CLASSES)
    assert [o.text for o in select.options] == sorted(o.text for o in select.options)
    select.select_by_value("n02119022")
    assert select.first_selected_option.text == OTHER_NAMES["n02119022"]["en"]
    browser.find_element(By.ID, "feedback-other-send").click()
    status = browser.find_element(By.ID, "feedback-status")
    _wait(browser, lambda b: status.get_attribute("class") in ("thanks", "error"), "no reply")
    assert status.text == THANKS
    [record] = _records_of(feedback_server.folder, picture.read_bytes())
    assert record["label"] == "n02119022"


@pytest.fixture(scope="module")
def shipped_feedback_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[FeedbackServer]:
    """The shipped artifact as served, its own rules; corrections stored."""
    folder = tmp_path_factory.mktemp("feedback-shipped")
    server = start_gunicorn({"FEEDBACK_URI": str(folder)})
    yield FeedbackServer(server, folder)
    server.stop()


@pytest.mark.data
def test_a_labrador_is_said_to_look_like_one_and_right_stores_it(
    browser, shipped_feedback_server: FeedbackServer
) -> None:
    """A real photo of another breed, end to end: the shipped rule names it, Right keeps it."""
    from selenium.webdriver.common.by import By

    folder = data_dir() / "ood" / "dogs" / "labrador"
    if not folder.is_dir():
        pytest.skip("needs ../shared/data (ood/dogs)")
    base_url = shipped_feedback_server.base_url
    for picture in sorted(folder.iterdir()):
        answer = _answer_of(base_url, picture.read_bytes())
        if (answer["looks_like"] or {}).get("wnid") == LABRADOR["wnid"]:
            break
    else:
        pytest.fail("no ood/dogs/labrador photo is said to look like a Labrador retriever")
    _upload(browser, base_url, picture)
    said = browser.find_element(By.ID, "verdict").text
    assert said.startswith("Not one of my 10 breeds — it looks like a Labrador retriever (") or (
        said.startswith("Probably not one of my 10 breeds") and "Labrador retriever" in said
    )
    assert _send_correction(browser, None) == THANKS
    [record] = _records_of(shipped_feedback_server.folder, picture.read_bytes())
    assert record["label"] == LABRADOR["wnid"]
    assert record["answer"]["looks_like"]["wnid"] == LABRADOR["wnid"]
