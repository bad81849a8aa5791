"""The web console in a real headless Chromium (Debian's `chromium` + `chromium-driver`,
driven by selenium) against a real projector and server: the runs list, a run's timeline,
the time slider against `GET /runs/{id}?at_sequence=`, and a live run updating without a
reload. Writes the README's screenshot, docs/console.png.

`make test` installs Chromium when it is missing (see the Makefile's `browser` target);
without one these tests fail, saying so, rather than pass unseen.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from live_api import Live, running_api
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from behest.config import Settings
from behest.read.watch import tailer_of
from behest.testing import sample_run

SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "console.png"
PAGE_WAIT = 20.0
ROWS = "tr[data-run]"


def _chromium() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.fail(
            "NO CHROMIUM: the console's browser tests need Debian's `chromium` and "
            "`chromium-driver` (`make browser` installs them as root; or apt-get install "
            "chromium chromium-driver)",
            pytrace=False,
        )
    return browser, driver


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    binary, driver = _chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.add_argument("--window-size=1400,1000")
    chrome = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    try:
        yield chrome
    finally:
        chrome.quit()


@pytest.fixture
def live(settings: Settings, unique_group: str) -> Iterator[Live]:
    with running_api(settings, unique_group) as api:
        yield api


def _wait(chrome: WebDriver, what: str, check: object) -> None:
    try:
        WebDriverWait(chrome, PAGE_WAIT, poll_frequency=0.05).until(check)  # type: ignore[arg-type]
    except TimeoutException:
        raise AssertionError(f"the console did not show {what} within {PAGE_WAIT:g} s") from None


_CARD_JS = """
const card = document.getElementById("state-card");
if (!card) return {};
const fields = {};
for (const dd of card.querySelectorAll("dd[data-field]")) fields[dd.dataset.field] = dd.textContent;
fields.status = card.querySelector(".card-head").dataset.status;
fields.point = document.getElementById("point").textContent;
return fields;
"""


def _card(chrome: WebDriver) -> dict[str, str]:
    """The state card's fields by name, read in one script (the card is redrawn live);
    empty while no card is shown."""
    fields: dict[str, str] = chrome.execute_script(_CARD_JS)
    return fields


def _number(text: str) -> int:
    return int(text.replace(",", ""))


def test_the_console_lists_runs_shows_a_timeline_scrubs_and_follows_a_live_run(
    live: Live, browser: WebDriver
) -> None:
    done = sample_run(events=44, seed=61)
    active = sample_run(events=40, seed=62)
    live.emit_and_wait(done)
    live.emit_and_wait(active[:5] + active[6:14])  # 5 comes late, once the page is live
    done_id, active_id = str(done[0].run_id), str(active[0].run_id)

    # the runs list
    browser.get(f"{live.url}/")
    _wait(
        browser, "both runs", lambda c: len(c.find_elements(By.CSS_SELECTOR, "tr[data-run]")) >= 3
    )
    listed = [
        r.get_attribute("data-run") for r in browser.find_elements(By.CSS_SELECTOR, "tr[data-run]")
    ]
    assert done_id in listed and active_id in listed

    # a finished run: its timeline
    browser.get(f"{live.url}/#/runs/{done_id}")
    _wait(browser, "the timeline", lambda c: c.find_elements(By.CSS_SELECTOR, ".item.end"))
    timeline = browser.find_element(By.CSS_SELECTOR, ".timeline").text
    assert "run started" in timeline and "model turn 1" in timeline and "completed" in timeline
    assert _card(browser)["sequence"] == str(done[-1].sequence)

    # the slider: the state card shows what GET /runs/{id}?at_sequence= answers
    slider = browser.find_element(By.ID, "slider")
    slider.send_keys(Keys.HOME)
    for _ in range(17):
        slider.send_keys(Keys.ARROW_RIGHT)
    _wait(browser, "the state at sequence 17", lambda c: _card(c).get("point") == "at sequence 17")
    then = httpx.get(f"{live.url}/runs/{done_id}", params={"at_sequence": 17}).json()
    card = _card(browser)
    assert card["status"] == then["status"]
    assert _number(card["sequence"]) == then["sequence"] == 17
    assert _number(card["events"]) == then["event_count"]
    assert _number(card["total tokens"]) == then["total_usage"]["total_tokens"]
    assert _number(card["iteration"]) == then["iteration"]
    here = browser.find_element(By.CSS_SELECTOR, ".item.here")
    assert (
        int(here.get_attribute("data-from") or -1) <= 17 <= int(here.get_attribute("data-to") or -1)
    )
    assert browser.find_elements(By.CSS_SELECTOR, ".item.future")
    SCREENSHOT.parent.mkdir(exist_ok=True)
    browser.save_screenshot(str(SCREENSHOT))

    # a live run: the page follows it to the end without a reload
    browser.get(f"{live.url}/#/runs/{active_id}")
    _wait(browser, "the active run", lambda c: _card(c).get("sequence") == "13")
    browser.execute_script("window.__sameDocument = true")
    live.emit_and_wait(active[5:6])
    live.emit(active[14:])
    last = str(active[-1].sequence)
    _wait(browser, "the run's last state", lambda c: _card(c).get("sequence") == last)
    assert browser.execute_script("return window.__sameDocument") is True
    assert _card(browser)["status"] in ("completed", "failed", "cancelled")
    assert browser.find_elements(By.CSS_SELECTOR, ".item.end")
    # the late event was drawn in its place: the page shows what a fresh load shows
    shown = browser.find_element(By.CSS_SELECTOR, ".timeline").text
    browser.refresh()
    _wait(browser, "the reloaded run", lambda c: c.find_elements(By.CSS_SELECTOR, ".item.end"))
    assert browser.find_element(By.CSS_SELECTOR, ".timeline").text == shown

    # the runs list drops a run deleted while it is open
    browser.get(f"{live.url}/#/")
    row = f'tr[data-run="{done_id}"]'
    _wait(browser, "the finished run listed", lambda c: c.find_elements(By.CSS_SELECTOR, row))
    feeds = tailer_of(live.query.reader)
    _wait(browser, "the list's live feed", lambda _: feeds.watchers == 1)
    live.producer.emit_tombstone(done[0].run_id).result(timeout=PAGE_WAIT)
    _wait(browser, "the deleted run gone", lambda c: not c.find_elements(By.CSS_SELECTOR, row))
    assert browser.find_elements(By.CSS_SELECTOR, f'tr[data-run="{active_id}"]')
