"""Screenshots of the Reader Study page as a class sees it, at 1280x720 and 1920x1080.

    .venv/bin/python tests/screenshot_reader_study.py --out /tmp/shots

Not a test (pytest does not collect it). It builds a 6-case session from the
built-in gallery with the shipped model (PIN 2468), answers it for two readers
through the core, starts the app with that FRACTURE_HOME and saves, per
viewport (``WxH`` in the names): a reader's case before and after choosing
(``reader_case``, ``reader_case_chosen``: one viewport, nothing scrolled; at
1920x1080 with the *Large* image size a projector wants),
the reveal, the reader's results and the instructor's dashboard. Needs
Chromium, its driver and selenium (see tests/screenshots.py).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from browser_support import app_server, browser_missing, chrome, wait_for_app, wait_for_text  # noqa: E402

logger = logging.getLogger("screenshot_reader_study")
PIN = "2468"
VIEWPORTS = ((1280, 720), (1920, 1080))


def _prepare(home: Path) -> str:
    os.environ["FRACTURE_HOME"] = str(home)
    from fracture.reader_study import Mark, create_session, save_answer
    from fracture.serve.predictor import default_checkpoint

    from fracture.settings import get_settings
    from fracture.ui.demo import demo_studies, ensure_demo_dataset

    ensure_demo_dataset(get_settings().demo_dir, studies=demo_studies())  # as on a machine that ran the app once
    session = create_session(pin=PIN, source="gallery", n_cases=6, seed=4, checkpoint=default_checkpoint())
    for i, case in enumerate(session.cases):  # Ada misses one case, Bob calls everything fractured
        mark = Mark(0, 0.5, 0.5) if case.has_box else None
        save_answer(session.code, "Ada", case.case_id, fractured=bool(case.label) != (i == 2), confidence=50 + 10 * (i % 5),
                    mark=mark)
        save_answer(session.code, "Bob", case.case_id, fractured=True, confidence=50)
    save_answer(session.code, "Cy", session.cases[0].case_id, fractured=True, confidence=75)
    return session.code


def _shoot(driver, path: Path, full_page: bool = False) -> None:
    if full_page:
        width = driver.execute_script("return window.innerWidth")
        height = driver.execute_script(
            "const m = document.querySelector('[data-testid=\"stMain\"]'); return m ? m.scrollHeight : 720")
        _viewport(driver, width, min(max(int(height), 720), 6000))
        time.sleep(1.5)
    driver.save_screenshot(str(path))
    logger.info("saved %s", path)


def _click(driver, text: str, exact: bool = False) -> None:
    from selenium.webdriver.common.by import By

    for button in driver.find_elements(By.CSS_SELECTOR, "button"):
        label = button.text.strip()
        if (label.split("\n")[0].split(" ")[0] == text) if exact else (text in label):
            button.click()
            return
    raise RuntimeError(f"no button {text!r}")


def _viewport(driver, width: int, height: int) -> None:
    """Make the page's own area (not the window) ``width`` x ``height``: what a 1280x720 screen shows."""
    driver.set_window_size(width, height)
    inner = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    driver.set_window_size(width + width - inner[0], height + height - inner[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    missing = browser_missing()
    if missing:
        logger.error("%s", missing)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="reader-study-shots-"))
    code = _prepare(home)
    with app_server(home) as url:
        for width, height in VIEWPORTS:
            size = f"{width}x{height}"
            driver = chrome(width, height)
            _viewport(driver, width, height)
            try:
                reader = f"Dee{width}"
                driver.get(f"{url}/Reader_Study?rs-code={code}&rs-name={reader}")
                wait_for_app(driver)
                wait_for_text(driver, "How sure")
                time.sleep(3)
                if height >= 1080:  # a projector or a large screen: the reader picks the large X-ray
                    _click(driver, "Large", exact=True)
                    time.sleep(1.5)
                    wait_for_app(driver)
                _shoot(driver, args.out / f"reader_case_{size}.png")
                _click(driver, "Fractured", exact=True)
                time.sleep(1.0)
                wait_for_app(driver)
                _click(driver, "4", exact=True)
                time.sleep(1.0)
                wait_for_app(driver)
                _shoot(driver, args.out / f"reader_case_chosen_{size}.png")
                _click(driver, "Answer")
                wait_for_text(driver, "Truth:")
                time.sleep(4)
                _shoot(driver, args.out / f"reader_reveal_{size}.png")
                driver.get(f"{url}/Reader_Study?rs-code={code}&rs-name=Ada")
                wait_for_app(driver)
                wait_for_text(driver, "already taken")
                _click(driver, "continue")
                wait_for_text(driver, "Cases you missed")
                wait_for_app(driver)
                time.sleep(3)
                _shoot(driver, args.out / f"reader_results_{size}.png", full_page=True)
                _viewport(driver, width, height)
                driver.get(f"{url}/Reader_Study?rs-role={quote('the instructor')}")
                wait_for_app(driver)
                wait_for_text(driver, "Open dashboard")
                from selenium.webdriver.common.by import By
                from selenium.webdriver.common.keys import Keys

                driver.find_element(By.CSS_SELECTOR, 'input[aria-label="Session code"]').send_keys(code)
                pin = driver.find_element(By.CSS_SELECTOR, 'input[aria-label="Instructor PIN"]')
                pin.send_keys(PIN, Keys.ENTER)
                time.sleep(1)
                _click(driver, "Open dashboard")
                wait_for_text(driver, "Join code")
                time.sleep(3)
                _shoot(driver, args.out / f"instructor_dashboard_{size}.png")
                driver.find_element(By.XPATH, "//label[contains(., 'Show the class')]").click()
                wait_for_text(driver, "pointing hit")
                time.sleep(4)
                _shoot(driver, args.out / f"instructor_results_{size}.png", full_page=True)
            except Exception:
                driver.save_screenshot(str(args.out / f"failed_{size}.png"))
                raise
            finally:
                driver.quit()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
