"""The grain step loader over a prepared cache: order, balance, shards, resume (data_pipelines/loader.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from data_pipelines import BatchSource, Loader, SliceOptions, open_cache, prepare

SR = 16000


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
  """A cache of 3 styles with 2, 5 and 11 clips of 4096 samples (distinct content per clip)."""
  root = tmp_path_factory.mktemp("data") / "pack"
  for style, n in (("a", 2), ("b", 5), ("c", 11)):
    (root / style).mkdir(parents=True)
    for i in range(n):
      t = np.arange(3000) / SR
      x = 0.5 * np.sin(2 * np.pi * (100 + 37 * i + 1000 * ord(style) % 7) * t)
      sf.write(root / style / f"{i:02d}.wav", x.astype(np.float32), SR)
  out = root.parent / "cache"
  prepare(str(root), str(out), SliceOptions(slice_len=4096), workers=1)
  return open_cache(str(out))


def _source(cache, **kw):
  ids, _ = cache.labels()
  return BatchSource(cache, ids, **{"batch_size": 6, "group": 2, "seed": 7, **kw})


def _take(loader, n):
  return [next(loader) for _ in range(n)]


def test_same_seed_same_batches_other_seed_other_batches(cache):
  a = Loader(_source(cache))
  b = Loader(_source(cache))
  c = Loader(_source(cache, seed=8))
  xa, xb, xc = _take(a, 6), _take(b, 6), _take(c, 6)
  for loader in (a, b, c):
    loader.close()
  for (audio_a, labels_a), (audio_b, labels_b) in zip(xa, xb):
    np.testing.assert_array_equal(audio_a, audio_b)
    np.testing.assert_array_equal(labels_a, labels_b)
  assert not all(np.array_equal(p[0], q[0]) for p, q in zip(xa, xc))
  assert xa[0][0].shape == (2, 6, 4096, 1) and xa[0][1].shape == (2, 6)
  assert xa[0][0].dtype == np.float32 and xa[0][1].dtype == np.int32


def test_batches_are_the_cache_clips_in_the_source_order(cache):
  source = _source(cache)
  loader = Loader(source)
  ids, _ = cache.labels()
  for step, (audio, labels) in enumerate(_take(loader, 5)):
    idx = source.step_indices(step)
    np.testing.assert_array_equal(audio, cache.gather(idx))
    np.testing.assert_array_equal(labels, ids[idx])
  loader.close()


def test_every_clip_once_per_epoch(cache):
  source = _source(cache, batch_size=3, group=1)
  assert source.epoch_len == len(cache) == 18
  idx = np.concatenate([source.step_indices(s).ravel() for s in range(6)])  # 18 rows
  assert sorted(idx.tolist()) == list(range(18))


def test_class_balanced_epochs_draw_every_style_equally(cache):
  source = _source(cache, balance=True, batch_size=3, group=1)
  ids, _ = cache.labels()
  assert source.epoch_len == 3 * 11
  for epoch in range(3):
    order = source.epoch_permutation(epoch)
    assert np.bincount(ids[order]).tolist() == [11, 11, 11]
    # Within a style, clips are used as evenly as the counts allow: 11 draws of 2 clips -> 6 + 5.
    counts = np.bincount(order[ids[order] == 0], minlength=len(cache))[ids == 0]
    assert sorted(counts.tolist()) == [5, 6]
  assert not np.array_equal(source.epoch_permutation(0), source.epoch_permutation(1))


def test_process_shards_together_read_the_global_batch(cache):
  whole = _source(cache, batch_size=6)
  parts = [_source(cache, batch_size=6, num_shards=3, shard_index=i) for i in range(3)]
  for step in range(4):
    joined = np.concatenate([p.get(step)[0] for p in parts], axis=1)  # [G, 6, T, C]
    np.testing.assert_array_equal(joined, whole.get(step)[0])


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_from_saved_state_sees_the_same_batches(cache, workers):
  source = _source(cache)
  loader = Loader(source, workers=workers)
  first = _take(loader, 4)
  state = json.loads(json.dumps(loader.state()))  # as stored in a checkpoint
  rest = _take(loader, 3)
  loader.close()
  assert state["step"] == 4
  resumed = Loader(_source(cache), start_step=4, state=state, workers=workers)
  assert resumed.restored
  again = _take(resumed, 3)
  resumed.close()
  for (x, y), (x2, y2) in zip(rest, again):
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
  # And those are exactly steps 4..6 of the pure function of (seed, step).
  for step, (x, _) in enumerate(first + rest):
    np.testing.assert_array_equal(x, source.get(step)[0])


def test_state_from_another_step_falls_back_to_the_step(cache):
  loader = Loader(_source(cache))
  _take(loader, 2)
  state = loader.state()
  loader.close()
  resumed = Loader(_source(cache), start_step=5, state=state)
  assert not resumed.restored
  np.testing.assert_array_equal(next(resumed)[0], _source(cache).get(5)[0])
  resumed.close()
