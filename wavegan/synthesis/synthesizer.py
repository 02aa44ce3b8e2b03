"""Synthesis from a trained run or an exported model: latents (+ style) -> audio, reproducibly.

Latent i of seed s is `uniform(fold_in(key(s), i))`, so clip i is the same whatever `n` or batch
size a caller asks for, and the same seed and style always give the same audio. A style is a
name, a mix of names with weights (`{"kick": 0.7, "tom": 0.3}`, the weighted sum of their
embeddings), per-clip ids or weights, None (every style in turn) or `{}` (no style, for runs trained
with `optim.uncond_share` > 0). Runs with several label fields or attributes also take a mapping
by field and attribute, e.g. `{"instrument": "snare", "pitch": 220}` (see `Conditioning.encode`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from wavegan.conditioning import Conditioning, style_number
from wavegan.config import MAX_SEED, ConfigError, ModelConfig
from wavegan.errors import NonFiniteError, ResourceError
from wavegan.models import kinds
from wavegan.models.layers import conv_algorithm
from wavegan.models.waveform import sample_latents
from wavegan.synthesis import export

Style = None | str | Mapping[str, float] | np.ndarray

# Sane bounds for what a user may feed the generator. Its prior is U[-1, 1]: latents up to 4x that
# range still extrapolate meaningfully, further out is garbage. Style weights are one-hot mixes:
# [-4, 4] allows strong extrapolation ("more kick than kick"); attributes are in units of the
# corpus' standard deviation around its mean.
LATENT_LIMIT = 4.0
STYLE_WEIGHT_LIMIT = 4.0
ATTRIBUTE_LIMIT = 8.0
MEMORY_SHARE = 0.5  # refuse an in-memory result larger than this share of available memory


def available_memory() -> int:
  """Bytes of memory available to a new allocation (MemAvailable on Linux)."""
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_memory(nbytes: int, what: str, hint: str) -> None:
  """Raises ResourceError, before allocating, when `nbytes` would not fit in memory."""
  free = available_memory()
  if nbytes > MEMORY_SHARE * free:
    raise ResourceError(
      f"{what} would need {nbytes / 1e9:.3g} GB of memory, {free / 1e9:.3g} GB is available; {hint}"
    )


def _check_count(name: str, value: Any, low: int = 0, high: int | None = None) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise ConfigError(f"{name}={value!r}: must be an integer")
  if value < low or (high is not None and value > high):
    raise ConfigError(f"{name}={value}: must be in [{low}, {high if high is not None else 'inf'}]")
  return int(value)


def latents(seed: int, n: int, latent_dim: int, start: int = 0) -> np.ndarray:
  """Latents float32 [n, latent_dim] for indices start .. start + n - 1 of `seed`.

  Raises:
    ConfigError: a seed outside [0, 2**32 - 1] (larger ones would wrap onto small ones), or a
      negative count or start.
  """
  seed = _check_count("seed", seed, 0, MAX_SEED)
  n, start = _check_count("n", n), _check_count("start", start)
  base = jax.random.key(seed)
  keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(start, start + n))
  return np.asarray(jax.vmap(lambda k: sample_latents(k, 1, latent_dim)[0])(keys))


def interpolation_path(
  points: np.ndarray, steps: int, method: str = "linear", start: int = 0, stop: int | None = None
) -> np.ndarray:
  """`steps` latents evenly spaced along the path through `points` [P, latent] (P >= 2).

  Args:
    points: latents to pass through, in order.
    steps: latents along the whole path (>= 2 includes both ends; 1 returns the first point).
    method: "linear", or "slerp" (great-circle, keeps the norm of Gaussian-like latents).
    start, stop: return only latents start .. stop - 1 of the path (default: all), so a long
      path is made a piece at a time.

  Returns:
    float32 [stop - start, latent].
  """
  points = np.asarray(points, np.float64)
  if points.ndim != 2 or points.shape[0] < 2:
    raise ConfigError(f"an interpolation needs at least 2 latents; got shape {points.shape}")
  if method not in ("linear", "slerp"):
    raise ConfigError(f"interpolation method {method!r}: must be 'linear' or 'slerp'")
  stop = steps if stop is None else stop
  # np.linspace(0, P - 1, steps)[start:stop], without the other steps: index * step, last exact.
  span = float(points.shape[0] - 1)
  index = np.arange(start, stop)
  pos = index * (span / (steps - 1)) if steps > 1 else np.zeros(index.size)
  pos = np.where(index == steps - 1, span, pos) if steps > 1 else pos  # [stop - start]
  seg = np.minimum(pos.astype(int), points.shape[0] - 2)
  t = (pos - seg)[:, None]  # [steps, 1]
  a, b = points[seg], points[seg + 1]  # [steps, latent]
  if method == "linear":
    return (a + t * (b - a)).astype(np.float32)
  na, nb = np.linalg.norm(a, axis=1, keepdims=True), np.linalg.norm(b, axis=1, keepdims=True)
  cos = np.clip(np.sum(a * b, axis=1, keepdims=True) / np.maximum(na * nb, 1e-12), -1.0, 1.0)
  omega = np.arccos(cos)
  so = np.sin(omega)
  safe = so > 1e-6  # nearly parallel: linear is the limit
  wa = np.where(safe, np.sin((1 - t) * omega) / np.where(safe, so, 1), 1 - t)
  wb = np.where(safe, np.sin(t * omega) / np.where(safe, so, 1), t)
  return (wa * a + wb * b).astype(np.float32)


def audio_fn(
  model: ModelConfig, graph: Any, stats: Mapping[str, Any] | None = None, conv: str = "auto"
):
  """`f(params, z [B, latent], style) -> audio [B, T, C]` for a generator graph (jit it).

  The model kind turns the generator's output into audio inside the same compiled call (SpecGAN:
  Griffin-Lim, `model.gl_iters` iterations, with the run's STFT moments).

  Args:
    model: the generator's config.
    graph: its graph definition (`kinds.abstract_generator`).
    stats: the run's corpus statistics as stored (`{"mean": [...], "std": [...]}`), for a kind
      that has them; None for one that has none.
    conv: how its convolutions run (`compute.conv`; a run's own setting when it is known).

  Raises:
    ConfigError: the kind needs statistics and `stats` is None.
  """
  kind = kinds.kind_of(model)
  arrays = kind.needs(stats)  # float32 arrays
  conditional = model.conditional

  def fn(params: Any, z: jax.Array, style: jax.Array | None) -> jax.Array:
    with conv_algorithm(conv):  # read when traced, as jit does on the first call
      out = nnx.merge(graph, params)(z, style if conditional else None)
    return kind.to_audio(out, arrays, model)  # [B, T, C]

  return fn


class Synthesizer:
  """A generator with its style names and sample rate, rendering in fixed-size batches.

  Attributes:
    model: the generator's config.
    styles: style names (one, or none, for an unconditional model: the data it learned).
    sample_rate: output rate in Hz.
    batch_size: clips per compiled call (every call has this shape: compiled once).
    info: facts about the source run (preset, step), when known.
    extras: the run's conditioning (several label fields, attributes) and the corpus statistics
      of its model kind (SpecGAN's STFT moments, `spec_moments`), when it has them.
    conditioning: `extras["conditioning"]` read.
  """

  def __init__(
    self,
    model: ModelConfig,
    styles: tuple[str, ...],
    sample_rate: int,
    params: Any,
    *,
    batch_size: int = 64,
    info: dict[str, Any] | None = None,
    extras: dict[str, Any] | None = None,
    conv: str = "auto",
  ):
    self.model = model
    self.styles = tuple(styles)
    self.sample_rate = int(sample_rate)
    self.batch_size = batch_size
    self.info = info or {}
    self.extras = dict(extras or {})
    self.conditioning = Conditioning.from_dict(self.extras.get("conditioning"))
    graph, _ = kinds.abstract_generator(model)
    kind = kinds.kind_of(model)
    stats = self.extras.get(kind.statistics) if kind.statistics else None
    self._params = jax.device_put(params)
    self._generate = jax.jit(audio_fn(model, graph, stats, conv))

  @classmethod
  def load(cls, path: str, batch_size: int = 64) -> Synthesizer:
    """Loads an exported model file, or the latest checkpoint of a training run folder.

    Raises:
      ConfigError: no such file or folder, a folder without checkpoints, or a damaged file.
    """
    if os.path.isdir(path):
      return cls.from_workdir(path, batch_size)
    if not os.path.exists(path):
      raise ConfigError(f"{path}: no such run folder or model file")
    m = export.load_model(path)
    return cls(
      m.model,
      m.styles,
      m.sample_rate,
      m.params,
      batch_size=batch_size,
      info=m.info,
      extras=m.extras,
    )

  @classmethod
  def from_workdir(cls, workdir: str, batch_size: int = 64) -> Synthesizer:
    """The EMA generator of a run folder's latest checkpoint."""
    ema, run, step = load_run_generator(workdir)
    return cls(
      run.config.model,
      run.styles,
      run.config.data.sample_rate,
      ema,
      batch_size=batch_size,
      info={"preset": run.preset, "step": step},
      extras=run.extras,
      conv=run.config.compute.conv,
    )

  @property
  def params(self) -> Any:
    return self._params

  def export(self, path: str) -> str:
    """Writes this generator as a self-contained model file (see `wavegan.synthesis.export`)."""
    host = jax.device_get(self._params)
    return export.save_model(
      path, self.model, self.styles, self.sample_rate, host, self.info, self.extras
    )

  def style_weights(self, style: Style, n: int, ids: np.ndarray | None = None) -> np.ndarray | None:
    """Any style form -> mixing weights float32 [n, S] (None for an unconditional model).

    Args:
      style: see the module docstring.
      n: clips.
      ids: the clips' indices (default 0 .. n - 1): a style of None gives clip i style i mod S.

    Raises:
      ConfigError: unknown style names, a style for an unconditional model, or bad shapes.
      NonFiniteError: weights that are not finite or outside [-4, 4] (attributes: outside 8
        standard deviations of the corpus).
    """
    if style is None and ids is not None and self.model.conditional:
      # Every style in turn, by the clips' indices: the ids that `None` means for 0 .. n - 1.
      turns = len(self.styles) if self.conditioning.simple else len(self.conditioning.fields[0][1])
      style = np.asarray(ids, np.int64) % turns
    w = self._style_weights(style, n)
    if w is not None:
      self._check_style_range(w)
    return w

  def _check_style_range(self, w: np.ndarray) -> None:
    attrs = self.model.num_attributes
    labels, values = (w[:, :-attrs], w[:, -attrs:]) if attrs else (w, w[:, :0])
    for part, limit, what in (
      (labels, STYLE_WEIGHT_LIMIT, "style weights"),
      (values, ATTRIBUTE_LIMIT, "attribute values (in standard deviations)"),
    ):
      bad = ~np.isfinite(part) | (np.abs(part) > limit)
      if bad.any():
        raise NonFiniteError(
          f"{what} must be finite and within [-{limit:g}, {limit:g}]; got {part[bad].flat[0]:g}"
        )

  def _style_weights(self, style: Style, n: int) -> np.ndarray | None:
    s = len(self.styles)
    if not self.conditioning.simple:
      return self._style_vectors(style, n)
    if not self.model.conditional:
      if style is None or (isinstance(style, str) and style in self.styles):
        return None
      raise ConfigError(
        f"this model is unconditional (trained on {', '.join(self.styles) or 'one style'}); "
        "leave the style out"
      )
    if style is None:
      return np.eye(s, dtype=np.float32)[np.arange(n) % s]
    if isinstance(style, str):
      return np.repeat(self._one_hot(style)[None], n, axis=0)
    if isinstance(style, Mapping):
      # An empty mix is "no style": what a run trained with optim.uncond_share > 0 learned.
      w = np.zeros(s, np.float32)
      for name, weight in style.items():
        value = style_number(name, weight)
        if abs(value) > STYLE_WEIGHT_LIMIT:
          raise NonFiniteError(
            f"style weight for {name!r} is {value:g}: must be within "
            f"[-{STYLE_WEIGHT_LIMIT:g}, {STYLE_WEIGHT_LIMIT:g}]"
          )
        w += value * self._one_hot(name)
      return np.repeat(w[None], n, axis=0)
    arr = np.asarray(style)
    if arr.shape == (n,) and np.issubdtype(arr.dtype, np.integer):
      return np.eye(s, dtype=np.float32)[self._check_ids(arr)]
    if arr.shape == (n, s):
      return arr.astype(np.float32)
    raise ConfigError(
      f"style must be a name, a mix, ids [{n}] or weights [{n}, {s}]; "
      f"got an array of shape {arr.shape}"
    )

  def _style_vectors(self, style: Style, n: int) -> np.ndarray:
    """`style_weights` for runs with several label fields or attributes: vectors [n, cond_dim]."""
    c = self.conditioning
    if style is None:
      return c.for_first_field(np.arange(n) % len(c.fields[0][1]))
    if isinstance(style, (str, Mapping)):
      return np.repeat(c.encode(style)[None], n, axis=0)
    arr = np.asarray(style)
    if arr.shape == (n,) and np.issubdtype(arr.dtype, np.integer):
      return c.for_first_field(self._check_ids(arr))
    if arr.shape == (n, c.dim):
      return arr.astype(np.float32)
    raise ConfigError(
      f"style must be a name, a mapping, ids [{n}] or style vectors [{n}, {c.dim}]; "
      f"got an array of shape {arr.shape}"
    )

  def _check_ids(self, ids: np.ndarray) -> np.ndarray:
    """Style ids [n] of `self.styles`, or a ConfigError naming the valid range."""
    s = len(self.styles)
    if ids.size and (ids.min() < 0 or ids.max() >= s):
      raise ConfigError(f"style ids must be in [0, {s}); got {ids.min()}..{ids.max()}")
    return ids

  def _one_hot(self, name: str) -> np.ndarray:
    if name not in self.styles:
      raise ConfigError(f"unknown style {name!r}; valid: {', '.join(self.styles)}")
    return np.eye(len(self.styles), dtype=np.float32)[self.styles.index(name)]

  def latents(self, n: int, seed: int = 0, start: int = 0) -> np.ndarray:
    """Latents float32 [n, latent] for indices start .. start + n - 1 of `seed`."""
    n = _check_count("n", n)
    check_memory(
      n * self.model.latent_dim * 4,
      f"{n} latents",
      "ask for fewer at a time (latents(n, seed, start) makes any slice)",
    )
    return latents(seed, n, self.model.latent_dim, start)

  def _check_latents(self, z: Any) -> np.ndarray:
    z = np.asarray(z)
    if (
      z.ndim != 2
      or z.shape[1] != self.model.latent_dim
      or not (np.issubdtype(z.dtype, np.floating) or np.issubdtype(z.dtype, np.integer))
    ):
      raise ConfigError(
        f"latents must be numbers [n, {self.model.latent_dim}]; got {z.dtype} {z.shape}"
      )
    bad = ~np.isfinite(z) | (np.abs(z) > LATENT_LIMIT)
    if bad.any():
      raise NonFiniteError(
        f"latents must be finite and within [-{LATENT_LIMIT:g}, "
        f"{LATENT_LIMIT:g}] (the prior is U[-1, 1]); got {z[bad][0]:g}"
      )
    return z.astype(np.float32)

  def _check_output_memory(self, n: int) -> None:
    check_memory(
      n * self.model.slice_len * self.model.channels * 4,
      f"{n} clips in memory",
      "use batches() or `wavegan render`, which stream to disk",
    )

  def batches(self, z: np.ndarray, style: Style = None) -> Iterator[tuple[int, np.ndarray]]:
    """Yields (first index, audio float32 [b, T, C]) batch by batch.

    The next batch is dispatched before the current one is copied to the host, so the device
    keeps working while the caller handles (e.g. writes) the previous batch.
    """
    z = self._check_latents(z)
    n, b = z.shape[0], self.batch_size
    w = self.style_weights(style, n)
    pending = None
    for start in range(0, n, b):
      zb = z[start : start + b]
      count = zb.shape[0]
      pad = ((0, b - count), (0, 0))
      wb = None if w is None else np.pad(w[start : start + b], pad)
      out = self._generate(self._params, np.pad(zb, pad), wb)  # dispatched, not awaited
      if pending is not None:
        yield pending[0], np.asarray(pending[1])[: pending[2]]
      pending = (start, out, count)
    if pending is not None:
      yield pending[0], np.asarray(pending[1])[: pending[2]]

  def from_latents(self, z: np.ndarray, style: Style = None) -> np.ndarray:
    """Latents [n, latent] (+ style) -> float32 audio [n, T, C]."""
    self._check_output_memory(np.shape(z)[0] if np.ndim(z) else 0)
    parts = [audio for _, audio in self.batches(z, style)]
    if not parts:
      return np.zeros((0, self.model.slice_len, self.model.channels), np.float32)
    return np.concatenate(parts, axis=0)

  def generate(self, n: int, style: Style = None, seed: int = 0) -> np.ndarray:
    """n clips float32 [n, T, C] of `style` (None: every style in turn) from `seed`."""
    n = _check_count("n", n)
    self._check_output_memory(n)
    return self.from_latents(self.latents(n, seed), style)

  def interpolate(
    self, z_a: np.ndarray, z_b: np.ndarray, steps: int, style: Style = None, method: str = "linear"
  ) -> np.ndarray:
    """`steps` clips float32 [steps, T, C] along the line (or great circle) from z_a to z_b."""
    steps = _check_count("steps", steps)
    self._check_output_memory(steps)
    ends = self._check_latents(np.stack([np.ravel(z_a), np.ravel(z_b)]))
    return self.from_latents(interpolation_path(ends, steps, method), style)


def load_run_generator(workdir: str) -> tuple[Any, Any, int]:
  """(EMA generator params, RunInfo, step) of a run folder's latest checkpoint.

  Only the EMA generator is read, not the critics or the optimiser states.

  Raises:
    ConfigError: `workdir` is not a folder or holds no checkpoint.
  """
  # Imported here: checkpoints (orbax) are read only for run folders, not for model files.
  from wavegan.run import restore_generator  # pylint: disable=g-import-not-at-top

  run, _, ema, step = restore_generator(workdir)
  return ema, run, step
