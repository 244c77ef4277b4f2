"""Screenshots of the Reader Study page as a class sees it: a reader's results and the instructor's view.

    .venv/bin/python tests/screenshot_reader_study.py --out /tmp/shots

Not a test (pytest does not collect it). It builds a 6-case session from the
built-in gallery with the shipped model, answers it for two readers through
the core (as the page would), starts the app with that FRACTURE_HOME and
saves ``reader_results.png`` and ``reader_instructor.png``. Needs Chromium,
its driver and selenium (see tests/screenshots.py).
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


def _prepare(home: Path) -> str:
    os.environ["FRACTURE_HOME"] = str(home)
    from fracture.serve.predictor import default_checkpoint
    from fracture.reader_study import create_session, save_answer

    session = create_session(source="gallery", n_cases=6, seed=4, checkpoint=default_checkpoint())
    for i, case in enumerate(session.cases):  # Ada misses one case, Bob calls everything fractured
        save_answer(session.code, "Ada", case.case_id, fractured=bool(case.label) != (i == 2), confidence=60 + 5 * i)
        save_answer(session.code, "Bob", case.case_id, fractured=True, confidence=50)
    return session.code


def _shoot(driver, path: Path) -> None:
    height = driver.execute_script("return document.body.parentNode.scrollHeight")
    driver.set_window_size(1400, min(max(height, 1000), 6000))
    time.sleep(1.0)
    driver.save_screenshot(str(path))
    logger.info("saved %s", path)


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
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver = chrome()
    with app_server(home) as url:
        driver.get(f"{url}/Reader_Study?rs-role={quote('a reader')}&rs-code={code}")
        wait_for_app(driver)
        wait_for_text(driver, "Your name")
        name = driver.find_element(By.CSS_SELECTOR, 'input[aria-label="Your name (or a pseudonym)"]')
        name.send_keys("Ada", Keys.ENTER)
        wait_for_text(driver, "Your results")
        time.sleep(3)
        _shoot(driver, args.out / "reader_results.png")
        driver.get(f"{url}/Reader_Study?rs-role={quote('the instructor')}")
        wait_for_app(driver)
        wait_for_text(driver, "Fleiss")
        time.sleep(3)
        _shoot(driver, args.out / "reader_instructor.png")
    driver.quit()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
