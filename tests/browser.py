"""``skipdit serve`` in a real browser: start the server, drive the page in headless Chromium, take a screenshot.

The browser test and the README's figure share this code path; the figure is made with::

    PYTHONPATH=src python -m tests.browser docs/figures/serve.png

Chromium and its driver come from the system (Debian's ``chromium`` and ``chromium-driver``); nothing downloads
a browser or a driver at run time.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SRC = Path(__file__).resolve().parent.parent / "src"
START_TIMEOUT = 90  # seconds for the server to answer: importing gradio and torch on a busy 2-core machine
RUN_TIMEOUT = 120  # seconds for one request to show its result


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def server(*args: str, log: Path | None = None):
    """``skipdit serve`` on a free port of 127.0.0.1, as a subprocess; yields its URL once it answers."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])),
           "GRADIO_ANALYTICS_ENABLED": "False"}
    out = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115 (closed below)
    proc = subprocess.Popen([sys.executable, "-m", "skipdit", "serve", "--port", str(port), "--device", "cpu",
                             *args], env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_until_up(url, proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log:
            out.close()


def _wait_until_up(url: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"skipdit serve exited with code {proc.returncode} before answering")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"skipdit serve did not answer on {url} within {START_TIMEOUT} s")


def chromium(width: int = 1400, height: int = 1000):
    """Headless Chromium through Selenium, with the system's browser and driver, kept off the network."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tempfile.mkdtemp(prefix="skipdit-chromium-")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


def run_page(driver, url: str, *, model: str, condition: str, cache: str, seeds: str, steps: int) -> str:
    """Open the page, pick ``model``, type the condition, cache, seeds and steps, press the button and wait for
    both images and the speed-up; returns the result's text."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    wait = WebDriverWait(driver, RUN_TIMEOUT)
    radio = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, f'#model input[value="{model}"]')))
    driver.execute_script("arguments[0].click();", radio)
    for elem_id, value in (("condition", condition), ("cache", cache), ("seeds", seeds), ("steps", str(steps))):
        box = driver.find_element(By.CSS_SELECTOR, f"#{elem_id} textarea, #{elem_id} input")
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(Keys.DELETE)
        box.send_keys(value)
        box.send_keys(Keys.TAB)  # a number box commits its value on blur
    plan = f'#plan .skipdit-step:nth-of-type({steps})'  # the strip of the new step count is drawn
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, plan)))
    driver.find_element(By.ID, "run").click()
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#cached img")))
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#uncached img")))
    wait.until(EC.text_to_be_present_in_element((By.ID, "summary"), "speed-up"))
    return driver.find_element(By.ID, "summary").text


def screenshot(url: str, path, *, model: str = "digits/Skip-DiT", condition: str = "3", cache: str = "skip:N=2",
               seeds: str = "0-3", steps: int = 10, height: int = 1000) -> str:
    """Run one request on the page at ``url`` and save a PNG of the whole window to ``path``; returns the
    result's text."""
    driver = chromium(height=height)
    try:
        text = run_page(driver, url, model=model, condition=condition, cache=cache, seeds=seeds, steps=steps)
        time.sleep(0.5)  # the images' fade-in
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(path))
    finally:
        driver.quit()
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description="The README's screenshot of skipdit serve.")
    parser.add_argument("out", help="PNG to write, e.g. docs/figures/serve.png")
    parser.add_argument("--condition", default="0-9")
    parser.add_argument("--cache", default="skip:N=2")
    parser.add_argument("--seeds", default="0-9")
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    with server() as url:
        print(screenshot(url, args.out, condition=args.condition, cache=args.cache, seeds=args.seeds,
                         steps=args.steps, height=1300))
    return 0


if __name__ == "__main__":
    sys.exit(main())
