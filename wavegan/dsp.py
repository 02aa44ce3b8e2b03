"""The project's spectral toolkit: STFT, log-magnitude and log-mel features, Griffin-Lim.

`stft` is the one short-time Fourier transform: SpecGAN's images, the spectral critics and losses
(`stft_magnitude`), the reference classifier's features (`log_mel`) and the preview spectrograms
all frame, window and transform through it (the previews in numpy, with `xp=np`), and so do the
phase-aware kinds' invertible `packed_stft` and `packed_istft` (with `instantaneous_frequency`
and its inverse for GANSynth's representation).

SpecGAN (Donahue et al. 2019) trains a 2-D GAN on 128 x 128 log-magnitude images: 16384 samples
at 16 kHz, `n_fft=256`, `hop=128`, 128 frames, the Nyquist bin dropped to leave 128 frequency
bins. Each bin is normalised with the corpus' mean and std of the log magnitude, clipped to 3 std
and scaled to [-1, 1]; generated images go back to audio through Griffin-Lim.

The original needed a separate statistics pass writing a pickle. Here `moments` and
`moments_from_batches` compute the per-bin statistics from numpy arrays (in chunks, for a whole
corpus) and `moments_to_dict` / `moments_from_dict` keep them as plain JSON-able lists.

Everything in JAX is jit-friendly, with the int arguments (`n_fft`, `hop`, `length`, `n_iter`)
static: they fix array shapes and the frame indices, which are built in numpy at trace time.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import TypeVar

import jax
import jax.numpy as jnp
import numpy as np

STD_FLOOR = 1e-6
ArrayT = TypeVar("ArrayT", jax.Array, np.ndarray)  # JAX, or numpy where `xp=np`


def hann(n_fft: int) -> np.ndarray:
  """Periodic Hann window [n_fft] (tf.signal.hann_window's default, as SpecGAN's STFT used)."""
  return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)


def frame_indices(n_frames: int, n_fft: int, hop: int) -> np.ndarray:
  """Sample indices [n_frames, n_fft] of each frame; static, so gathers need no dynamic shapes."""
  return np.arange(n_fft)[None, :] + hop * np.arange(n_frames)[:, None]


def frame(
  audio: ArrayT, n_fft: int, hop: int, *, center: bool = False, pad_mode: str = "reflect", xp=jnp
) -> ArrayT:
  """Cuts audio [B, T] into frames [B, F, n_fft] (padding, then one static gather).

  Two framings:
    * `center=False` (SpecGAN's, tf.contrib.signal.stft(pad_end=True)): frames start at sample 0
      and the end is zero-padded just enough that there are exactly F = T // hop frames.
    * `center=True` (librosa's and torch's): frame f is centred on sample f * hop; n_fft // 2
      samples are added on either side (`pad_mode` "reflect" or "constant" zeros), so that
      F = 1 + (T + 2 (n_fft // 2) - n_fft) // hop, which is 1 + T // hop for an even n_fft.

  Args:
    audio: [B, T].
    n_fft: frame length.
    hop: frame step.
    center: which framing (above).
    pad_mode: how a centred framing pads the ends, as `np.pad`'s `mode`.
    xp: `jax.numpy`, or `numpy` to frame numpy arrays in numpy.

  Returns:
    [B, F, n_fft], audio's dtype.
  """
  if center:
    x = xp.pad(audio, ((0, 0), (n_fft // 2, n_fft // 2)), mode=pad_mode)  # [B, T + 2 (n_fft // 2)]
    n_frames = 1 + (x.shape[-1] - n_fft) // hop
  else:
    x = xp.pad(audio, ((0, 0), (0, max(n_fft - hop, 0))))  # [B, T + n_fft - hop]
    n_frames = audio.shape[-1] // hop
  return x[:, frame_indices(n_frames, n_fft, hop)]  # [B, F, n_fft]


def stft(
  audio: ArrayT,
  n_fft: int = 256,
  hop: int = 128,
  *,
  center: bool = False,
  pad_mode: str = "reflect",
  window: ArrayT | None = None,
  xp=jnp,
) -> ArrayT:
  """Short-time Fourier transform: `frame`, times a window, then a real FFT of each frame.

  The defaults are SpecGAN's: no centring, 128 frames for 16384 samples at hop 128.

  Args:
    audio: mono audio [B, T].
    n_fft: frame (and FFT) length.
    hop: frame step.
    center: framing, see `frame`.
    pad_mode: how a centred framing pads the ends.
    window: [n_fft], multiplied into every frame as given (so a float32 window promotes bfloat16
      frames to float32); default the periodic Hann window `hann(n_fft)` in the frames' dtype.
    xp: `jax.numpy`, or `numpy` for a numpy STFT of numpy arrays.

  Returns:
    Complex spectrum [B, F, n_fft // 2 + 1].
  """
  x = frame(audio, n_fft, hop, center=center, pad_mode=pad_mode, xp=xp)  # [B, F, n_fft]
  if window is None:
    window = xp.asarray(hann(n_fft), x.dtype)
  return xp.fft.rfft(x * window, axis=-1)  # [B, F, n_fft/2+1]


def stft_magnitude(x: jax.Array, n_fft: int, hop: int, floor: float = 1e-7) -> jax.Array:
  """|STFT| of x [B, T] as the spectral critics and losses read it (Parallel WaveGAN's STFT loss).

  Centred, reflect-padded frames every `hop` samples and a Hann window of n_fft in float32, so
  that bfloat16 audio is transformed in float32; the power |X|^2 is floored at `floor` before the
  square root, which keeps the log and its gradient finite in silence.

  Returns:
    [B, 1 + T // hop, n_fft // 2 + 1] (even n_fft), at least sqrt(floor).
  """
  spec = stft(x, n_fft, hop, center=True, window=hann(n_fft).astype(np.float32))
  power = jnp.real(spec) ** 2 + jnp.imag(spec) ** 2  # [B, F, n_fft/2+1]
  return jnp.sqrt(jnp.maximum(power, floor))


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
  """Mel filterbank float32 [n_fft // 2 + 1, n_mels] (librosa's Slaney mel scale and norm)."""
  import librosa  # pylint: disable=g-import-not-at-top

  return librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels).T.astype(np.float32)


def log_mel(audio: jax.Array, mel: jax.Array, n_fft: int, hop: int) -> jax.Array:
  """Audio [B, T] -> log-mel power [B, 1 + T // hop, mels]: log(1e-5 + |STFT|^2 @ mel).

  Centred, reflect-padded frames with the symmetric Hann window (`jnp.hanning`, np.hanning's),
  which the reference classifiers' features have always used.

  Args:
    audio: mono audio [B, T].
    mel: filterbank [n_fft // 2 + 1, mels], e.g. `mel_filterbank`.
    n_fft: frame length.
    hop: frame step.
  """
  window = jnp.hanning(n_fft).astype(audio.dtype)
  power = jnp.abs(stft(audio, n_fft, hop, center=True, window=window)) ** 2  # [B, F, n_fft/2+1]
  return jnp.log(1e-5 + power @ mel)  # [B, F, mels]


def istft(
  spec: jax.Array, n_fft: int = 256, hop: int = 128, length: int | None = None
) -> jax.Array:
  """Inverse of `stft`: windowed overlap-add divided by the summed squared window.

  Dividing by sum_k w[n - k hop]^2 makes istft(stft(x)) == x wherever every overlapping frame
  covers the sample. The first n_fft - hop samples are under the first windows' rising edges
  alone, where the sum vanishes: it is floored there (`window_envelope`), so they fade in (the
  first ~80 of 128 at n_fft 256, hop 128) rather than turn a generated spectrum's first frame
  into a full-scale click.

  Args:
    spec: complex spectrum [B, F, n_fft // 2 + 1].
    n_fft: frame length used by the forward transform.
    hop: frame step used by the forward transform.
    length: output length; defaults to `F * hop`, the length `stft` started from.

  Returns:
    Audio [B, length].
  """
  n_frames = spec.shape[1]
  length = n_frames * hop if length is None else length
  window = hann(n_fft)
  frames = jnp.fft.irfft(spec, n=n_fft, axis=-1)  # [B, F, n_fft]
  frames = frames * jnp.asarray(window, frames.dtype)
  idx = frame_indices(n_frames, n_fft, hop)  # [F, n_fft], static
  total = max(int(idx[-1, -1]) + 1, length)
  out = jnp.zeros((spec.shape[0], total), frames.dtype)
  out = out.at[:, idx].add(frames)  # [B, total]
  full = (n_fft - hop, n_frames * hop)  # the samples every overlapping frame covers
  env = window_envelope(idx, n_fft, total, full)  # [total]
  return (out / jnp.asarray(env, out.dtype))[:, :length]  # [B, length]


def packed_stft(audio: jax.Array, n_fft: int = 256, hop: int = 128) -> jax.Array:
  """Audio [B, T] -> the invertible spectrum [B, T // hop, n_fft // 2] (complex; T a multiple of hop).

  The phase-aware kinds' STFT: centred frames (frame f centred on sample f * hop, the ends
  reflect-padded) with the periodic Hann window, the last frame (centred on sample T) dropped so
  there are T // hop frames. A real signal's DC and Nyquist bins are real, so the Nyquist value is
  packed into the DC bin's imaginary part: bin 0 holds X[0] + i X[n_fft / 2], and n_fft // 2 bins
  (a power of two, as the 2-D GANs need) keep all the information. `packed_istft` inverts it.
  """
  spec = stft(audio, n_fft, hop, center=True)[:, :-1]  # [B, T // hop, n_fft/2 + 1]
  k = n_fft // 2
  dc = jnp.real(spec[..., 0]) + 1j * jnp.real(spec[..., k])
  return jnp.concatenate([dc[..., None].astype(spec.dtype), spec[..., 1:k]], -1)  # [B, F, K]


def window_envelope(idx: np.ndarray, n_fft: int, length: int, full: tuple[int, int]) -> np.ndarray:
  """The squared-window sum an inverse STFT divides by, over samples [0, length): float64.

  `idx` [F, n_fft] are the samples each frame's window lands on (those outside [0, length)
  dropped). The sum is floored at its minimum over `full` (the samples that every overlapping
  frame covers): where fewer frames cover a sample (an end of the signal) it can vanish, and
  dividing a generated, inconsistent spectrum by it would turn those samples into spikes; they
  fade instead. A shape-only numpy constant (np.bincount rather than np.add.at, whose broadcast
  values misbehave in numpy 2.4).
  """
  sq = np.broadcast_to(hann(n_fft) ** 2, idx.shape)
  keep = (idx >= 0) & (idx < length)
  env = np.bincount(idx[keep], sq[keep], minlength=length)[:length]
  lo = min(max(full[0], 0), length - 1)
  return np.maximum(env, env[lo : max(min(full[1], length), lo + 1)].min())


def overlap_envelope(n_frames: int, n_fft: int, hop: int, length: int) -> np.ndarray:
  """`window_envelope` of `packed_istft`: its centred frames over samples [0, length).

  Frame 0 is centred on sample 0, so the start is always well covered. Past the last frame's
  centre, (F - 1) * hop, fewer frames cover each sample, and at hop = n_fft / 2 only the last
  frame's falling half covers the last hop. So the floor is the minimum up to the last frame's
  centre: the samples past it where the sum is lower (the last ~80 of 128 at n_fft 256, hop 128)
  fade out instead of being inverted exactly; every other sample is exact.
  """
  idx = frame_indices(n_frames, n_fft, hop) - n_fft // 2  # frame f starts at f * hop - n_fft / 2
  return window_envelope(idx, n_fft, length, (0, (n_frames - 1) * hop + 1))


def packed_istft(spec: jax.Array, n_fft: int = 256, hop: int = 128) -> jax.Array:
  """Inverse of `packed_stft`: [B, F, n_fft // 2] (complex) -> audio [B, F * hop].

  Unpacks the DC and Nyquist bins, inverse-FFTs every frame, windows it again and overlap-adds,
  dividing by `overlap_envelope`: exact (to float32 rounding) on every sample but the last few
  (see there), for any spectrum a clip gave.
  """
  b, n_frames, k = spec.shape
  length = n_frames * hop
  dc, nyquist = jnp.real(spec[..., :1]), jnp.imag(spec[..., :1])
  full = jnp.concatenate([dc.astype(spec.dtype), spec[..., 1:], nyquist.astype(spec.dtype)], -1)
  frames = jnp.fft.irfft(full, n=n_fft, axis=-1)  # [B, F, n_fft]
  frames = frames * jnp.asarray(hann(n_fft), frames.dtype)
  half = n_fft // 2
  idx = frame_indices(n_frames, n_fft, hop)  # [F, n_fft], offset by n_fft / 2
  out = jnp.zeros((b, length + n_fft), frames.dtype).at[:, idx].add(frames)
  env = overlap_envelope(n_frames, n_fft, hop, length)
  return out[:, half : half + length] / jnp.asarray(env, out.dtype)  # [B, F * hop]


def wrap_phase(x: ArrayT) -> ArrayT:
  """Angles into [-pi, pi)."""
  return (x + np.pi) % (2.0 * np.pi) - np.pi


def instantaneous_frequency(phase: jax.Array) -> jax.Array:
  """Phase [..., F, K] -> GANSynth's instantaneous frequency [..., F, K] in [-1, 1).

  The phase's frame-to-frame difference, wrapped and divided by pi (the unwrapped phase's
  derivative along time); frame 0 keeps its phase itself (a difference from 0), so
  `phase_from_frequency` gives the phase back exactly (modulo 2 pi).
  """
  diff = jnp.diff(phase, axis=-2, prepend=jnp.zeros_like(phase[..., :1, :]))
  return wrap_phase(diff) / np.pi


def phase_from_frequency(freq: jax.Array) -> jax.Array:
  """Inverse of `instantaneous_frequency`: the cumulative sum along frames, times pi."""
  return wrap_phase(jnp.cumsum(freq * np.pi, axis=-2))


def log_magnitude(
  audio: jax.Array, n_fft: int = 256, hop: int = 128, eps: float = 1e-6
) -> jax.Array:
  """Audio [B, T] -> SpecGAN's log |STFT| [B, T // hop, n_fft // 2] (Nyquist bin dropped).

  Dropping the Nyquist bin makes the bin count a power of two (128 for n_fft=256), which the 2-D
  GAN's stride-2 stack needs; it holds next to no energy in real audio.
  """
  mag = jnp.abs(stft(audio, n_fft, hop))[..., : n_fft // 2]  # [B, F, n_fft/2]
  return jnp.log(mag + eps)


def moments(log_mags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per-frequency mean and std [K] of log magnitudes [..., K] over every other axis.

  Accumulates in float64; the std is floored at 1e-6 so normalising a constant bin stays finite.
  """
  x = np.asarray(log_mags, np.float64).reshape(-1, np.shape(log_mags)[-1])  # [N, K]
  return x.mean(axis=0), np.maximum(x.std(axis=0), STD_FLOOR)


def moments_from_batches(batches: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
  """`moments` over a stream of log-magnitude chunks [..., K], holding only running sums.

  Lets a whole corpus be processed chunk by chunk: count, sum and sum of squares per bin in
  float64, which is ample for log magnitudes (|x| ~ 10, so no catastrophic cancellation).

  Raises:
    ValueError: if `batches` is empty.
  """
  count, total, total_sq = 0, None, None
  for batch in batches:
    x = np.asarray(batch, np.float64).reshape(-1, np.shape(batch)[-1])  # [N, K]
    if total is None:
      total, total_sq = np.zeros(x.shape[1]), np.zeros(x.shape[1])
    count += x.shape[0]
    total += x.sum(axis=0)
    total_sq += np.square(x).sum(axis=0)
  if not count:
    raise ValueError("moments_from_batches got no data")
  mean = total / count
  var = np.maximum(total_sq / count - np.square(mean), 0.0)  # rounding can dip just below 0
  return mean, np.maximum(np.sqrt(var), STD_FLOOR)


def moments_to_dict(mean: np.ndarray, std: np.ndarray) -> dict[str, list[float]]:
  """Moments as plain lists, ready for `json.dump` (replaces SpecGAN's pickle)."""
  return {
    "mean": np.asarray(mean, np.float64).tolist(),
    "std": np.asarray(std, np.float64).tolist(),
  }


def moments_from_dict(d: dict[str, list[float]]) -> tuple[np.ndarray, np.ndarray]:
  """Inverse of `moments_to_dict`: (mean [K], std [K]) as float32 arrays."""
  return np.asarray(d["mean"], np.float32), np.asarray(d["std"], np.float32)


def normalize(log_mag: jax.Array, mean: jax.Array, std: jax.Array, clip: float = 3.0) -> jax.Array:
  """Standardise each bin, clip to `clip` std and scale into [-1, 1]; mean/std [K] broadcast."""
  z = (log_mag - jnp.asarray(mean, log_mag.dtype)) / jnp.asarray(std, log_mag.dtype)
  return jnp.clip(z, -clip, clip) / clip


def denormalize(x: jax.Array, mean: jax.Array, std: jax.Array, clip: float = 3.0) -> jax.Array:
  """Inverse of `normalize` (exact for values that were within the clip range)."""
  return x * clip * jnp.asarray(std, x.dtype) + jnp.asarray(mean, x.dtype)


@functools.partial(jax.jit, static_argnames=("n_iter", "n_fft", "hop", "length"))
def griffin_lim(
  magnitude: jax.Array,
  n_iter: int = 16,
  n_fft: int = 256,
  hop: int = 128,
  length: int | None = None,
  momentum: float = 0.99,
  seed: int = 0,
) -> jax.Array:
  """Fast Griffin-Lim (Perraudin et al. 2013, as librosa): a phase for a magnitude spectrogram.

  Each iteration projects onto consistent spectrograms (istft -> stft) and back onto the target
  magnitude, extrapolating the phase by `momentum` times the last step; the iterations are one
  `fori_loop`, so `n_iter` only changes the trip count of a single compiled loop.

  Args:
    magnitude: |STFT| without the Nyquist bin [B, F, n_fft // 2] (SpecGAN's layout).
    n_iter: iterations.
    n_fft: frame length.
    hop: frame step.
    length: output length; defaults to `F * hop`.
    momentum: fast Griffin-Lim's alpha; 0 gives the classic algorithm.
    seed: seed of the random initial phase.

  Returns:
    Audio [B, length].
  """
  mag = jnp.pad(magnitude, ((0, 0), (0, 0), (0, 1)))  # [B, F, n_fft/2+1]
  phase = jax.random.uniform(jax.random.key(seed), mag.shape, mag.dtype, 0.0, 2.0 * jnp.pi)
  angles = jnp.exp(1j * phase)  # unit phasors
  # The rebuilt signal is re-framed by `stft` at F * hop samples; trim later to `length`.
  n_samples = mag.shape[1] * hop
  scale = momentum / (1.0 + momentum)

  def body(_, carry):
    angles, prev = carry
    rebuilt = stft(istft(mag * angles, n_fft, hop, n_samples), n_fft, hop)
    step = rebuilt - scale * prev
    return step / (jnp.abs(step) + 1e-16), rebuilt

  angles, _ = jax.lax.fori_loop(0, n_iter, body, (angles, jnp.zeros_like(angles)))
  return istft(mag * angles, n_fft, hop, length)


def spec_to_audio(
  x_norm: jax.Array,
  mean: jax.Array,
  std: jax.Array,
  n_iter: int = 16,
  n_fft: int = 256,
  hop: int = 128,
  length: int | None = None,
  clip: float = 3.0,
  seed: int = 0,
) -> jax.Array:
  """Normalised log-magnitude images [B, F, n_fft // 2] -> audio [B, length] via Griffin-Lim."""
  mag = jnp.exp(denormalize(x_norm, mean, std, clip))  # [B, F, n_fft/2]
  return griffin_lim(mag, n_iter=n_iter, n_fft=n_fft, hop=hop, length=length, seed=seed)
