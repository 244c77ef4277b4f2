"""Start the app, open every page in headless Chromium at 1280x720 and 1920x1080, save what a person sees.

    .venv/bin/python tests/screenshots.py --out /tmp/shots [--home DIR] [--fracatlas PATH]
        [--sizes 1280x720 1920x1080] [--full] [--only NAME...]

Each shot is saved per viewport as ``NAME@WxH.png`` (the first screen, as a
projector or a laptop shows it); with ``--full`` also ``NAME@WxH-full.png``
(the whole page). Shots cover every page, Predict with an 8-image study and
in presentation mode, the Lab in presentation mode, and the Reader Study
(``tests/screenshot_reader_study.py`` shoots a reader's case and the
instructor's dashboard), and the Shortcut Lab.

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

SIZES = ((1280, 720), (1920, 1080))
MAX_HEIGHT = 9000
REPO_ROOT = Path(__file__).resolve().parents[1]
GALLERY_IMAGES = REPO_ROOT / "fracture" / "gallery" / "images"


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


def _upload(n: int) -> Callable:
    """Drop ``n`` gallery radiographs on the page's file uploader (one study)."""
    def upload(driver) -> None:
        from selenium.webdriver.common.by import By

        files = sorted(GALLERY_IMAGES.glob("*.jpg"))[:n]
        inputs = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stMain"] input[type="file"]')
        if not inputs:
            logger.warning("no file input on the page")
            return
        inputs[0].send_keys("\n".join(str(f) for f in files))
        time.sleep(2)
        wait_for_text(driver, "Study P(", timeout_s=600)
        wait_for_app(driver, timeout_s=600)
    return upload


def shots() -> list[Shot]:
    return [
        Shot("01_home", "/", "Fracture Lab"),
        Shot("02_dataset_explorer", "/Dataset_Explorer", "Dataset Explorer"),
        Shot("03_preprocessing_lab", "/Preprocessing_Lab", "Preprocessing Lab"),
        Shot("03b_preprocessing_lab_present", "/Preprocessing_Lab?present=true", "Preprocessing Lab"),
        Shot("04_train", "/Train", "Train"),
        Shot("05_predict_gallery", "/Predict?input=Sample", "Study P("),
        Shot("05b_predict_gallery_present", "/Predict?input=Sample&present=true", "Study:"),
        # the demo set is synthetic: the shipped model's radiograph gate may refuse its images (no "Study P(")
        Shot("06_predict_dataset", "/Predict?input=Sample&samples=Dataset", "Study ("),
        Shot("07_predict_upload", "/Predict?input=Upload", "Predict"),
        Shot("07a_predict_8_images", "/Predict?input=Upload", "Predict", action=_upload(8)),
        Shot("07b_explorer_gallery_demo", "/Dataset_Explorer", "Dataset Explorer", action=_click_tab("Gallery")),
        Shot("08_compare", "/Compare", "Compare"),
        Shot("09_reader_study", "/Reader_Study", "Reader"),
        Shot("09b_shortcut_lab", "/Shortcut_Lab", "With lead marker"),
    ]


def full_page(driver, out: Path, width: int, height: int) -> None:
    """Resize the window to the main area's height, save a PNG, resize back."""
    full = driver.execute_script(
        "const m = document.querySelector('[data-testid=\"stMain\"]');"
        "const b = document.querySelector('[data-testid=\"stMainBlockContainer\"]');"
        "return Math.max(m ? m.scrollHeight : 0, b ? b.scrollHeight + 120 : 0, 0);")
    fit_viewport(driver, width, min(max(int(full) + 40, height), MAX_HEIGHT))
    time.sleep(1.5)  # plotly charts re-layout after a resize
    driver.save_screenshot(str(out))
    fit_viewport(driver, width, height)
    time.sleep(1.0)


def take(driver, url: str, shot: Shot, out_dir: Path, size: tuple[int, int], *, full: bool) -> Path:
    width, height = size
    driver.get(url + shot.path)
    try:
        wait_for_text(driver, shot.expect, timeout_s=600)
    except Exception:  # noqa: BLE001  (a page that shows something else is still worth a look)
        logger.warning("%s: %r never showed", shot.name, shot.expect)
    wait_for_app(driver, timeout_s=600)
    if shot.action is not None:
        shot.action(driver)
    time.sleep(shot.wait_s + 1.5)
    path = out_dir / f"{shot.name}@{width}x{height}.png"
    driver.save_screenshot(str(path))  # the first screen: what fits without scrolling
    if full:
        full_page(driver, out_dir / f"{shot.name}@{width}x{height}-full.png", width, height)
    logger.info("%s at %dx%d -> %s (navigation: %s)", shot.path, width, height, path,
                ", ".join(label.split("\n")[-1] for label in navigation_labels(driver)))
    return path


def fit_viewport(driver, width: int, height: int) -> None:
    """Make the page's viewport (not the window around it) ``width`` x ``height``."""
    inner = driver.execute_script("return [window.innerWidth, window.innerHeight];")
    outer = driver.get_window_size()
    driver.set_window_size(outer["width"] + width - inner[0], outer["height"] + height - inner[1])


def _size(text: str) -> tuple[int, int]:
    width, height = text.lower().split("x")
    return int(width), int(height)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the PNGs")
    parser.add_argument("--home", type=Path, help="FRACTURE_HOME for the server (default: a fresh temp folder)")
    parser.add_argument("--fracatlas", help="a FracAtlas folder to shoot Dataset Explorer and Compare with")
    parser.add_argument("--only", nargs="*", help="shot names (prefixes) to take")
    parser.add_argument("--sizes", nargs="*", type=_size, default=list(SIZES), help="viewports, WxH")
    parser.add_argument("--full", action="store_true", help="also a whole-page PNG per shot")
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
        for size in args.sizes:
            driver = chrome(*size)
            fit_viewport(driver, *size)
            try:
                for shot in todo:
                    try:
                        take(driver, url, shot, args.out, size, full=args.full)
                    except Exception as exc:  # noqa: BLE001  (one slow page must not cost the others)
                        logger.error("%s failed: %s", shot.name, str(exc).splitlines()[0] if str(exc) else exc)
                        driver.quit()
                        driver = chrome(*size)
                        fit_viewport(driver, *size)
            finally:
                driver.quit()
    logger.info("screenshots in %s; server log in %s", args.out, args.out / "server.log")
    return 0


if __name__ == "__main__":
    sys.exit(main())
