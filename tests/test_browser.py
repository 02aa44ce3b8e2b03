"""The pages in a real browser: headless Chromium (Debian's, installed by `make test`) opens the
audition pages from disk and drives the studio (wavegan/synthesis/pages.py, wavegan/studio.py)."""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
import pytest

from wavegan.cli import main
from wavegan.studio import Studio, serve
from wavegan.synthesis import render

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))
from browser import DECODE, PLAY_ALL, chromium, free_port, set_number, wait_for  # noqa: E402


@pytest.fixture(scope="module")
def browser():
  try:
    driver = chromium()
  except RuntimeError as err:
    pytest.fail(str(err))
  yield driver
  driver.quit()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A tiny run with a preview at its last step, its evaluation and 3 generated clips."""
  root = tmp_path_factory.mktemp("pages")
  path = root / "run"
  args = ["train", "--workdir", str(path), "--preset", "tiny", "--steps", "2", "--no-progress"]
  assert main(args) == 0
  assert main(["evaluate", "--workdir", str(path), "--n", "12", "--out", str(root / "ev")]) == 0
  args = ["generate", "--workdir", str(path), "--n", "3", "--style", "kick", "--out"]
  assert main([*args, str(root / "clips")]) == 0
  return path


def console_errors(driver) -> list[dict]:
  return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def open_from_disk(driver, path) -> None:
  driver.get_log("browser")  # drop what earlier pages logged
  driver.get(f"file://{path}")


def check_every_player_plays(driver, count: int, seconds: float) -> None:
  results = driver.execute_async_script(PLAY_ALL)
  assert len(results) == count
  bad = [r for r in results if not r["ok"]]
  assert not bad, bad
  assert all(abs(r["duration"] - seconds) < 0.01 for r in results), results


def test_evaluation_page_loads_without_errors_and_every_clip_plays(browser, run):
  path = run.parent / "ev" / "report.html"
  open_from_disk(browser, path)
  styles = json.loads((run.parent / "ev" / "report.json").read_text())["styles"]
  assert browser.title.startswith("Evaluation of run at step 2")
  labels = [e.text for e in browser.find_elements("css selector", ".label")]
  assert {f"{s}: generated" for s in styles} <= set(labels)  # real rows where held-out clips are
  assert any(label.endswith(": real") for label in labels)
  check_every_player_plays(browser, 4 * len(labels), 16384 / 16000)
  tables = browser.find_elements("css selector", "table")
  assert any("Frechet distance" in t.text and "noise" in t.text for t in tables)
  imgs = browser.execute_script(
    "return Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)"
  )
  assert len(imgs) == 4 * len(labels) + 2 and all(imgs)  # spectrograms, accuracy, curves
  assert console_errors(browser) == []
  browser.save_screenshot(str(run.parent / "report.png"))


def test_preview_page_plays_the_preview_beside_real_clips(browser, run):
  path = run / "previews" / "step_0000002" / "report.html"
  open_from_disk(browser, path)
  labels = [e.text for e in browser.find_elements("css selector", ".label")]
  assert labels[:2] == ["clap: generated", "clap: real"] and len(labels) == 12
  check_every_player_plays(browser, 12, 16384 / 16000)
  assert console_errors(browser) == []


def test_render_index_plays_the_files_beside_it(browser, run):
  open_from_disk(browser, run.parent / "clips" / "index.html")
  check_every_player_plays(browser, 3, 16384 / 16000)
  assert "kick" in browser.find_element("css selector", "table").text
  assert console_errors(browser) == []


@pytest.fixture(scope="module")
def studio_page(run, tmp_path_factory):
  studio = Studio.load(str(run), str(tmp_path_factory.mktemp("favourites")))
  port = free_port()
  app = serve(studio, port=port, block=False)
  yield studio, f"http://127.0.0.1:{port}/"
  app.close()


def test_studio_generates_mixes_plays_and_keeps_a_favourite(browser, studio_page):
  from selenium.webdriver.common.by import By

  studio, url = studio_page
  browser.get(url)
  css = lambda sel: browser.find_elements(By.CSS_SELECTOR, sel)
  wait_for(lambda: css("#generate"), what="the page")
  set_number(browser, "#style-1 input[type=number]", "0.5")  # clap 1 + hat 0.5
  set_number(browser, "#seed input", "42")
  set_number(browser, "#count input[type=number]", "3")
  status = lambda: css("#status")[0].text
  t0 = time.perf_counter()
  css("#generate")[0].click()
  wait_for(lambda: "seed 42: 3 clips" in status(), what="the clips")
  links = wait_for(
    lambda: [a.get_attribute("href") for a in css("[id^=clip-] a[download]")][:3],
    what="the players",
  )
  decoded = browser.execute_async_script(DECODE, links)
  answered = time.perf_counter() - t0
  assert decoded == [[1, pytest.approx(16384 / 16000, abs=1e-4)]] * 3, decoded
  assert len(css("#clip-3 a[download]")) == 0  # only as many players as clips
  print(f"studio: click -> 3 decoded clips in {answered:.2f} s")

  css("#clip-0 button[aria-label=Play]")[0].click()  # it plays: the button becomes a pause
  wait_for(lambda: css("#clip-0 button[aria-label=Pause]"), 10, "playback")

  css("#keep-1")[0].click()
  wait_for(lambda: "kept" in status(), what="the favourite")
  rows = studio.favourites()
  assert len(rows) == 1 and json.loads(rows[0]["style"]) == {"clap": 1.0, "hat": 0.5}
  assert rows[0]["seed"] == 42 and rows[0]["latent_index"] == 1
  table = wait_for(lambda: "fav_0001.wav" in css("#favourites")[0].text, what="the table")
  assert table
  again = render.rerender(studio.synth, rows[0], studio.out_dir, path=f"{studio.out_dir}/again.wav")
  kept = os.path.join(studio.out_dir, rows[0]["file"])
  assert open(again, "rb").read() == open(kept, "rb").read()
  expected = studio.generate(42, 3, {"clap": 1.0, "hat": 0.5}).audio[1]
  import soundfile as sf

  np.testing.assert_allclose(sf.read(kept, dtype="float32")[0], expected[:, 0], atol=1 / 32767)
  browser.save_screenshot(str(os.path.join(studio.out_dir, "..", "studio.png")))


def test_studio_walks_and_shows_a_refusal_without_a_traceback(browser, studio_page):
  from selenium.webdriver.common.by import By

  studio, url = studio_page
  browser.get(url)
  css = lambda sel: browser.find_elements(By.CSS_SELECTOR, sel)
  wait_for(lambda: css("#walk"), what="the page")
  set_number(browser, "#steps input[type=number]", "5")
  css("#walk")[0].click()
  wait_for(lambda: "walk from seed 0 to seed 1: 5 clips" in css("#status")[0].text, what="walk")
  set_number(browser, "#style-0 input[type=number]", "0")  # every weight 0: refused
  css("#generate")[0].click()
  toast = wait_for(
    lambda: [t for e in css(".toast-body") if (t := e.get_attribute("textContent").strip())],
    what="the error",
  )
  assert any("every style weight is 0" in t for t in toast), toast
  assert "Traceback" not in " ".join(toast)
