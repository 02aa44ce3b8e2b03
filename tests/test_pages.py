"""Audition and index pages (wavegan/synthesis/pages.py): what they embed and link, read back."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import soundfile as sf

from wavegan.synthesis import pages

SR = 16000


def tone(freq: float, n: int = 4096, channels: int = 1) -> np.ndarray:
  t = np.arange(n) / SR
  return np.repeat((0.5 * np.sin(2 * np.pi * freq * t))[:, None], channels, axis=1).astype(
    np.float32
  )


def embedded(page: str, mime: str) -> list[bytes]:
  return [base64.b64decode(m) for m in re.findall(rf'src="data:{mime};base64,([^"]+)"', page)]


def test_audition_page_embeds_every_clip_as_a_wav_that_decodes_to_it():
  rows = [
    pages.ClipRow("kick: generated", np.stack([tone(100), tone(200)])),
    pages.ClipRow("kick: real", np.stack([tone(300, channels=2)] * 2)),
  ]
  page = pages.audition_page("t <&>", rows, SR, sections=[("metrics", "<table></table>")])
  wavs = embedded(page, "audio/wav")
  assert len(wavs) == 4 and page.count("<audio") == 4
  audio, rate = sf.read(io.BytesIO(wavs[1]), dtype="float32")
  assert rate == SR and audio.shape == (4096,)
  np.testing.assert_allclose(audio, tone(200)[:, 0], atol=1 / 32767)  # 16-bit PCM
  assert sf.info(io.BytesIO(wavs[2])).channels == 2
  pngs = embedded(page, "image/png")
  assert len(pngs) == 4 and all(p.startswith(b"\x89PNG") for p in pngs)
  assert "<title>t &lt;&amp;&gt;</title>" in page  # names are escaped
  size = re.search(r"this page is ([0-9.]+) MB", page)
  assert size and abs(float(size.group(1)) - len(page) / 1e6) < 0.1
  assert "http" not in page  # nothing to fetch: it opens offline


def test_spectrogram_png_shows_a_tone_at_its_frequency():
  from PIL import Image

  png = Image.open(io.BytesIO(pages.spectrogram_png(tone(4000, 16384), SR)))
  assert png.mode == "P"  # an 8-bit palette image
  img = np.asarray(png.convert("RGB"))
  bright = img.astype(int).sum(axis=(1, 2))  # rows: high frequencies first
  row = int(np.argmax(bright))
  assert abs(1 - row / img.shape[0] - 0.5) < 0.03  # 4 kHz is half of the 8 kHz Nyquist


def test_markdown_tables_become_html_tables():
  out = pages.markdown_html("| a | b |\n| --- | --- |\n| 1 | 2 |\n")
  assert "<table>" in out and "<td>1</td>" in out


def test_index_pages_split_link_and_escape():
  rows = [
    {"file": f"job a/clip #{i}.wav", "job": "job", "style": "kick", "seed": 3} for i in range(5)
  ]
  out = pages.index_pages(rows, "r", rows_per_page=2)
  assert [name for name, _ in out] == ["index.html", "index_0002.html", "index_0003.html"]
  first = out[0][1]
  assert first.count("<audio") == 2 and 'preload="none"' in first
  assert 'src="job%20a/clip%20%230.wav"' in first  # a URL, relative to the page
  assert 'href="index_0003.html"' in first and "clips 1 to 2 of 5" in first
  assert out[2][1].count("<audio") == 1


def test_write_index_pages_removes_pages_a_shorter_list_no_longer_needs(tmp_path):
  rows = [{"file": f"{i}.wav"} for i in range(2500)]
  (tmp_path / "index_notes.html").write_text("mine")  # not a page of ours: kept
  assert len(pages.write_index_pages(str(tmp_path), rows, "r")) == 3
  assert len(pages.write_index_pages(str(tmp_path), rows[:10], "r")) == 1
  assert sorted(p.name for p in tmp_path.iterdir()) == ["index.html", "index_notes.html"]
