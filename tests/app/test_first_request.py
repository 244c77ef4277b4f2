"""A fresh server's very first request renders the page asked for, with the labelled navigation.

Streamlit serves the first request of a server whose entry script has a
``pages/`` folder beside it in its older directory mode (a nameless "app"
page, the page script run without ``app.py``'s sidebar). Only a real server
shows it, so these tests start ``streamlit run app.py`` and look with headless
Chromium; they skip, with the reason, where Chromium or Selenium is missing.
"""
from __future__ import annotations

import pytest

from browser_support import app_server, browser_missing, chrome, navigation_labels, wait_for_app, wait_for_text

pytestmark = [pytest.mark.slow, pytest.mark.skipif(bool(browser_missing()), reason=browser_missing() or "")]

SMALL_DEMO = {"FRACTURE_DEMO_STUDIES": "24"}
LABELS = ["Home", "Dataset Explorer", "Preprocessing Lab", "Train", "Predict", "Compare"]


def _labels(driver) -> list[str]:
    """Navigation labels without their icons."""
    return [label.split("\n")[-1] for label in navigation_labels(driver)]


def _assert_app_navigation(driver) -> None:
    """The app's own labelled navigation: Home first, every page, no nameless "app" entry."""
    labels = _labels(driver)
    assert labels[:1] == ["Home"] and "app" not in labels, labels
    assert set(LABELS) <= set(labels), labels


def _titles(driver) -> list[str]:
    from selenium.webdriver.common.by import By

    return [h.text for h in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stMain"] h1')]


@pytest.fixture()
def driver():
    d = chrome()
    yield d
    d.quit()


@pytest.fixture()
def server_home(tmp_path):
    """An empty FRACTURE_HOME (the app generates a small demo set on the first request)."""
    return tmp_path / "home"


def test_the_first_request_renders_home_with_labelled_navigation(server_home, driver):
    from selenium.webdriver.common.by import By

    with app_server(server_home, extra_env=SMALL_DEMO) as url:
        driver.get(url)
        wait_for_text(driver, "Fracture Lab", selector='[data-testid="stMain"] h1')
        wait_for_app(driver)
        _assert_app_navigation(driver)
        assert any("Fracture Lab" in t for t in _titles(driver))
        sidebar = driver.find_element(By.CSS_SELECTOR, '[data-testid="stSidebar"]').text
        assert "Active model" in sidebar, "app.py's shared sidebar is drawn"
        # one click from Home to a prediction on a shipped real X-ray
        links = [a for a in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stPageLink"] a')
                 if a.text.strip().endswith("Predict") and "xray=" in (a.get_attribute("href") or "")]
        link = links[1]  # not the picker's default, so the URL must carry it
        wanted = link.get_attribute("href").split("xray=")[1].split("&")[0]
        link.click()
        wait_for_text(driver, "Study P(")
        wait_for_app(driver)
        assert any("Predict" in t for t in _titles(driver))
        assert f"xray={wanted}" in driver.current_url
        metrics = driver.find_element(By.CSS_SELECTOR, '[data-testid="stMain"]').text
        assert "Study P(" in metrics and wanted in metrics


def test_a_first_request_to_a_page_url_runs_it_under_the_app(server_home, driver):
    from selenium.webdriver.common.by import By

    with app_server(server_home, extra_env=SMALL_DEMO) as url:
        driver.get(f"{url}/Train")
        wait_for_text(driver, "Train", selector='[data-testid="stMain"] h1')
        wait_for_app(driver)
        _assert_app_navigation(driver)
        assert any("Train" in t for t in _titles(driver))
        assert "Active model" in driver.find_element(By.CSS_SELECTOR, '[data-testid="stSidebar"]').text
