"""How fast the studio answers a click, measured in a real browser, and its screenshots.

    python benchmarks/bench_studio.py --workdir runs/demo [--clicks 10] [--count 8]
        [--screenshots DIR] [--report runs/demo/eval/report.html]

Serves `wavegan studio` for the run (loaded and compiled once), opens it in headless Chromium
and clicks "generate" `--clicks` times with a new seed each: the time from the click to the
last of the `--count` clips fetched and decoded by the browser (sound ready to play), and the
generator's own share (the page's status line). Prints one JSON line per click and a summary;
with --screenshots, saves the studio page after a mixed-style take, and the audition page given
by --report, as PNGs.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from browser import DECODE, chromium, free_port, set_number, wait_for  # noqa: E402
from common import cpu_model, emit  # noqa: E402

from wavegan.studio import Studio, serve  # noqa: E402


def click_generate(driver, seed: int, count: int) -> dict[str, float]:
  """One take: seconds from the click to the status line, and to every clip decoded."""
  css = lambda sel: driver.find_elements("css selector", sel)
  set_number(driver, "#seed input", str(seed))
  old = {a.get_attribute("href") for a in css("[id^=clip-] a[download]")}
  t0 = time.perf_counter()
  css("#generate")[0].click()
  status = wait_for(
    lambda: (t := css("#status")[0].text).startswith(f"seed {seed}:") and t, what="the take"
  )
  t_status = time.perf_counter() - t0
  links = wait_for(
    lambda: (
      (h := [a.get_attribute("href") for a in css("[id^=clip-] a[download]")])
      and not set(h) & old
      and len(h) == count
      and h
    ),
    what="the players",
  )
  decoded = driver.execute_async_script(DECODE, links)
  t_sound = time.perf_counter() - t0
  if not all(isinstance(d, list) for d in decoded):
    raise RuntimeError(f"a clip did not decode: {decoded}")
  generator_ms = float(re.search(r"in (\d+) ms", status).group(1))
  return {"to_status_s": t_status, "to_sound_s": t_sound, "generator_ms": generator_ms}


def screenshot(driver, path: str) -> None:
  """A PNG of the window, reduced to 256 colours (a third of the size)."""
  from PIL import Image

  driver.save_screenshot(path)
  with Image.open(path) as img:
    small = img.convert("RGB").quantize(256)
  small.save(path, optimize=True)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument("--workdir", help="training run folder")
  ap.add_argument("--model", help="exported model file")
  ap.add_argument("--clicks", type=int, default=10)
  ap.add_argument("--count", type=int, default=8, help="clips per take")
  ap.add_argument("--out", default="runs/studio_bench", help="favourites folder")
  ap.add_argument("--screenshots", help="folder for studio.png and report.png")
  ap.add_argument("--report", help="an audition page (report.html) to screenshot")
  args = ap.parse_args()
  t0 = time.perf_counter()
  studio = Studio.load(args.workdir or args.model, args.out)
  port = free_port()
  app = serve(studio, port=port, block=False)
  emit("setup", cpu=cpu_model(), load_and_compile_s=round(time.perf_counter() - t0, 2))
  driver = chromium(1400, 1100)
  try:
    driver.get(f"http://127.0.0.1:{port}/")
    wait_for(lambda: driver.find_elements("css selector", "#generate"), what="the page")
    set_number(driver, "#count input[type=number]", str(args.count))
    takes = []
    for k in range(args.clicks + 1):
      t = click_generate(driver, 1000 + k, args.count)
      if k:  # the first click also warms the browser's page and Gradio's queue
        takes.append(t)
        emit("click", seed=1000 + k, **{key: round(v, 3) for key, v in t.items()})
    emit(
      "summary",
      clicks=len(takes),
      clips=args.count,
      median_to_sound_s=round(statistics.median(t["to_sound_s"] for t in takes), 3),
      max_to_sound_s=round(max(t["to_sound_s"] for t in takes), 3),
      median_generator_ms=statistics.median(t["generator_ms"] for t in takes),
    )
    if args.screenshots:
      os.makedirs(args.screenshots, exist_ok=True)
      if len(studio.styles) > 1:
        set_number(driver, "#style-1 input[type=number]", "0.5")
      click_generate(driver, 7, args.count)
      screenshot(driver, os.path.join(args.screenshots, "studio.png"))
      if args.report:
        driver.get(f"file://{os.path.abspath(args.report)}")
        screenshot(driver, os.path.join(args.screenshots, "report.png"))
  finally:
    driver.quit()
    app.close()


if __name__ == "__main__":
  main()
