"""A deterministic, resumable batch source: a training step's batches from (data, seed, step).

`BatchSource.get` maps a training step to its batches as a pure function of (data, seed, step):
the sample stream is the data reshuffled every epoch, and batch k is simply elements
`k * batch_size ... (k + 1) * batch_size - 1` of that stream. Resuming at step s therefore needs no
iterator state in the checkpoint and yields exactly the batches an uninterrupted run would.

Only numpy is used here (no jax): the trainer moves batches to devices itself.
"""

from __future__ import annotations

import numpy as np

from data_pipelines.clips import ClipSet


class BatchSource:
  """Deterministic batches of clips: `get(step)` is a pure function of (data, seed, step).

  The stream of clip indices is an infinite sequence of epochs, each a fresh order of the clips
  derived from (seed, epoch) alone, so any batch can be computed without the ones before. An epoch
  is a permutation of the clips or, with `balance`, an equal number of draws from every style
  (each style's clips permuted and repeated up to the largest style's count), shuffled together.
  Global batch k is stream elements `k * batch_size ... (k + 1) * batch_size - 1`, freely spanning
  epoch boundaries, and training step s consumes batches `s * group ... s * group + group - 1`
  (e.g. group = n_critic discriminator batches per step). Datasets smaller than a batch simply
  wrap around.

  With `num_shards > 1` (one shard per JAX process), `batch_size` is the global batch and this
  shard returns the contiguous rows `[shard_index * b, (shard_index + 1) * b)` of every batch,
  where b = batch_size // num_shards; the shards together read exactly the unsharded batch.

  Attributes:
    batch_size: global batch size.
    group: batches per step.
    seed: shuffle seed.
    num_shards: number of shards each batch is split into.
    shard_index: which shard this source returns.
    balance: whether epochs draw every style equally often.
  """

  def __init__(
    self,
    data,
    labels: np.ndarray | None = None,
    *,
    batch_size: int,
    seed: int = 0,
    group: int = 1,
    num_shards: int = 1,
    shard_index: int = 0,
    balance: bool = False,
    subset: np.ndarray | None = None,
    conditions: np.ndarray | None = None,
  ):
    """Builds the source.

    Args:
      data: a `ClipSet`, an audio array float32 [N, T, C], or a clip store with `len()` and
        `gather(index) -> float32 [..., T, C]` (e.g. a `PreparedCache`).
      labels: int [N] labels (default all zeros); must be None for a `ClipSet`, which has its own.
      batch_size: global batch size, >= 1 and divisible by `num_shards`.
      seed: shuffle seed, >= 0.
      group: batches per step, >= 1.
      num_shards: shards per batch, >= 1.
      shard_index: shard to return, in [0, num_shards).
      balance: draw every style equally often in each epoch.
      subset: the clip indices to draw from (default: all N).
      conditions: what batches carry instead of the labels, one row per clip [N, ...] (e.g. style
        vectors of several label fields and attributes); the labels still drive `balance`.

    Raises:
      ValueError: empty data, mismatched labels, or an invalid size/seed/shard argument.
    """
    if isinstance(data, ClipSet):
      if labels is not None:
        raise ValueError("labels must be None when data is a ClipSet (it has its own)")
      data, labels = data.audio, data.labels
    if isinstance(data, np.ndarray):
      if data.ndim != 3:
        raise ValueError(f"audio must be a non-empty [N, T, C] array; got shape {data.shape}")
      audio = np.ascontiguousarray(data, dtype=np.float32)  # [N, T, C]
      self._gather = audio.__getitem__
    else:
      self._gather = data.gather
    n = len(data)
    labels = np.zeros(n, np.int32) if labels is None else np.asarray(labels)
    if labels.shape != (n,):
      raise ValueError(f"labels shape {labels.shape} does not match {n} clips")
    pool = np.arange(n, dtype=np.int64) if subset is None else np.asarray(subset, np.int64)
    if pool.size == 0:
      raise ValueError("no clips to draw from")
    if batch_size < 1 or group < 1 or seed < 0:
      raise ValueError(
        f"need batch_size >= 1, group >= 1, seed >= 0; got {batch_size}, {group}, {seed}"
      )
    if num_shards < 1 or not 0 <= shard_index < num_shards or batch_size % num_shards:
      raise ValueError(
        f"shard_index={shard_index}, num_shards={num_shards}: need 0 <= shard_index < num_shards"
        f" and num_shards dividing batch_size={batch_size}"
      )
    self._labels = np.ascontiguousarray(labels, dtype=np.int32)  # [N]
    if conditions is not None and len(conditions) != n:
      raise ValueError(f"conditions for {len(conditions)} clips; there are {n}")
    self._carried = self._labels if conditions is None else np.ascontiguousarray(conditions)
    self._pool = pool  # [M] clip ids drawn from
    self.batch_size = batch_size
    self.group = group
    self.seed = seed
    self.num_shards = num_shards
    self.shard_index = shard_index
    self.balance = balance
    # Balanced epochs: the pool split by style, each style drawn max-count times per epoch.
    self._by_style = [pool[self._labels[pool] == k] for k in np.unique(self._labels[pool])]
    self._epoch_len = (
      len(self._by_style) * max(len(c) for c in self._by_style) if balance else len(pool)
    )
    # Orders of the epochs the last request touched; batches are then plain numpy gathers.
    # (grain's random-access index_shuffle was measured at ~50 us per element for a few hundred
    # clips, ~17 ms of CPU per training step on the built-in corpus; numpy's is microseconds.)
    self._epoch_cache: dict[int, np.ndarray] = {}

  def __len__(self) -> int:
    """Number of clips drawn from."""
    return len(self._pool)

  @property
  def epoch_len(self) -> int:
    """Stream elements per epoch: the clips, or styles x the largest style's clip count."""
    return self._epoch_len

  @property
  def local_batch_size(self) -> int:
    """Rows of each batch this shard returns."""
    return self.batch_size // self.num_shards

  @property
  def steps_per_epoch(self) -> float:
    """Training steps per epoch (fractional in general)."""
    return self._epoch_len / (self.batch_size * self.group)

  def epoch_permutation(self, epoch: int) -> np.ndarray:
    """The clips epoch `epoch` visits, in order.

    Args:
      epoch: epoch number, >= 0.

    Returns:
      Clip indices, int64 [epoch_len]: a permutation of the pool, or with `balance` an equal
      number of clips of every style.
    """
    if epoch < 0:
      raise ValueError(f"epoch={epoch}: must be >= 0")
    cached = self._epoch_cache.get(epoch)
    if cached is not None:
      return cached
    # SeedSequence mixes (seed, epoch) so nearby seeds and epochs give unrelated orders.
    rng = np.random.default_rng([self.seed, epoch, 0x5EED])
    if not self.balance:
      return self._pool[rng.permutation(len(self._pool))]
    per_style = self._epoch_len // len(self._by_style)
    draws = []
    for members in self._by_style:
      repeats = -(-per_style // len(members))
      order = np.concatenate([rng.permutation(members) for _ in range(repeats)])
      draws.append(order[:per_style])
    return rng.permutation(np.concatenate(draws))

  def _lookup(self, positions: np.ndarray) -> np.ndarray:
    """Clip indices at the given stream positions (any shape), refreshing the epoch cache."""
    epochs, offsets = np.divmod(positions, self._epoch_len)  # same shape as positions
    needed = np.unique(epochs)  # [E], sorted
    perms = {int(e): self.epoch_permutation(int(e)) for e in needed}
    self._epoch_cache = perms  # keep just these: the next step starts in the last of them
    table = np.stack([perms[int(e)] for e in needed])  # [E, epoch_len]
    return table[np.searchsorted(needed, epochs), offsets]

  def stream_indices(self, start: int, stop: int) -> np.ndarray:
    """Clip indices at positions `start .. stop - 1` of the infinite shuffled stream.

    Args:
      start: first stream position, >= 0.
      stop: one past the last position.

    Returns:
      Clip indices, int64 [stop - start].
    """
    if start < 0 or stop < start:
      raise ValueError(f"need 0 <= start <= stop; got {start}, {stop}")
    if stop == start:
      return np.zeros(0, np.int64)
    return self._lookup(np.arange(start, stop, dtype=np.int64))

  def step_indices(self, step: int) -> np.ndarray:
    """Clip indices of this shard's rows for training step `step`.

    Args:
      step: training step, >= 0.

    Returns:
      Clip indices, int64 [group, local_batch_size].
    """
    if step < 0:
      raise ValueError(f"step={step}: must be >= 0")
    b = self.local_batch_size
    first_batch = step * self.group
    # Row r of global batch k sits at stream position k * batch_size + r; this shard's rows are
    # the contiguous block starting at shard_index * b.
    batch_starts = (first_batch + np.arange(self.group, dtype=np.int64)) * self.batch_size
    positions = (batch_starts + self.shard_index * b)[:, None] + np.arange(b)[None, :]  # [G, b]
    return self._lookup(positions)

  def get(self, step: int) -> tuple[np.ndarray, np.ndarray]:
    """The batches of training step `step`.

    Args:
      step: training step, >= 0.

    Returns:
      audio float32 [group, local_batch_size, T, C] and labels int32 [group, local_batch_size]
      (or the `conditions` rows [group, local_batch_size, ...]).
    """
    idx = self.step_indices(step)  # [G, b]
    return self._gather(idx), self._carried[idx]

  def iterate(self, start_step: int = 0):
    """Yields `get(start_step)`, `get(start_step + 1)`, ... forever.

    Args:
      start_step: first step (the resume point).

    Yields:
      (audio float32 [group, local_batch_size, T, C], labels int32 [group, local_batch_size]).
    """
    step = start_step
    while True:
      yield self.get(step)
      step += 1
