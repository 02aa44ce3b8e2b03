"""`wavegan studio`: a local web page to play a model: mix styles, roll seeds, walk, keep clips.

Two halves. `Studio` is the model session, with no web code: it loads the generator once (one
compiled batch shape, `MAX_CLIPS` clips), turns the page's controls into latents and a style,
and keeps favourites: each is written like a render's clip (`render.write_clip`) with its latent
in `OUT/latents/` and a row in `OUT/manifest.csv` / `.json` that `render.rerender` turns into
the same file, bit for bit. `build_app` lays the page out with Gradio (the optional `studio`
extra), the library the field shares its demos in: sliders, players with a waveform and a
download button, and events, with no front-end code of ours.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from wavegan.config import MAX_SEED, ConfigError
from wavegan.errors import UserError
from wavegan.synthesis import render
from wavegan.synthesis.synthesizer import STYLE_WEIGHT_LIMIT, Synthesizer, interpolation_path

MAX_CLIPS = 8  # clips per take: the compiled batch
JOB = "studio"
STUDIO_JOB = render.RenderJob(name=JOB, count=1)  # 16-bit WAV at the model's rate, as rendered


@dataclasses.dataclass(frozen=True)
class Take:
  """What one click made: clip i is `audio[i]` from `latents[i]` and `style`.

  Attributes:
    latents: float32 [n, latent].
    style: a style name, a mix {name: weight, attribute: value}, or None (unconditional).
    seeds: the seed of each clip's latent (None along a walk, like a render's interpolation).
    indices: clip i's latent index within its seed (its position along a walk).
    audio: float32 [n, T, C].
    seconds: the generator's wall time for the take.
  """

  latents: np.ndarray
  style: str | dict[str, float] | None
  seeds: tuple[int | None, ...]
  indices: tuple[int, ...]
  audio: np.ndarray
  seconds: float


def check_seed(value: Any, name: str = "seed") -> int:
  """A seed from a form: a whole number in [0, MAX_SEED]."""
  try:
    v = float(value)
  except (TypeError, ValueError):
    raise ConfigError(f"{name} {value!r}: must be a whole number") from None
  if not math.isfinite(v) or v != int(v) or not 0 <= v <= MAX_SEED:
    raise ConfigError(f"{name} {value!r}: must be a whole number in [0, {MAX_SEED}]")
  return int(v)


def check_count(value: Any, name: str, low: int, high: int) -> int:
  """A count from a form: a whole number in [low, high]."""
  v = check_seed(value, name) if value is not None else -1
  if not low <= v <= high:
    raise ConfigError(f"{name} {value!r}: must be in [{low}, {high}]")
  return v


class Studio:
  """A model ready to play (see the module docstring)."""

  def __init__(self, synth: Synthesizer, out_dir: str):
    if synth.batch_size != MAX_CLIPS:
      raise ValueError(f"the studio's synthesizer renders {MAX_CLIPS} clips a call")
    self.synth = synth
    self.out_dir = out_dir

  @classmethod
  def load(cls, model: str, out_dir: str) -> Studio:
    """A model file or a run folder's latest checkpoint; favourites go to `out_dir`."""
    return cls(Synthesizer.load(model, batch_size=MAX_CLIPS), out_dir)

  @property
  def styles(self) -> tuple[str, ...]:
    """The names the style sliders mix (none for an unconditional model)."""
    if not self.synth.model.conditional:
      return ()
    cond = self.synth.conditioning
    return tuple(cond.fields[0][1]) if cond.fields else self.synth.styles

  @property
  def attributes(self) -> list[tuple[str, float, float, float]]:
    """(name, low, default, high) of each continuous attribute in its own unit: the corpus mean
    and three standard deviations either side."""
    out = []
    for a in self.synth.conditioning.attributes:
      low, mid, high = (float(v) for v in a.raw(np.array([-3.0, 0.0, 3.0])))
      out.append((a.name, low, mid, high))
    return out

  def style(
    self, weights: Sequence[float], attributes: Mapping[str, float] | None = None
  ) -> str | dict[str, float] | None:
    """The sliders -> a style: one style at weight 1 is its name, anything else a mix (with the
    attributes); None for an unconditional model.

    Raises:
      ConfigError: a weight that is not finite or outside +-STYLE_WEIGHT_LIMIT, or all zero.
    """
    if not self.styles:
      return None
    if len(weights) != len(self.styles):
      raise ConfigError(f"{len(weights)} style weights for {len(self.styles)} styles")
    mix: dict[str, float] = {}
    limit = STYLE_WEIGHT_LIMIT
    for name, w in zip(self.styles, weights):
      try:
        w = float(w)
      except (TypeError, ValueError):
        raise ConfigError(f"weight of {name} {w!r}: must be a number") from None
      if not math.isfinite(w) or abs(w) > limit:
        raise ConfigError(f"weight of {name} {w}: must be in [{-limit:g}, {limit:g}]")
      if w != 0.0:
        mix[name] = w
    if not mix:
      raise ConfigError("every style weight is 0: move at least one style slider")
    attrs = {}
    for k, v in (attributes or {}).items():
      try:
        attrs[k] = float(v)
      except (TypeError, ValueError):
        raise ConfigError(f"{k} {v!r}: must be a number") from None
      if not math.isfinite(attrs[k]):
        raise ConfigError(f"{k} {v}: must be a finite number")
    if not attrs and len(mix) == 1 and next(iter(mix.values())) == 1.0:
      return next(iter(mix))
    return {**mix, **attrs}

  def _take(
    self, z: np.ndarray, style: Any, seeds: tuple[int | None, ...], indices: tuple[int, ...]
  ) -> Take:
    t0 = time.perf_counter()
    audio = self.synth.from_latents(z, style)
    return Take(z, style, seeds, indices, audio, time.perf_counter() - t0)

  def generate(self, seed: Any, count: Any, style: Any) -> Take:
    """Clips 0 .. count - 1 of `seed`: the clips `wavegan render` makes from the same seed."""
    seed = check_seed(seed)
    n = check_count(count, "clips", 1, MAX_CLIPS)
    z = self.synth.latents(n, seed)
    return self._take(z, style, (seed,) * n, tuple(range(n)))

  def walk(self, seed_a: Any, seed_b: Any, steps: Any, method: str, style: Any) -> Take:
    """`steps` clips along the path from latent 0 of `seed_a` to latent 0 of `seed_b` (a render
    job with latent = "interpolate" and seeds = [a, b] makes the same latents)."""
    a, b = check_seed(seed_a, "seed A"), check_seed(seed_b, "seed B")
    n = check_count(steps, "steps", 2, MAX_CLIPS)
    ends = np.concatenate([self.synth.latents(1, a), self.synth.latents(1, b)])
    z = interpolation_path(ends, n, method)
    return self._take(z, style, (None,) * n, tuple(range(n)))

  def warm_up(self) -> float:
    """Compiles the generator (the first call's cost); returns its seconds."""
    t0 = time.perf_counter()
    styles = self.styles
    self.generate(0, 1, self.style([1.0] + [0.0] * (len(styles) - 1)) if styles else None)
    return time.perf_counter() - t0

  def favourites(self) -> list[dict[str, Any]]:
    """The manifest rows of the clips kept so far, oldest first."""
    rows = render.read_manifest(self.out_dir)
    return [rows[k] for k in sorted(rows) if rows[k].get("job") == JOB]

  def keep(self, take: Take, i: int) -> dict[str, Any]:
    """Saves clip `i` of `take` as OUT/fav_NNNN.wav with its latent and manifest row; returns
    the row."""
    if not 0 <= i < take.audio.shape[0]:
      raise ConfigError(f"clip {i}: this take has {take.audio.shape[0]} clips")
    kept = (re.fullmatch(r"fav_(\d+)\.wav", r["file"]) for r in self.favourites())
    number = 1 + max((int(m.group(1)) for m in kept if m), default=0)
    name = f"fav_{number:04d}"
    latents = f"latents/{name}.npy"
    render.save_array(os.path.join(self.out_dir, latents), take.latents[i : i + 1])
    row = {
      "file": f"{name}.wav",
      "job": JOB,
      "style": render.style_label(self.synth, take.style, i),
      "seed": "" if take.seeds[i] is None else take.seeds[i],
      "latent_index": take.indices[i],
      "latents": latents,
      "latent_row": 0,
      "batch_size": self.synth.batch_size,
      "format": STUDIO_JOB.format,
      "subtype": STUDIO_JOB.sound_subtype,
      "sample_rate": STUDIO_JOB.sample_rate,
      "normalize": STUDIO_JOB.normalize,
      "peak_db": STUDIO_JOB.peak_db,
      "loudness_lufs": STUDIO_JOB.loudness_lufs,
      "fade_out_ms": STUDIO_JOB.fade_out_ms,
    }
    render.write_clip(
      os.path.join(self.out_dir, row["file"]), take.audio[i], STUDIO_JOB, self.synth.sample_rate
    )
    render.write_manifest(self.out_dir, [row])
    return row


def pcm16(clip: np.ndarray) -> np.ndarray:
  """float32 [T, C] -> int16 [T] (mono) or [T, C], clipped: what the page's players get."""
  x = np.round(np.clip(clip, -1.0, 1.0) * 32767.0).astype(np.int16)
  return x[:, 0] if x.shape[1] == 1 else x


FAVOURITE_COLUMNS = ("file", "style", "seed", "latent_index")


def build_app(studio: Studio) -> Any:
  """The studio's Gradio page (see the module docstring). Element ids name every control."""
  os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
  import gradio as gr  # pylint: disable=g-import-not-at-top

  synth = studio.synth
  styles, attributes = studio.styles, studio.attributes

  def controls_style(values: Sequence[float]) -> Any:
    weights = values[: len(styles)]
    attrs = {name: v for (name, *_), v in zip(attributes, values[len(styles) :])}
    return studio.style(list(weights), attrs)

  def show(take: Take, what: str) -> list[Any]:
    n = take.audio.shape[0]
    ms = take.seconds * 1000
    status = f"{what}: {n} clips in {ms:.0f} ms"
    players = [
      gr.update(value=(synth.sample_rate, pcm16(take.audio[i])), visible=True)
      if i < n
      else gr.update(value=None, visible=False)
      for i in range(MAX_CLIPS)
    ]
    keeps = [gr.update(visible=i < n) for i in range(MAX_CLIPS)]
    return [take, status, *players, *keeps]

  def on_generate(seed, count, *values):
    try:
      take = studio.generate(seed, count, controls_style(values))
    except UserError as err:
      raise gr.Error(str(err)) from None
    return show(take, f"seed {int(seed)}")

  def on_walk(seed_a, seed_b, steps, method, *values):
    try:
      take = studio.walk(seed_a, seed_b, steps, method, controls_style(values))
    except UserError as err:
      raise gr.Error(str(err)) from None
    return show(take, f"walk from seed {int(seed_a)} to seed {int(seed_b)}")

  def favourites_table() -> list[list[Any]]:
    return [[r.get(c, "") for c in FAVOURITE_COLUMNS] for r in studio.favourites()]

  def on_keep(take, i):
    if take is None:
      raise gr.Error("generate some clips first")
    try:
      row = studio.keep(take, i)
    except (UserError, OSError) as err:
      raise gr.Error(str(err)) from None
    return f"kept {os.path.join(studio.out_dir, row['file'])}", favourites_table()

  def on_roll():
    return secrets.randbelow(MAX_SEED + 1)

  title = "wavegan studio"
  with gr.Blocks(title=title) as app:
    take_state = gr.State(None)
    gr.Markdown(
      f"# {title}\n{synth.sample_rate} Hz, {synth.model.slice_len} samples, "
      f"{synth.model.channels} channel(s); step {synth.info.get('step', '?')}. "
      f"Favourites are saved to `{studio.out_dir}`."
    )
    with gr.Row():
      with gr.Column():
        gr.Markdown("### style mix" if styles else "### unconditional model")
        sliders = [
          gr.Slider(
            0.0, 2.0, value=1.0 if k == 0 else 0.0, step=0.05, label=s, elem_id=f"style-{k}"
          )
          for k, s in enumerate(styles)
        ]
        sliders += [
          gr.Slider(lo, hi, value=mid, label=name, elem_id=f"attribute-{name}")
          for name, lo, mid, hi in attributes
        ]
      with gr.Column():
        seed = gr.Number(value=0, precision=0, label="seed", elem_id="seed")
        roll = gr.Button("roll a seed", elem_id="roll")
        count = gr.Slider(1, MAX_CLIPS, value=4, step=1, label="clips", elem_id="count")
        generate = gr.Button("generate", variant="primary", elem_id="generate")
      with gr.Column():
        gr.Markdown("### walk between two latents")
        seed_b = gr.Number(value=1, precision=0, label="to seed", elem_id="seed-b")
        steps = gr.Slider(2, MAX_CLIPS, value=MAX_CLIPS, step=1, label="steps", elem_id="steps")
        method = gr.Radio(["slerp", "linear"], value="slerp", label="path", elem_id="method")
        walk = gr.Button("walk from seed", elem_id="walk")
    status = gr.Markdown("", elem_id="status")
    players, keeps = [], []
    for first in range(0, MAX_CLIPS, 4):  # rows of four players
      with gr.Row():
        for i in range(first, first + 4):
          with gr.Column(min_width=200):
            players.append(
              gr.Audio(
                label=f"clip {i}",
                visible=False,
                interactive=False,
                buttons=["download"],
                elem_id=f"clip-{i}",
              )
            )
            keeps.append(gr.Button("keep", size="sm", visible=False, elem_id=f"keep-{i}"))
    gr.Markdown("### favourites")
    table = gr.Dataframe(
      value=favourites_table(),
      headers=list(FAVOURITE_COLUMNS),
      interactive=False,
      elem_id="favourites",
    )
    outputs = [take_state, status, *players, *keeps]
    generate.click(on_generate, [seed, count, *sliders], outputs)
    walk.click(on_walk, [seed, seed_b, steps, method, *sliders], outputs)
    roll.click(on_roll, None, seed)
    for i, keep in enumerate(keeps):
      keep.click(lambda take, i=i: on_keep(take, i), take_state, [status, table])
  return app


def serve(studio: Studio, host: str = "127.0.0.1", port: int = 7860, block: bool = True) -> Any:
  """Compiles the generator, then serves the page on host:port; returns the Gradio app."""
  studio.warm_up()
  app = build_app(studio)
  app.launch(
    server_name=host,
    server_port=port,
    prevent_thread_lock=not block,
    quiet=True,
    share=False,
  )
  return app
