"""A real app server and a headless Chromium for browser tests and the screenshot script.

Why not AppTest alone: AppTest builds its own page registry on every run, so it
cannot see what a fresh server does on its very first request (the bug that
once made the pages live outside ``pages/``). These helpers start
``streamlit run app.py`` on a free port, exactly as ``make run`` does, and
drive it with Selenium + Chromium (Debian packages ``chromium`` and
``chromium-driver``).
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVER_START_TIMEOUT_S = 120
COMMAND_TIMEOUT_S = 600
CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
CHROMEDRIVER_CANDIDATES = ("chromedriver",)


def browser_missing() -> str | None:
    """Why a browser test cannot run here (``None`` when it can)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -r requirements.txt)"
    if not any(shutil.which(name) for name in CHROMIUM_CANDIDATES):
        return "no Chromium (apt-get install chromium chromium-driver)"
    if not any(shutil.which(name) for name in CHROMEDRIVER_CANDIDATES):
        return "no chromedriver (apt-get install chromium-driver)"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def app_server(home: Path, *, port: int | None = None, log_path: Path | None = None,
               extra_env: dict[str, str] | None = None) -> Iterator[str]:
    """Run ``streamlit run app.py`` with ``FRACTURE_HOME=home``; yield its URL; stop it after.

    The server's output goes to ``log_path`` (default ``home/server.log``).
    """
    port = port or free_port()
    home.mkdir(parents=True, exist_ok=True)
    log_path = log_path or home / "server.log"
    env = {**os.environ, "FRACTURE_HOME": str(home), **(extra_env or {})}
    command = [sys.executable, "-m", "streamlit", "run", str(REPO_ROOT / "app.py"),
               "--server.port", str(port), "--server.address", "127.0.0.1", "--server.headless", "true"]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until_healthy(url: str, process: subprocess.Popen | None = None,
                       timeout_s: float = SERVER_START_TIMEOUT_S) -> None:
    """Poll ``/_stcore/health`` until the server answers ``ok``.

    Raises:
        RuntimeError: the server exited or did not answer within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the app server exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read().strip() == b"ok":
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{url} did not become healthy within {timeout_s:.0f} s")


def chrome(width: int = 1400, height: int = 1000):
    """A headless Chromium WebDriver (close it with ``.quit()``)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    binary = next(filter(None, map(shutil.which, CHROMIUM_CANDIDATES)), None)
    if binary:
        options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     f"--window-size={width},{height}", "--hide-scrollbars", "--force-device-scale-factor=1"):
        options.add_argument(argument)
    driver_path = next(filter(None, map(shutil.which, CHROMEDRIVER_CANDIDATES)), None)
    service = Service(executable_path=driver_path) if driver_path else Service()
    driver = webdriver.Chrome(options=options, service=service)
    try:  # a page evaluating 500 images on a busy machine keeps Chromium busy past the default 120 s
        driver.command_executor._client_config.timeout = COMMAND_TIMEOUT_S
    except AttributeError:
        logger.debug("this selenium has no client config; keeping its command timeout")
    return driver


def wait_for_app(driver, timeout_s: float = 180) -> None:
    """Wait until the script run is over: the app is mounted and no element shows "running"."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def idle(d) -> bool:
        if not d.find_elements(By.CSS_SELECTOR, '[data-testid="stApp"]'):
            return False
        if d.find_elements(By.CSS_SELECTOR, '[data-testid="stStatusWidget"] [data-testid="stStatusWidgetRunningIcon"]'):
            return False
        if d.find_elements(By.CSS_SELECTOR, '[data-testid="stSpinner"]'):
            return False
        state = d.execute_script(
            "const a = document.querySelector('[data-testid=\"stApp\"]');"
            "return a ? a.getAttribute('data-test-script-state') : null;")
        return state in (None, "notRunning")

    WebDriverWait(driver, timeout_s, poll_frequency=0.5).until(idle)


def navigation_labels(driver) -> list[str]:
    """The page names in the sidebar navigation, in order."""
    from selenium.webdriver.common.by import By

    links = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stSidebarNav"] a, [data-testid="stSidebarNavLink"]')
    labels = []
    for link in links:
        text = link.text.strip() or (link.get_attribute("textContent") or "").strip()
        if text and text not in labels:
            labels.append(text)
    return labels


def wait_for_text(driver, text: str, timeout_s: float = 180, selector: str = '[data-testid="stMain"]') -> None:
    """Wait until ``text`` shows inside ``selector`` (after a click, the old page is still there for a moment)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def shown(d) -> bool:
        return any(text in e.text for e in d.find_elements(By.CSS_SELECTOR, selector))

    WebDriverWait(driver, timeout_s, poll_frequency=0.5).until(shown)
