"""Headless Chromium for the page tests and the studio benchmark: Debian's `chromium` and
`chromium-driver` (installed by `make browser`), driven with Selenium."""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Callable
from typing import Any

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")

# Every <audio> of the page loads its source (decoding it) and starts playing; resolves with one
# result per element.
PLAY_ALL = """
const done = arguments[arguments.length - 1];
const els = Array.from(document.querySelectorAll('audio'));
Promise.all(els.map(a => new Promise(resolve => {
  const fail = () => resolve({ok: false, error: a.error ? a.error.code : 'no source'});
  const ready = () => a.play().then(() => { a.pause(); resolve({ok: true, duration: a.duration}); },
                                    e => resolve({ok: false, error: String(e)}));
  if (a.readyState >= 3) return ready();
  a.addEventListener('canplay', ready, {once: true});
  a.addEventListener('error', fail, {once: true});
  a.preload = 'auto';
  a.load();
}))).then(done);
"""

# Fetches URLs from the page, all at once, and decodes each as audio: [channels, seconds] or
# an error each.
DECODE = """
const [urls, done] = [arguments[0], arguments[arguments.length - 1]];
Promise.all(urls.map(url => fetch(url).then(r => r.arrayBuffer())
  .then(b => new OfflineAudioContext(1, 1, 44100).decodeAudioData(b))
  .then(buf => [buf.numberOfChannels, buf.duration], e => String(e)))).then(done);
"""


def chromium(width: int = 1400, height: int = 1000) -> Any:
  """A headless Chromium that may play audio without a click and keeps the console's log.

  Raises:
    RuntimeError: chromium or chromedriver is not installed.
  """
  if not (CHROMIUM and DRIVER):
    raise RuntimeError("chromium and chromedriver are needed: `make browser` installs them")
  from selenium import webdriver
  from selenium.webdriver.chrome.options import Options
  from selenium.webdriver.chrome.service import Service

  options = Options()
  options.binary_location = CHROMIUM
  for arg in (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    f"--window-size={width},{height}",
    "--autoplay-policy=no-user-gesture-required",
  ):
    options.add_argument(arg)
  options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
  driver = webdriver.Chrome(service=Service(DRIVER), options=options)
  driver.set_script_timeout(60)
  return driver


def free_port() -> int:
  """A TCP port on 127.0.0.1 that nothing listens on now."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
  """Polls `predicate` until it returns something true, which is returned.

  Raises:
    TimeoutError: it did not within `timeout` seconds.
  """
  end = time.monotonic() + timeout
  while time.monotonic() < end:
    value = predicate()
    if value:
      return value
    time.sleep(0.02)
  raise TimeoutError(f"timed out waiting for {what}")


def set_number(driver: Any, css: str, value: str) -> None:
  """Types `value` into the input at `css`; Gradio takes it when the box loses focus."""
  from selenium.webdriver.common.keys import Keys

  box = driver.find_element("css selector", css)
  box.send_keys(Keys.CONTROL, "a")
  box.send_keys(value, Keys.TAB)
