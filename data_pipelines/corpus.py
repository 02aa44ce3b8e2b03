"""Built-in procedural corpus: labelled drum and instrument one-shots synthesised from scratch.

The corpus lets every command run (training, tests, benchmarks) without downloading audio. Each
style is a small classic synthesis recipe (808-style kick, tone + noise snare, metallic hat, ...)
whose pitch, decay, noise colour, level and onset are drawn from one `np.random.Generator`, so a
clip is a pure function of `(seed, style, index, sample_rate, duration)`.

All synthesis is vectorised numpy: oscillators are closed-form sines (a swept sine integrates its
instantaneous frequency with `cumsum`), partial banks are `[K, T]` outer products, and filters are
zero-phase Butterworth magnitudes applied in the FFT domain to *stationary* noise before it is
enveloped (so the FFT's circular wrap-around cannot smear a transient).
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence

import numpy as np
import soundfile as sf

from wavegan.errors import UserError
from wavegan.files import atomic_path, check_free_space, disk_full

STYLES = ("kick", "snare", "hat", "clap", "tom", "pluck")
CORPUS_VERSION = 1  # bump whenever synthesis changes: it names the cache folder
MIN_SAMPLE_RATE = 8000

_NYQUIST_FRACTION = 0.45  # every partial and filter edge stays below 0.45 * sample_rate
_LN_1000 = float(np.log(1000.0))  # T60 (time to -60 dB) = tau * ln(1000) for exp(-t / tau)
_MAX_ONSET_S = 0.005  # random onset offset in [0, 5 ms]
_FADE_S = 0.01  # fade-out at the clip end so truncated tails never click
_808_HAT_HZ = np.array([205.3, 304.4, 369.6, 522.7, 540.0, 800.0])  # TR-808 hat oscillators
_WAV_HEADER_BYTES = 44  # canonical PCM WAV header: the size estimate of a corpus


# ----------------------------------------------------------------------------------------------
# Signal building blocks. `t` is always the time axis in seconds, float64 [T].


def _tau(t60: float | np.ndarray) -> float | np.ndarray:
  """Converts a T60 decay time (seconds to fall 60 dB) into the time constant of exp(-t / tau)."""
  return t60 / _LN_1000


def _decay(t: np.ndarray, t60: float) -> np.ndarray:
  """Exponential amplitude envelope that falls by 60 dB after `t60` seconds.

  Args:
    t: time axis in seconds, [T].
    t60: decay time in seconds.

  Returns:
    Envelope, float64 [T], 1.0 at t = 0.
  """
  return np.exp(-t / _tau(t60))


def _max_freq(sample_rate: int) -> float:
  """Highest frequency any component may use at `sample_rate` (a margin below Nyquist)."""
  return _NYQUIST_FRACTION * sample_rate


def _butterworth_gain(
  freqs: np.ndarray, low_cut: float | None, high_cut: float | None, order: int
) -> np.ndarray:
  """Magnitude response of a Butterworth high-pass and/or low-pass pair.

  Args:
    freqs: frequencies in Hz, [F].
    low_cut: high-pass corner in Hz (None: no high-pass).
    high_cut: low-pass corner in Hz (None: no low-pass).
    order: filter order (slope 6 * order dB per octave).

  Returns:
    Gain in [0, 1], float64 [F].
  """
  gain = np.ones_like(freqs)
  if high_cut is not None:
    gain /= np.sqrt(1.0 + (freqs / high_cut) ** (2 * order))
  if low_cut is not None:
    # max() keeps the DC bin finite; its gain is ~0 either way.
    gain /= np.sqrt(1.0 + (low_cut / np.maximum(freqs, 1e-3)) ** (2 * order))
  return gain


def _fft_filter(
  x: np.ndarray,
  sample_rate: int,
  *,
  low_cut: float | None = None,
  high_cut: float | None = None,
  order: int = 2,
  tilt: float = 0.0,
) -> np.ndarray:
  """Zero-phase filters a stationary signal in the FFT domain.

  Only use on stationary signals (noise, sustained partials): the FFT filter is circular, so a
  transient would leak around the clip's end.

  Args:
    x: signal, float64 [T].
    sample_rate: samples per second.
    low_cut: high-pass corner in Hz, clamped below Nyquist (None: no high-pass).
    high_cut: low-pass corner in Hz, clamped below Nyquist (None: no low-pass).
    order: Butterworth order of both edges.
    tilt: spectral slope: power ~ 1 / f**tilt (0 white, 1 pink, 2 brown).

  Returns:
    Filtered signal, float64 [T], DC removed.
  """
  n = x.shape[0]
  spec = np.fft.rfft(x)  # [T // 2 + 1]
  freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
  top = _max_freq(sample_rate)
  low_cut = None if low_cut is None else min(low_cut, 0.8 * top)
  high_cut = None if high_cut is None else min(high_cut, top)
  # Amplitude ~ f^(-tilt / 2); the 20 Hz floor stops brown noise from exploding near DC.
  gain = np.maximum(freqs, 20.0) ** (-0.5 * tilt)
  gain *= _butterworth_gain(freqs, low_cut, high_cut, order)
  gain[0] = 0.0
  return np.fft.irfft(spec * gain, n)


def _unit_rms(x: np.ndarray) -> np.ndarray:
  """Scales `x` [T] to unit RMS (zeros stay zeros)."""
  return x / (np.sqrt(np.mean(x * x)) + 1e-12)


def _noise(
  rng: np.random.Generator,
  n: int,
  sample_rate: int,
  *,
  low_cut: float | None = None,
  high_cut: float | None = None,
  order: int = 2,
) -> np.ndarray:
  """Band-limited noise of a random colour between white (0), pink (1) and brown (2).

  Args:
    rng: random generator (consumes one colour draw and `n` normals).
    n: number of samples T.
    sample_rate: samples per second.
    low_cut: high-pass corner in Hz, or None.
    high_cut: low-pass corner in Hz, or None.
    order: Butterworth order of both edges.

  Returns:
    Noise with unit RMS, float64 [T].
  """
  tilt = rng.uniform(0.0, 2.0)
  white = rng.standard_normal(n)
  shaped = _fft_filter(
    white, sample_rate, low_cut=low_cut, high_cut=high_cut, order=order, tilt=tilt
  )
  return _unit_rms(shaped)


def _swept_sine(
  t: np.ndarray, sample_rate: int, f_start: float, f_end: float, sweep_t60: float
) -> np.ndarray:
  """Sine whose pitch glides exponentially from `f_start` to `f_end` (the 808 kick/tom trick).

  Args:
    t: time axis in seconds, [T].
    sample_rate: samples per second.
    f_start: initial frequency in Hz.
    f_end: final frequency in Hz.
    sweep_t60: time for the glide to cover all but 1/1000 of the interval, in seconds.

  Returns:
    Oscillator output in [-1, 1], float64 [T].
  """
  freq = f_end + (f_start - f_end) * _decay(t, sweep_t60)  # [T] Hz
  freq = np.minimum(freq, _max_freq(sample_rate))
  phase = 2.0 * np.pi * np.cumsum(freq) / sample_rate  # integrate instantaneous frequency
  return np.sin(phase)


def _partials(
  t: np.ndarray,
  sample_rate: int,
  freqs: np.ndarray,
  amps: np.ndarray,
  t60s: np.ndarray,
  phases: np.ndarray,
) -> np.ndarray:
  """Sum of exponentially decaying sines; partials above the Nyquist margin are dropped.

  Args:
    t: time axis in seconds, [T].
    sample_rate: samples per second.
    freqs: partial frequencies in Hz, [K].
    amps: partial amplitudes, [K].
    t60s: per-partial decay times in seconds, [K].
    phases: initial phases in radians, [K].

  Returns:
    Summed signal, float64 [T].
  """
  keep = freqs < _max_freq(sample_rate)  # dropping (not clamping) keeps the spectrum honest
  freqs, amps, t60s, phases = freqs[keep], amps[keep], t60s[keep], phases[keep]
  if freqs.size == 0:
    return np.zeros_like(t)
  osc = np.sin(2.0 * np.pi * freqs[:, None] * t[None, :] + phases[:, None])  # [K, T]
  env = np.exp(-t[None, :] / _tau(t60s)[:, None])  # [K, T]
  return amps @ (osc * env)  # [T]


# ----------------------------------------------------------------------------------------------
# One recipe per style: (rng, t, sample_rate) -> unnormalised signal, float64 [T].


def _kick(rng: np.random.Generator, t: np.ndarray, sample_rate: int) -> np.ndarray:
  """Pitched sine with a fast exponential downward sweep, soft saturation and a noise click."""
  f_end = rng.uniform(40.0, 60.0)
  f_start = f_end * rng.uniform(2.5, 4.5)
  body = _swept_sine(t, sample_rate, f_start, f_end, rng.uniform(0.03, 0.1))
  body *= _decay(t, rng.uniform(0.3, 0.8))
  drive = rng.uniform(1.0, 2.0)
  body = np.tanh(drive * body) / np.tanh(drive)  # analog-style drive adds low harmonics
  click = _noise(rng, t.shape[0], sample_rate, low_cut=1000.0, high_cut=8000.0)
  click *= _decay(t, rng.uniform(0.004, 0.012)) * rng.uniform(0.03, 0.12)
  return body + click


def _snare(rng: np.random.Generator, t: np.ndarray, sample_rate: int) -> np.ndarray:
  """Two-mode drum-head tone plus band-passed noise (the snare wires), noise dominant."""
  f0 = rng.uniform(160.0, 260.0)
  head = _swept_sine(t, sample_rate, 1.3 * f0, f0, 0.02)
  head += 0.5 * _swept_sine(t, sample_rate, 1.3 * 1.59 * f0, 1.59 * f0, 0.02)  # 2nd membrane mode
  head *= _decay(t, rng.uniform(0.1, 0.3))
  wires = _noise(
    rng,
    t.shape[0],
    sample_rate,
    low_cut=rng.uniform(800.0, 1500.0),
    high_cut=rng.uniform(6000.0, 10000.0),
  )
  wires *= _decay(t, rng.uniform(0.15, 0.5))
  mix = rng.uniform(0.3, 0.6)
  return mix * head + (1.0 - mix) * 0.4 * wires


def _hat(rng: np.random.Generator, t: np.ndarray, sample_rate: int) -> np.ndarray:
  """Six detuned square waves (808 ratios) plus noise, high-passed hard, short decay."""
  base = _808_HAT_HZ * rng.uniform(0.8, 1.25)  # [6]
  odd = np.arange(1, 14, 2, dtype=np.float64)  # band-limited square: odd harmonics, 1/k
  freqs = (base[:, None] * odd[None, :]).ravel()  # [6 * 7]
  amps = np.broadcast_to(1.0 / odd, (base.size, odd.size)).ravel()
  phases = rng.uniform(0.0, 2.0 * np.pi, size=freqs.size)
  # No per-partial decay here: the filter below needs a stationary signal; the envelope comes last.
  metal = _partials(t, sample_rate, freqs, amps, np.full(freqs.size, np.inf), phases)
  noise = _noise(rng, t.shape[0], sample_rate)
  mix = rng.uniform(0.3, 0.7)
  raw = mix * _unit_rms(metal) + (1.0 - mix) * noise
  cut = min(rng.uniform(6000.0, 9000.0), 0.3 * sample_rate)  # keeps hats bright even at 8 kHz
  bright = _unit_rms(_fft_filter(raw, sample_rate, low_cut=cut, order=4))
  t60 = rng.uniform(0.05, 0.25) if rng.uniform() < 0.75 else rng.uniform(0.4, 0.8)  # closed/open
  return bright * _decay(t, t60)


def _clap(rng: np.random.Generator, t: np.ndarray, sample_rate: int) -> np.ndarray:
  """Three or four fast noise bursts (several hands) then a diffuse tail, band-passed ~1 kHz."""
  n_bursts = int(rng.integers(3, 5))
  starts = np.arange(n_bursts) * rng.uniform(0.006, 0.014)  # [B] seconds
  since = t[None, :] - starts[:, None]  # [B, T]
  bursts = np.where(since >= 0.0, _decay(np.maximum(since, 0.0), 0.03), 0.0).sum(0)  # [T]
  tail_since = t - starts[-1]
  tail_t60 = rng.uniform(0.2, 0.6)
  tail = np.where(tail_since >= 0.0, _decay(np.maximum(tail_since, 0.0), tail_t60), 0.0)  # [T]
  centre = rng.uniform(900.0, 1600.0)
  noise = _noise(rng, t.shape[0], sample_rate, low_cut=centre / 1.6, high_cut=centre * 1.6, order=3)
  return noise * (bursts + rng.uniform(0.4, 0.7) * tail)


def _tom(rng: np.random.Generator, t: np.ndarray, sample_rate: int) -> np.ndarray:
  """Sine with a slower, shallower pitch sweep than the kick, higher pitch, longer ring."""
  f_end = rng.uniform(120.0, 280.0)
  f_start = f_end * rng.uniform(1.2, 1.5)
  sweep_t60 = rng.uniform(0.2, 0.5)
  body = _swept_sine(t, sample_rate, f_start, f_end, sweep_t60) * _decay(t, rng.uniform(0.5, 1.0))
  # A quieter, faster-dying second membrane mode gives the drum its hollow colour.
  mode2 = _swept_sine(t, sample_rate, 1.59 * f_start, 1.59 * f_end, sweep_t60)
  body += 0.2 * mode2 * _decay(t, rng.uniform(0.15, 0.3))
  stick = _noise(rng, t.shape[0], sample_rate, high_cut=3000.0)
  stick *= _decay(t, 0.02) * rng.uniform(0.03, 0.08)
  return body + stick


def _pluck(rng: np.random.Generator, t: np.ndarray, sample_rate: int) -> np.ndarray:
  """Plucked string: harmonic series shaped by the pick position, upper partials die faster."""
  f0 = rng.uniform(196.0, 523.0)  # G3 .. C5
  k = np.arange(1, 41, dtype=np.float64)  # [K]
  freqs = f0 * k * np.sqrt(1.0 + rng.uniform(0.0, 2e-4) * k * k)  # slight string stiffness
  pick = rng.uniform(0.08, 0.3)
  amps = np.abs(np.sin(np.pi * k * pick)) / k  # ideal plucked string at relative position `pick`
  # Karplus-Strong's averaging loop damps high partials faster: T60 shrinks with partial number.
  t60s = rng.uniform(0.6, 1.0) / (1.0 + rng.uniform(0.3, 1.0) * (k - 1.0))
  phases = rng.uniform(0.0, 2.0 * np.pi, size=k.size)
  string = _partials(t, sample_rate, freqs, amps, t60s, phases)
  excite = _noise(rng, t.shape[0], sample_rate, high_cut=5000.0)
  excite *= _decay(t, 0.01) * rng.uniform(0.01, 0.04)
  return _unit_rms(string) * 0.3 + excite


_RECIPES: dict[str, Callable[[np.random.Generator, np.ndarray, int], np.ndarray]] = {
  "kick": _kick,
  "snare": _snare,
  "hat": _hat,
  "clap": _clap,
  "tom": _tom,
  "pluck": _pluck,
}


# ----------------------------------------------------------------------------------------------
# Public API.


def _check_styles(styles: Sequence[str]) -> tuple[str, ...]:
  """Validates style names; raises ValueError listing the valid ones."""
  if isinstance(styles, str):  # a bare string would otherwise iterate per character
    styles = (styles,)
  unknown = [s for s in styles if s not in STYLES]
  if unknown:
    raise ValueError(f"unknown style(s) {unknown}: valid styles are {', '.join(STYLES)}")
  if not styles:
    raise ValueError(f"no styles given: valid styles are {', '.join(STYLES)}")
  return tuple(styles)


def _check_rate_and_duration(sample_rate: int, duration: float) -> int:
  """Validates the clip format and returns the clip length in samples."""
  if sample_rate < MIN_SAMPLE_RATE:
    raise ValueError(f"sample_rate={sample_rate}: must be >= {MIN_SAMPLE_RATE}")
  n = int(round(sample_rate * duration))
  if n < 2:
    raise ValueError(f"duration={duration}: gives {n} samples at {sample_rate} Hz; need >= 2")
  return n


def synthesize(
  style: str, rng: np.random.Generator, sample_rate: int, duration: float = 1.0
) -> np.ndarray:
  """Synthesises one random one-shot of `style`.

  Pitch, decay, noise colour, level (peak in [0.3, 0.99]) and onset offset (0-5 ms of leading
  silence) are drawn from `rng`; the sound starts at the offset and ends with a 10 ms fade.

  Args:
    style: one of `STYLES`.
    rng: random generator; the clip is a pure function of its state.
    sample_rate: samples per second, >= 8000; all components stay below Nyquist.
    duration: clip length in seconds.

  Returns:
    Mono clip, float32 [T] with T = round(sample_rate * duration), values in [-1, 1].

  Raises:
    ValueError: unknown style, sample rate below 8000 or a duration under two samples.
  """
  (style,) = _check_styles((style,))
  n = _check_rate_and_duration(sample_rate, duration)
  offset = min(int(rng.integers(0, int(_MAX_ONSET_S * sample_rate) + 1)), n // 2)
  peak = rng.uniform(0.3, 0.99)
  t = np.arange(n - offset, dtype=np.float64) / sample_rate  # [T - offset]
  x = _RECIPES[style](rng, t, sample_rate)
  fade = max(1, min(int(_FADE_S * sample_rate), x.shape[0] // 10))
  x[-fade:] *= np.linspace(1.0, 0.0, fade)
  x *= peak / (np.max(np.abs(x)) + 1e-12)
  out = np.zeros(n, dtype=np.float32)  # [T]
  out[offset:] = x
  return out


def clip_rng(seed: int, style: str, index: int) -> np.random.Generator:
  """The generator of clip `index` of `style`: independent of every other clip.

  Seeding from (seed, style index in STYLES, clip index) means adding clips, or generating a
  subset of styles, never changes existing clips.

  Args:
    seed: corpus seed, >= 0.
    style: one of `STYLES`.
    index: clip number within the style, >= 0.

  Returns:
    A fresh `np.random.Generator`.
  """
  return np.random.default_rng([seed, STYLES.index(style), index])


def _wav_bytes(clip: np.ndarray, sample_rate: int) -> bytes:
  """A clip [T] as the bytes of a 16-bit PCM mono WAV file."""
  buf = io.BytesIO()
  sf.write(buf, clip, sample_rate, subtype="PCM_16", format="WAV")
  return buf.getvalue()


def write_wav(path: str, clip: np.ndarray, sample_rate: int) -> None:
  """Writes a clip [T] as a 16-bit PCM WAV at `path`, never leaving a partial file there.

  The file is written under a temporary name, reopened to check its size and frame count, and
  renamed into place.

  Raises:
    DiskFullError: the disk filled up (nothing is left under either name).
  """
  data = _wav_bytes(clip, sample_rate)

  def verify(tmp: str) -> None:
    size = os.path.getsize(tmp)
    if size < len(data):  # a short write that raised nothing: what it almost always is
      raise disk_full(path, len(data) - size)
    frames = sf.info(tmp).frames
    if size != len(data) or frames != clip.shape[0]:
      raise UserError(
        f"{path}: wrote {frames} frames in {size} bytes, expected {clip.shape[0]} in {len(data)}"
      )

  with atomic_path(path, verify) as tmp:
    with open(tmp, "wb") as f:
      f.write(data)


def corpus_bytes(
  per_class: int, sample_rate: int, duration: float = 1.0, styles: Sequence[str] = STYLES
) -> int:
  """The size on disk of a corpus: what `make_corpus` checks is free before it starts."""
  clip = _WAV_HEADER_BYTES + 2 * int(round(sample_rate * duration))
  return len(styles) * per_class * clip


def make_corpus(
  out_dir: str,
  per_class: int = 64,
  sample_rate: int = 16000,
  seed: int = 0,
  styles: Sequence[str] = STYLES,
  duration: float = 1.0,
) -> dict:
  """Writes a labelled one-shot corpus: `out_dir/<style>/<style>_<i:04d>.wav`, 16-bit PCM mono.

  Deterministic: the same arguments always produce byte-identical files. Each file is written
  under a temporary name, checked and renamed (`write_wav`), so none is ever left half-written.

  Args:
    out_dir: destination folder (created if needed; existing files with the same names are
      overwritten).
    per_class: clips per style, >= 1.
    sample_rate: samples per second, >= 8000.
    seed: corpus seed, >= 0.
    styles: subset of `STYLES` to generate.
    duration: clip length in seconds.

  Returns:
    Summary dict: `out_dir`, `sample_rate`, `duration`, `seed`, `per_class`, `counts` (style ->
    number of clips) and `files` (written paths, sorted by style then index).

  Raises:
    ValueError: unknown style, per_class < 1, negative seed, or a bad rate/duration.
    DiskFullError: the corpus does not fit on the disk (checked before anything is written), or
      the disk filled up while writing.
  """
  styles = _check_styles(styles)
  _check_rate_and_duration(sample_rate, duration)
  if per_class < 1:
    raise ValueError(f"per_class={per_class}: must be >= 1")
  if seed < 0:
    raise ValueError(f"seed={seed}: must be >= 0")
  check_free_space(
    out_dir,
    corpus_bytes(per_class, sample_rate, duration, styles),
    f"a corpus of {len(styles) * per_class} clips",
  )
  files: list[str] = []
  counts: dict[str, int] = {}
  for style in styles:
    style_dir = os.path.join(out_dir, style)
    for i in range(per_class):
      clip = synthesize(style, clip_rng(seed, style, i), sample_rate, duration)  # [T]
      path = os.path.join(style_dir, f"{style}_{i:04d}.wav")
      write_wav(path, clip, sample_rate)
      files.append(path)
    counts[style] = per_class
  return {
    "out_dir": os.fspath(out_dir),
    "sample_rate": sample_rate,
    "duration": duration,
    "seed": seed,
    "per_class": per_class,
    "counts": counts,
    "files": files,
  }


def default_cache_root() -> str:
  """`$WAVEGAN_CACHE` if set, else `~/.cache/wavegan`."""
  default = os.path.join(os.path.expanduser("~"), ".cache", "wavegan")
  return os.environ.get("WAVEGAN_CACHE") or default


def builtin_corpus(
  cache_root: str | None = None, per_class: int = 64, sample_rate: int = 16000, seed: int = 0
) -> str:
  """Returns the folder of the built-in corpus, generating it on first use.

  The folder name encodes the corpus version and arguments (`builtin-v1-sr16000-n64-s0`), so a
  change to any of them gets its own folder. Generation writes into a hidden temporary sibling
  that is renamed into place only when complete: a killed run never leaves a half corpus behind
  that would later be mistaken for a finished one.

  Args:
    cache_root: parent folder; default `$WAVEGAN_CACHE` or `~/.cache/wavegan`.
    per_class: clips per style.
    sample_rate: samples per second.
    seed: corpus seed.

  Returns:
    Path of the corpus folder (one sub-folder per style).
  """
  root = cache_root or default_cache_root()
  name = f"builtin-v{CORPUS_VERSION}-sr{sample_rate}-n{per_class}-s{seed}"
  final = os.path.join(root, name)
  if os.path.isdir(final):
    return final
  os.makedirs(root, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=root)
  try:
    make_corpus(tmp, per_class=per_class, sample_rate=sample_rate, seed=seed)
    try:
      os.replace(tmp, final)  # atomic on POSIX: `final` appears complete or not at all
    except OSError:
      if not os.path.isdir(final):  # not a lost race with a concurrent generator
        raise
  finally:
    shutil.rmtree(tmp, ignore_errors=True)  # no-op after a successful rename
  return final
