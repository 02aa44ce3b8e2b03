"""Audition pages: HTML files that play a report's clips, opened from disk with no server.

An audition page (`audition_page`) is one self-contained file: every clip is embedded as a 16-bit
WAV data URI beside its spectrogram (a PNG data URI), so the page can be mailed or copied alone
and plays in any browser with no network. A clip of 16384 samples at 16 kHz adds about 44 kB;
the page states its own size. An index page (`index_pages`) lists a render's files with a player
each that points at the file beside it (a render may hold millions of clips: nothing is
embedded, players load only when played, and the list is split over pages of `INDEX_ROWS` rows).
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import soundfile as sf

from wavegan.files import write_text
from wavegan.synthesis import previews

INDEX_ROWS = 1000  # rows per index page
INDEX_FIELDS = ("file", "job", "style", "seed")

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; background: #fafafa; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
.row { display: flex; flex-wrap: wrap; gap: 10px; align-items: flex-start; margin: 4px 0 12px; }
.label { width: 140px; font-weight: 600; padding-top: 40px; }
figure { margin: 0; width: 240px; background: #fff; border: 1px solid #ddd; padding: 4px; }
figure img { width: 100%; height: 90px; image-rendering: pixelated; display: block; }
figure audio { width: 100%; height: 32px; }
figcaption { font-size: 12px; color: #555; }
table { border-collapse: collapse; margin: 8px 0; background: #fff; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; font-size: 13px; }
img.wide { max-width: 100%; border: 1px solid #ddd; background: #fff; }
.note { color: #666; font-size: 12px; }
"""


@dataclasses.dataclass(frozen=True)
class ClipRow:
  """One row of players: a label ("kick: generated") and its clips float32 [K, T, C]."""

  label: str
  clips: np.ndarray
  captions: Sequence[str] = ()


def wav_bytes(clip: np.ndarray, sample_rate: int) -> bytes:
  """A clip float32 [T, C] (or [T]) as a 16-bit PCM WAV file's bytes, clipped to [-1, 1]."""
  buf = io.BytesIO()
  sf.write(buf, np.clip(clip, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
  return buf.getvalue()


def spectrogram_png(clip: np.ndarray, sample_rate: int) -> bytes:
  """A clip's log spectrogram (`previews.log_spectrogram`, channels averaged) as PNG bytes:
  one pixel per bin and frame, low frequencies at the bottom, -80 dB to the clip's peak, in
  the 256 colours of matplotlib's magma (an 8-bit palette image: a third of RGBA's size)."""
  from matplotlib import colormaps  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top  (Pillow comes with matplotlib)

  x = np.asarray(clip, np.float32)
  mono = x.mean(axis=-1) if x.ndim == 2 else x
  n_fft, hop = previews.grid_stft(sample_rate, mono.shape[0])
  spec = previews.log_spectrogram(mono, n_fft, hop)[::-1]  # [freq, frames], high first
  top = max(float(spec.max()), -79.0)
  level = np.clip((spec + 80.0) / (top + 80.0), 0.0, 1.0)
  img = Image.fromarray(np.round(level * 255).astype(np.uint8), mode="L").convert("P")
  palette = (colormaps["magma"](np.arange(256))[:, :3] * 255).round().astype(np.uint8)
  img.putpalette(palette.tobytes())
  buf = io.BytesIO()
  img.save(buf, format="PNG", optimize=True)
  return buf.getvalue()


def data_uri(mime: str, payload: bytes) -> str:
  return f"data:{mime};base64,{base64.b64encode(payload).decode('ascii')}"


def clip_figure(clip: np.ndarray, sample_rate: int, caption: str) -> str:
  """A player with its spectrogram, both embedded."""
  img = data_uri("image/png", spectrogram_png(clip, sample_rate))
  wav = data_uri("audio/wav", wav_bytes(clip, sample_rate))
  cap = html.escape(caption)
  return (
    f'<figure><img alt="spectrogram of {cap}" src="{img}">'
    f'<audio controls preload="auto" src="{wav}"></audio><figcaption>{cap}</figcaption></figure>'
  )


def markdown_html(text: str) -> str:
  """Markdown (with tables) -> HTML, by the `markdown` package."""
  import markdown  # pylint: disable=g-import-not-at-top

  return markdown.markdown(text, extensions=["tables"])


def metrics_table(values: Mapping[str, Any]) -> str:
  """A two-column HTML table of named numbers (non-numbers are left out)."""
  rows = []
  for key, v in values.items():
    try:
      num = float(np.asarray(v))
    except (TypeError, ValueError):
      continue
    rows.append(f"<tr><td>{html.escape(key)}</td><td>{num:.4g}</td></tr>")
  return "<table><tr><th>metric</th><th>value</th></tr>" + "".join(rows) + "</table>"


def audition_page(
  title: str,
  rows: Sequence[ClipRow],
  sample_rate: int,
  *,
  intro: str = "",
  sections: Sequence[tuple[str, str]] = (),
  images: Sequence[tuple[str, bytes]] = (),
) -> str:
  """The HTML of a self-contained audition page.

  Args:
    title: the page's heading.
    rows: rows of players (e.g. per style: generated, then real).
    sample_rate: of every clip.
    intro: a line of plain text under the title.
    sections: (heading, HTML) blocks after the players, e.g. the metrics tables.
    images: (caption, PNG bytes) pictures at the end, e.g. the curves.
  """
  parts = [
    "<!DOCTYPE html>",
    '<html lang="en"><head><meta charset="utf-8">',
    f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
    f"<h1>{html.escape(title)}</h1>",
  ]
  if intro:
    parts.append(f"<p>{html.escape(intro)}</p>")
  n_clips = 0
  for row in rows:
    captions = list(row.captions) or [f"{row.label} {k}" for k in range(len(row.clips))]
    figures = "".join(clip_figure(c, sample_rate, cap) for c, cap in zip(row.clips, captions))
    n_clips += len(row.clips)
    parts.append(
      f'<div class="row"><div class="label">{html.escape(row.label)}</div>{figures}</div>'
    )
  for heading, block in sections:
    parts.append(f"<h2>{html.escape(heading)}</h2>{block}")
  for caption, png in images:
    parts.append(
      f"<h2>{html.escape(caption)}</h2>"
      f'<img class="wide" alt="{html.escape(caption)}" src="{data_uri("image/png", png)}">'
    )
  body = "\n".join(parts)
  size = len(body.encode("utf-8")) / 1e6
  note = (
    f'<p class="note">{n_clips} clips embedded as 16-bit WAV at {sample_rate} Hz with their '
    f"spectrograms; this page is {size:.1f} MB and needs no server or network.</p>"
  )
  return f"{body}\n{note}\n</body></html>\n"


def index_pages(
  rows: Sequence[Mapping[str, Any]], title: str, rows_per_page: int = INDEX_ROWS
) -> list[tuple[str, str]]:
  """(file name, HTML) of the pages listing a render's clips: index.html, index_0002.html, ...

  Each row shows file, job, style and seed and a player whose source is the file, relative to
  the page (the pages sit in the render's folder)."""
  pages = max(1, -(-len(rows) // rows_per_page))
  names = ["index.html", *(f"index_{p + 1:04d}.html" for p in range(1, pages))]
  nav = " ".join(f'<a href="{n}">{p + 1}</a>' for p, n in enumerate(names)) if pages > 1 else ""
  out = []
  for p, name in enumerate(names):
    chunk = rows[p * rows_per_page : (p + 1) * rows_per_page]
    head = "".join(f"<th>{f}</th>" for f in INDEX_FIELDS) + "<th>listen</th>"
    body = []
    for r in chunk:
      cells = "".join(f"<td>{html.escape(str(r.get(f, '')))}</td>" for f in INDEX_FIELDS)
      src = html.escape(_url_path(str(r["file"])), quote=True)
      body.append(f'<tr>{cells}<td><audio controls preload="none" src="{src}"></audio></td></tr>')
    first = p * rows_per_page + 1
    last = p * rows_per_page + len(chunk)
    out.append(
      (
        name,
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<p>clips {first} to {last} of {len(rows)}</p>"
        + (f"<p>pages: {nav}</p>" if nav else "")
        + f"<table><tr>{head}</tr>\n"
        + "\n".join(body)
        + "\n</table></body></html>\n",
      )
    )
  return out


def _url_path(name: str) -> str:
  """A relative file name as a URL path (spaces, '#', '?' and '%' escaped)."""
  from urllib.parse import quote  # pylint: disable=g-import-not-at-top

  return quote(name.replace(os.sep, "/"))


def write_index_pages(out: str, rows: Sequence[Mapping[str, Any]], title: str) -> list[str]:
  """Writes `index_pages` into the folder `out`, each whole or not at all; returns the paths.

  Pages of an earlier, longer render that the new list no longer needs are removed."""
  paths = []
  for name, page in index_pages(rows, title):
    paths.append(os.path.join(out, name))
    write_text(paths[-1], page)
  keep = {os.path.basename(p) for p in paths}
  for name in os.listdir(out):
    if re.fullmatch(r"index_\d{4,}\.html", name) and name not in keep:
      os.remove(os.path.join(out, name))
  return paths
