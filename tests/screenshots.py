"""Start the app, open every page in headless Chromium, save a full-page screenshot of each.

    .venv/bin/python tests/screenshots.py --out /tmp/shots [--home DIR] [--fracatlas PATH]

Not a test (pytest does not collect it): a look at what a person sees, for
reviews and for checking layout changes by eye. It needs Chromium and its
driver (``apt-get install chromium chromium-driver``; ``fonts-noto-color-emoji``
for the page icons) and selenium (in requirements.txt).

The server runs with ``FRACTURE_HOME=--home`` (default: a fresh temporary
folder, so the demo set is generated as on a first start) and the shipped
model. With ``--fracatlas`` the Dataset Explorer and Compare pages are shot
a second time with that folder as the active dataset.
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from browser_support import (  # noqa: E402
    app_server,
    browser_missing,
    chrome,
    navigation_labels,
    wait_for_app,
    wait_for_text,
)

logger = logging.getLogger("screenshots")

WIDTH = 1400
MAX_HEIGHT = 9000


@dataclass
class Shot:
    """One screenshot: a URL path (and query), what must show first, an optional action after."""

    name: str
    path: str
    expect: str
    action: Callable | None = None
    wait_s: float = 0.0
    extra: dict = field(default_factory=dict)


def _click_button(label: str) -> Callable:
    def click(driver) -> None:
        from selenium.webdriver.common.by import By

        for button in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stMain"] button'):
            if label in button.text:
                button.click()
                time.sleep(1)
                wait_for_app(driver)
                return
        logger.warning("no button %r", label)
    return click


def _click_tab(label: str) -> Callable:
    def click(driver) -> None:
        from selenium.webdriver.common.by import By

        for tab in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stMain"] [role="tab"]'):
            if tab.text.strip().startswith(label):
                tab.click()
                time.sleep(2)
                wait_for_app(driver)
                return
        logger.warning("no tab %r", label)
    return click


def _then(*actions: Callable) -> Callable:
    def run(driver) -> None:
        for action in actions:
            action(driver)
    return run


def shots() -> list[Shot]:
    return [
        Shot("01_home", "/", "Fracture Lab"),
        Shot("02_dataset_explorer", "/Dataset_Explorer", "Dataset Explorer"),
        Shot("03_preprocessing_lab", "/Preprocessing_Lab", "Preprocessing Lab"),
        Shot("04_train", "/Train", "Train"),
        Shot("05_predict_gallery", "/Predict?input=Sample", "Study P("),
        Shot("06_predict_dataset", "/Predict?input=Sample&samples=Dataset", "Study P("),
        Shot("07_predict_upload", "/Predict", "Predict"),
        Shot("07b_explorer_gallery_demo", "/Dataset_Explorer", "Dataset Explorer", action=_click_tab("Gallery")),
        Shot("08_compare", "/Compare", "Compare"),
        Shot("09_reader_study", "/Reader_Study", "Reader"),
    ]


def full_page(driver, out: Path) -> None:
    """Resize the window to the main area's height, then save a PNG."""
    height = driver.execute_script(
        "const m = document.querySelector('[data-testid=\"stMain\"]');"
        "const b = document.querySelector('[data-testid=\"stMainBlockContainer\"]');"
        "return Math.max(m ? m.scrollHeight : 0, b ? b.scrollHeight + 120 : 0, 900);")
    driver.set_window_size(WIDTH, min(int(height) + 40, MAX_HEIGHT))
    time.sleep(1.5)  # plotly charts re-layout after a resize
    driver.save_screenshot(str(out))
    driver.set_window_size(WIDTH, 1000)


def take(driver, url: str, shot: Shot, out_dir: Path) -> Path:
    driver.get(url + shot.path)
    try:
        wait_for_text(driver, shot.expect, timeout_s=600)
    except Exception:  # noqa: BLE001  (a page that shows something else is still worth a look)
        logger.warning("%s: %r never showed", shot.name, shot.expect)
    wait_for_app(driver, timeout_s=600)
    if shot.action is not None:
        shot.action(driver)
    time.sleep(shot.wait_s + 1)
    path = out_dir / f"{shot.name}.png"
    full_page(driver, path)
    logger.info("%s -> %s (navigation: %s)", shot.path, path,
                ", ".join(label.split("\n")[-1] for label in navigation_labels(driver)))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the PNGs")
    parser.add_argument("--home", type=Path, help="FRACTURE_HOME for the server (default: a fresh temp folder)")
    parser.add_argument("--fracatlas", help="a FracAtlas folder to shoot Dataset Explorer and Compare with")
    parser.add_argument("--only", nargs="*", help="shot names (prefixes) to take")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    missing = browser_missing()
    if missing:
        logger.error("cannot take screenshots: %s", missing)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    home = args.home or Path(tempfile.mkdtemp(prefix="fracture-shots-"))
    todo = shots()
    if args.fracatlas:  # the sidebar's dataset choice lives in the URL
        data = "?" + urllib.parse.urlencode({"sidebar_dataset_source": "Folder path",
                                             "sidebar_dataset_path": args.fracatlas})
        todo += [
            Shot("10_dataset_explorer_fracatlas", "/Dataset_Explorer" + data, "fracatlas layout"),
            Shot("11_compare_fracatlas", "/Compare" + data, "Metrics"),
            Shot("12_explorer_gallery_fracatlas", "/Dataset_Explorer" + data, "fracatlas layout",
                 action=_click_tab("Gallery")),
            Shot("13_explorer_problems_fracatlas", "/Dataset_Explorer" + data, "fracatlas layout",
                 action=_click_tab("Problems")),
        ]
    if args.only:
        todo = [s for s in todo if any(s.name.startswith(p) for p in args.only)]
    with app_server(home, log_path=args.out / "server.log") as url:
        driver = chrome(WIDTH, 1000)
        try:
            for shot in todo:
                try:
                    take(driver, url, shot, args.out)
                except Exception as exc:  # noqa: BLE001  (one slow page must not cost the others)
                    logger.error("%s failed: %s", shot.name, str(exc).splitlines()[0] if str(exc) else exc)
                    driver.quit()
                    driver = chrome(WIDTH, 1000)
        finally:
            driver.quit()
    logger.info("screenshots in %s; server log in %s", args.out, args.out / "server.log")
    return 0


if __name__ == "__main__":
    sys.exit(main())
