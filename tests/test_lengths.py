"""Longer and wider audio: every slice length (16384 ... 262144 samples) and any sample rate.

The models are only traced (`jax.eval_shape`), so the longest slices cost nothing; one tiny run at
44.1 kHz goes through the CLI: train, export, render.
"""

import importlib.util
import json
import math
import os
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf
from flax import nnx

from data_pipelines import builtin_corpus
from wavegan import inputs
from wavegan.cli import main
from wavegan.config import SLICE_LENS, Config, ConfigError, DataConfig, ModelConfig, apply_overrides
from wavegan.models import kinds
from wavegan.models.specgan import SpecDiscriminator, SpecGenerator
from wavegan.models.waveform import Discriminator, Generator, base_len, layer_plan
from wavegan.synthesis.previews import grid_stft

LONG = (131072, 262144)


def _old_layer_plan(cfg: ModelConfig) -> tuple[int, list[int], list[int]]:
  """`layer_plan` as it was for the three original lengths (checkpoints made with it must load)."""
  if cfg.slice_len == 16384:
    mult, strides = 16, [cfg.stride] * 5
  else:
    mult = 32
    last = 2 if cfg.slice_len == 32768 else cfg.stride
    strides = [cfg.stride] * 5 + [last]
  return mult, [mult * cfg.dim // 2**i for i in range(len(strides))], strides


@pytest.mark.parametrize("slice_len", (16384, 32768, 65536))
@pytest.mark.parametrize("stride,dim", [(4, 64), (4, 3), (2, 5), (8, 16)])
def test_the_original_plans_are_unchanged(slice_len, stride, dim):
  cfg = ModelConfig(slice_len=slice_len, stride=stride, dim=dim)
  assert layer_plan(cfg) == _old_layer_plan(cfg)


def test_the_plans_of_every_length():
  d = 8
  plans = {
    16384: ([4] * 5, [16, 8, 4, 2, 1]),
    32768: ([4] * 5 + [2], [32, 16, 8, 4, 2, 1]),
    65536: ([4] * 6, [32, 16, 8, 4, 2, 1]),
    131072: ([4] * 6 + [2], [32, 32, 16, 8, 4, 2, 1]),
    262144: ([4] * 7, [32, 32, 16, 8, 4, 2, 1]),
  }
  assert tuple(plans) == SLICE_LENS
  for slice_len, (strides, mults) in plans.items():
    cfg = ModelConfig(slice_len=slice_len, dim=d)
    assert layer_plan(cfg) == (mults[0], [m * d for m in mults], strides)
    assert base_len(cfg) == 16 == slice_len // math.prod(strides)


@pytest.mark.parametrize("slice_len", SLICE_LENS)
@pytest.mark.parametrize("channels", [1, 2])
def test_generator_and_critic_shapes_at_every_length(slice_len, channels):
  cfg = ModelConfig(
    slice_len=slice_len, channels=channels, dim=2, latent_dim=8, num_styles=3, style_dim=4
  )
  z = jax.ShapeDtypeStruct((3, 8), jnp.float32)
  style = jnp.array([0, 1, 2])

  def generate(z):
    return Generator(cfg, rngs=nnx.Rngs(0))(z, style)

  def criticise(x):
    return Discriminator(cfg, rngs=nnx.Rngs(1))(x, style, jax.random.key(0))

  audio = jax.eval_shape(generate, z)
  assert (audio.shape, audio.dtype) == ((3, slice_len, channels), jnp.float32)
  assert jax.eval_shape(criticise, audio).shape == (3,)


@pytest.mark.parametrize("slice_len", LONG)
def test_long_layers_match_the_benchmarks_flop_formulas(slice_len):
  """The 7-layer models' layers, as built, are what `benchmarks/common.py` counts."""
  path = Path(__file__).resolve().parent.parent / "benchmarks" / "common.py"
  spec = importlib.util.spec_from_file_location("bench_common_lengths", path)
  common = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = common  # its dataclasses look their module up
  spec.loader.exec_module(common)
  cfg = ModelConfig(slice_len=slice_len, dim=1, latent_dim=4)
  g = nnx.eval_shape(lambda: Generator(cfg, rngs=nnx.Rngs(0)))
  d = nnx.eval_shape(lambda: Discriminator(cfg, rngs=nnx.Rngs(1)))
  g_kernels = [(up.kernel.shape[1], up.kernel.shape[2]) for up in g.ups]  # [K, C_in, C_out]
  d_kernels = [(down.kernel.shape[1], down.kernel.shape[2]) for down in d.downs]
  assert g_kernels == [(ci, co) for ci, co, _, _ in common.g_layers(1, slice_len)]
  assert d_kernels == [(ci, co) for ci, co, _, _ in common.d_layers(1, slice_len)]


@pytest.mark.parametrize("slice_len", SLICE_LENS)
def test_specgan_copes_with_every_length(slice_len):
  """SpecGAN's images only get taller: slice_len / hop frames (128 ... 2048) by 128 bins."""
  model = ModelConfig(kind="specgan", slice_len=slice_len, dim=2, latent_dim=8)
  kinds.check(Config(model=model).validate())
  frames = slice_len // model.hop
  images = jax.eval_shape(
    lambda z: SpecGenerator(model, rngs=nnx.Rngs(0))(z), jax.ShapeDtypeStruct((2, 8), jnp.float32)
  )
  assert images.shape == (2, frames, 128, 1)
  logits = jax.eval_shape(lambda x: SpecDiscriminator(model, rngs=nnx.Rngs(1))(x, None), images)
  assert logits.shape == (2,)


@pytest.mark.parametrize("slice_len", [8192, 16383, 20000, 49152, 524288, 0])
def test_other_lengths_are_refused_in_one_line(slice_len):
  with pytest.raises(ConfigError) as err:
    apply_overrides(Config(), [f"model.slice_len={slice_len}"]).validate()
  message = str(err.value)
  assert "\n" not in message and f"model.slice_len={slice_len}" in message
  assert "262144" in message
  with pytest.raises(ConfigError, match="model.slice_len"):
    layer_plan(ModelConfig(slice_len=slice_len))


def test_sample_rates_below_1000_hz_are_refused():
  for rate in (44100, 48000, 22050, 1000):
    apply_overrides(Config(), [f"data.sample_rate={rate}"]).validate()
  with pytest.raises(ConfigError, match=r"data.sample_rate=999: must be >= 1000") as err:
    apply_overrides(Config(), ["data.sample_rate=999"]).validate()
  assert "\n" not in str(err.value)
  # The built-in corpus is synthesised at 8 kHz or more: a lower rate is a config error, not a
  # crash (nothing is generated).
  with pytest.raises(ConfigError, match="built-in corpus"):
    inputs.load_data(Config(data=DataConfig(sample_rate=4000)), log=lambda _: None)


def test_builtin_corpus_at_44100_hz(tmp_path):
  folder = builtin_corpus(str(tmp_path), per_class=1, sample_rate=44100)
  assert os.path.basename(folder) == "builtin-v1-sr44100-n1-s0"
  wavs = sorted(Path(folder).rglob("*.wav"))
  assert len(wavs) == 6
  for path in wavs:
    info = sf.info(str(path))
    assert (info.samplerate, info.frames, info.channels) == (44100, 44100, 1)  # 1 s each
    x, _ = sf.read(str(path), dtype="float32")
    assert 0.3 <= np.max(np.abs(x)) <= 1.0


def test_preview_spectrograms_scale_with_rate_and_length():
  assert grid_stft(16000, 16384) == (512, 128)  # the previews' former fixed STFT
  assert grid_stft(44100, 32768) == (1024, 256)
  assert grid_stft(48000, 262144) == (1024, 512)


def test_train_export_render_at_44100_hz(tmp_path, capsys):
  run, rate, length = tmp_path / "run", 44100, 32768
  overrides = ["--set", f"data.sample_rate={rate}", "--set", f"model.slice_len={length}"]
  # with long-range context too: its blocks travel in the model file
  overrides += ["--set", "model.attention=64,128", "--set", "model.recurrent=lstm"]  # G: 64, D: 128
  argv = ["train", "--workdir", run, "--preset", "tiny", "--steps", 2, "--no-progress", *overrides]
  assert main([str(a) for a in argv]) == 0
  for wav in (run / "previews" / "step_0000002").glob("*.wav"):
    assert (sf.info(str(wav)).samplerate, sf.info(str(wav)).frames) == (rate, length)

  model = tmp_path / "m.wgan"
  assert main(["export", "--workdir", str(run), "--out", str(model)]) == 0
  jobs = tmp_path / "jobs.toml"
  jobs.write_text('[[job]]\nname = "snares"\nstyle = "snare"\ncount = 2\nformat = "wav"\n')
  out = tmp_path / "out"
  assert main(["render", str(jobs), "--model", str(model), "--out", str(out), "--no-progress"]) == 0
  for i in range(2):
    info = sf.info(str(out / f"snares_{i:04d}.wav"))
    assert (info.samplerate, info.frames, info.channels) == (rate, length, 1)
    audio = sf.read(str(out / f"snares_{i:04d}.wav"))[0]
    assert np.all(np.isfinite(audio)) and np.any(audio != 0)

  # `evaluate` scores the run at its own rate and length ...
  assert main(["evaluate", "--workdir", str(run), "--n", "8", "--out", str(tmp_path / "ev")]) == 0
  report = json.loads((tmp_path / "ev" / "report.json").read_text())
  assert np.isfinite(report["generated"]["fd"])

  # ... and refuses a prepared cache at another rate (of the same clip length) in one line.
  cache = tmp_path / "cache16k"
  corpus = builtin_corpus(per_class=4, sample_rate=rate)
  prepare = ["prepare", corpus, "--out", cache, "--sample-rate", 16000, "--slice-len", length]
  assert main([str(a) for a in [*prepare, "--no-progress"]]) == 0
  capsys.readouterr()
  assert main(["evaluate", "--workdir", str(run), "--data", str(cache), "--n", "4"]) == 2
  err = capsys.readouterr().err.strip().splitlines()[-1]
  assert err.startswith("wavegan: error:") and "16000 Hz" in err and f"trained at {rate} Hz" in err
