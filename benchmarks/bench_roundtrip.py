"""What each spectral kind's representation keeps of an attack: real clips through the kind's
images and back, no training involved.

    python benchmarks/bench_roundtrip.py [--clips 8] [--data FOLDER]

For each style of the built-in corpus (or each label of an audio folder's clips, cut or padded
to 16384 samples), the median attack rise time (ms, 10 % to 90 % of the RMS envelope's peak) and
onset flux (dB) of the real clips and of their round trips audio -> images -> audio through
SpecGAN (log magnitude, Griffin-Lim), `complex` and `ifspec` (exact inverse STFT), with the
corpus statistics of the clips themselves; and each round trip's largest error on the samples
before the faded end.
"""

from __future__ import annotations

import argparse
import os
import sys

import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data_pipelines import corpus  # noqa: E402
from wavegan.config import ModelConfig  # noqa: E402
from wavegan.evaluation import metrics  # noqa: E402
from wavegan.models import kinds  # noqa: E402

KINDS = ("specgan", "complex", "ifspec")
T = 16384
EDGE = 128  # the last hop: where `dsp.overlap_envelope` may fade


def builtin(n: int, sample_rate: int) -> dict[str, np.ndarray]:
  return {
    s: np.stack(
      [
        corpus.synthesize(s, corpus.clip_rng(0, s, i), sample_rate, T / sample_rate)
        for i in range(n)
      ]
    )[..., None]
    for s in corpus.STYLES
  }


def folder(path: str, n: int) -> tuple[dict[str, np.ndarray], int]:
  """Up to n clips per label of a folder with a manifest.csv (path, label first), [n, T, 1]."""
  import soundfile as sf  # pylint: disable=g-import-not-at-top

  with open(os.path.join(path, "manifest.csv")) as f:
    rows = [line.split(",")[:2] for line in f.read().splitlines()[1:]]
  out: dict[str, list[np.ndarray]] = {}
  rate = 0
  for rel, label in rows:
    if len(out.setdefault(label, [])) < n:
      audio, rate = sf.read(os.path.join(path, rel), dtype="float32")
      clip = np.zeros(T, np.float32)
      clip[: min(len(audio), T)] = audio[:T]
      out[label].append(clip)
  return {k: np.stack(v)[..., None] for k, v in sorted(out.items())}, rate


def round_trip(kind_name: str, clips: np.ndarray) -> np.ndarray:
  model = ModelConfig(kind=kind_name)
  kind = kinds.kind_of(model)
  stats = kinds.arrays(kind.measure([clips], model))
  return np.asarray(
    kind.to_audio(kind.critic_input(jnp.asarray(clips), stats, model), stats, model)
  )


def main() -> None:
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument("--clips", type=int, default=8, help="clips per style")
  p.add_argument("--data", default="", help="an audio folder with manifest.csv (default: built-in)")
  args = p.parse_args()
  sets, rate = folder(args.data, args.clips) if args.data else (builtin(args.clips, 16000), 16000)
  print(f"{args.clips} clips per style at {rate} Hz; rise (ms) / onset flux (dB), medians")
  print()
  print("| style | real | " + " | ".join(KINDS) + " |")
  print("| --- | --- | " + " | ".join("---" for _ in KINDS) + " |")
  worst = dict.fromkeys(KINDS, 0.0)
  for style, clips in sets.items():
    cells = []
    for audio in [clips] + [round_trip(k, clips) for k in KINDS]:
      rise = np.nanmedian(metrics.rise_time_ms(audio, rate))
      flux = np.nanmedian(metrics.onset_flux_db(audio, rate))
      cells.append(f"{rise:.2f} / {flux:.2f}")
      if len(cells) > 1:
        name = KINDS[len(cells) - 2]
        worst[name] = max(worst[name], float(np.abs(audio - clips)[:, : T - EDGE].max()))
    print(f"| {style} | " + " | ".join(cells) + " |")
  print()
  print(
    "largest round-trip error before the last hop: "
    + ", ".join(f"{k} {v:.2g}" for k, v in worst.items())
  )


if __name__ == "__main__":
  main()
