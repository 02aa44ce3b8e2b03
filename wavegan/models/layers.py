"""WaveGAN's 1-D building blocks, written for speed on every backend.

Both convolutions keep the parameter layout of the paper's layers (a `[K, C_in, C_out]` kernel and a
`[C_out]` bias, Glorot-uniform and zeros as in tf.layers), but compute with stride-1 convolutions:

* `Upsample1d` is a transposed convolution (TF 'SAME', stride s). XLA's transposed convolution is
  ~50x slower on CPU for WaveGAN's shapes, so it runs as its polyphase equivalent: one stride-1
  convolution with ceil(K/s)+1 taps producing s * C_out channels, then a reshape that interleaves
  the s phases in time.
* `Downsample1d` is a strided convolution (TF 'SAME', stride s). It runs as a space-to-depth
  reshape (s consecutive samples -> channels) followed by a stride-1 convolution. XLA's own
  strided convolution is ~10% faster forward, but its input gradient (needed by the gradient
  penalty and the G update) is an lhs-dilated convolution that took 19.6 s instead of 0.22 s for
  D's last layer at batch 64 on CPU.
* `NearestUpsample1d` (the authors' `nn` option) repeats each sample s times and applies a
  stride-1 'SAME' convolution. It too runs at the input rate: one stride-1 convolution whose
  s phases read box-summed kernel taps, then the same interleaving reshape.

On CPU (`conv_algorithm`, "auto") the wide layers' stride-1 convolutions, and all their
derivatives, run by Winograd's minimal filtering F(4, 4) (`winograd_correlate`,
`winograd_weight_grad`): half the multiply-adds of XLA's direct convolution, the same results to
float32 rounding.

D's recipe options are pure functions here: `minibatch_std` (the extra feature channel of Karras
et al.) and `spectral_normalize` (Miyato et al. 2018, stateless power iteration).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Iterator
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from wavegan.config import CONV_ALGORITHMS

_DN = ("NWC", "WIO", "NWC")


# How conv1d computes its correlations: "auto" (the default), "winograd" or "direct"; see
# `conv_algorithm`.
_ALGORITHM: contextvars.ContextVar[str] = contextvars.ContextVar("conv_algorithm", default="auto")


@contextlib.contextmanager
def conv_algorithm(name: str) -> Iterator[None]:
  """Within the block, `conv1d` computes its correlations this way.

  It is read when a function is traced: a jitted function already traced keeps the algorithm it
  was traced with (jit's cache does not know of this setting), so jit a new function inside the
  block. The training step does so from `compute.conv`.

  "winograd" runs the wide layers' correlations (float32, both channel counts >= 128) as
  `winograd_correlate`: half the multiply-adds of "direct", results that differ from it by float32
  rounding (about 1e-6 relative). "direct" runs every one as XLA's convolution. "auto" is
  "winograd" on the CPU backend, where it was measured to pay, and "direct" on accelerators,
  whose convolution libraries choose their own algorithms.
  """
  if name not in CONV_ALGORITHMS:
    raise ValueError(f"conv algorithm {name!r}: must be one of {', '.join(CONV_ALGORITHMS)}")
  token = _ALGORITHM.set(name)
  try:
    yield
  finally:
    _ALGORITHM.reset(token)


def conv1d(x: jax.Array, w: jax.Array, pad_l: int, pad_r: int) -> jax.Array:
  """Stride-1 1-D convolution (cross-correlation): x [B, L, C_in], w [T, C_in, C_out].

  y[l] = sum_t x_pad[l + t] w[t], with x zero-padded by (pad_l, pad_r); [B, L + pad_l + pad_r -
  T + 1, C_out]. Its own VJP keeps every derivative, to any order, a correlation of this one
  canonical form or a matmul. XLA's automatic transposes produce weight-gradient and input-gradient
  convolutions in other dimension orders, which XLA:CPU runs through a generic loop emitter inside
  loops (the critic `scan`): 27x slower for the demo model's whole train step. The algorithm
  (`conv_algorithm`) is fixed when the call is traced and used by its derivatives too.
  """
  return _conv1d(x, w, pad_l, pad_r, resolved_algorithm(_ALGORITHM.get()))


def resolved_algorithm(name: str) -> str:
  """The algorithm, "winograd" or "direct", that a `conv_algorithm` name stands for."""
  if name == "auto":
    return "winograd" if jax.default_backend() == "cpu" else "direct"
  return name


def _correlate(x: jax.Array, w: jax.Array, pad_l: int, pad_r: int, algorithm: str) -> jax.Array:
  """The forward correlation of `conv1d`, by `algorithm` where the shapes suit it."""
  if algorithm == "winograd" and winograd_suits(x, w, pad_l, pad_r):
    return winograd_correlate(x, w, pad_l, pad_r)
  return jax.lax.conv_general_dilated(x, w, (1,), [(pad_l, pad_r)], dimension_numbers=_DN)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv1d(x: jax.Array, w: jax.Array, pad_l: int, pad_r: int, algorithm: str) -> jax.Array:
  return _correlate(x, w, pad_l, pad_r, algorithm)


def _conv1d_fwd(x, w, pad_l, pad_r, algorithm):
  return _conv1d(x, w, pad_l, pad_r, algorithm), (x, w)


def _conv1d_bwd(pad_l, pad_r, algorithm, res, g):
  x, w = res
  if algorithm == "winograd":
    dx = _input_grad(g, w, pad_l, pad_r, algorithm)
  else:
    dx = _flipped_correlation(g, w, pad_l, pad_r, algorithm)
  return dx, _weight_grad(x, g, pad_l, pad_r, w.shape[0], algorithm).astype(w.dtype)


def _flipped_correlation(g, w, pad_l, pad_r, algorithm):
  """dx[m] = sum_t g[m + pad_l - t] w[t]^T: a correlation of g with the flipped, transposed
  kernel, [B, L, C_in]; its derivatives are `_conv1d`'s, through the flip and transpose."""
  taps = w.shape[0]
  w_t = jnp.flip(w, 0).transpose(0, 2, 1)  # [T, C_out, C_in]
  return _conv1d(g, w_t, taps - 1 - pad_l, taps - 1 - pad_r, algorithm)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _input_grad(g, w, pad_l, pad_r, algorithm):
  """`_flipped_correlation` with its own VJP, so the gradient penalty's kernel gradient comes
  out in w's layout: for a cotangent c of dx, d<c, dx>/dw is the forward conv's weight gradient
  with c in x's place, and d<c, dx>/dg is the forward conv of c. (Autodiff through the
  transpose would fold the 7 Winograd components in strided order: the double backward of D's
  last layer took 1.9x as long.) The direct algorithm keeps `_flipped_correlation`, whose rounding the figures
  measured before this form have."""
  return _flipped_correlation(g, w, pad_l, pad_r, algorithm)


def _input_grad_fwd(g, w, pad_l, pad_r, algorithm):
  return _input_grad(g, w, pad_l, pad_r, algorithm), (g, w)


def _input_grad_bwd(pad_l, pad_r, algorithm, res, c):
  g, w = res
  dg = _conv1d(c, w, pad_l, pad_r, algorithm)
  return dg, _weight_grad(c, g, pad_l, pad_r, w.shape[0], algorithm).astype(w.dtype)


_input_grad.defvjp(_input_grad_fwd, _input_grad_bwd)


def _weight_grad(x, g, pad_l, pad_r, taps, algorithm):
  """The kernel gradient [T, C_in, C_out] of `_conv1d(x, ., pad_l, pad_r)` for cotangent g."""
  w_shape = jax.ShapeDtypeStruct((taps, x.shape[-1], g.shape[-1]), x.dtype)
  if algorithm == "winograd" and winograd_suits(x, w_shape, pad_l, pad_r):
    return winograd_weight_grad(x, g, pad_l, pad_r, taps)
  return _conv1d_weight_grad(x, g, pad_l, pad_r, taps)


def _conv1d_weight_grad(x: jax.Array, g: jax.Array, pad_l: int, pad_r: int, taps: int) -> jax.Array:
  """dw[t] = sum_{b, l} x_pad[b, l + t]^T g[b, l] for x [B, L, C_in], g [B, L_out, C_out]."""
  xp = jnp.pad(x, ((0, 0), (pad_l, pad_r), (0, 0)))  # [B, L_pad, C_in]
  if x.shape[-1] < 16:
    # Few input channels (D's first layer): a matmul per tap is quicker.
    out_len = g.shape[1]
    return jnp.stack([jnp.einsum("bli,blo->io", xp[:, t : t + out_len], g) for t in range(taps)])
  # The same sum as one canonical convolution: C_in as the batch, B as the input feature and
  # g as a kernel spanning the whole length. 1.2-2.8x faster than per-tap matmuls at batch 64.
  lhs = xp.transpose(2, 1, 0)  # [C_in, L_pad, B]
  rhs = g.transpose(1, 0, 2)  # [L_out, B, C_out]
  out = jax.lax.conv_general_dilated(lhs, rhs, (1,), [(0, 0)], dimension_numbers=_DN)
  return out.transpose(1, 0, 2)  # [T, C_in, C_out]


_conv1d.defvjp(_conv1d_fwd, _conv1d_bwd)


# ---------------------------------------------------------------------------------------------
# Winograd's minimal filtering (Lavin & Gray 2016) for the wide layers' correlations

WINOGRAD_TILE = 4  # outputs per tile m, and taps per kernel segment r (r = m: see below)
# Toom-Cook's interpolation points (and infinity) for F(4, 4): of the sets drawn from 0, +-1, +-2,
# +-3, +-1/2 and +-1/3, the one with the smallest float32 error on random tiles.
WINOGRAD_POINTS = (0, 1, -1, 2, Fraction(1, 2), Fraction(-1, 2))
# Narrower correlations stay direct. Measured at batch 64, 7 taps, on CPU: 128 -> 256 channels at
# 1024 steps gained 1.0-1.2x (and the training step more than that), 64 -> 128 and 32 -> 64 at
# 4096 steps lost 1.2-1.9x in every direction (the transforms' memory traffic outweighs the saved
# multiply-adds).
WINOGRAD_MIN_CHANNELS = 128


@functools.cache
def toom_cook(m: int, r: int, points: tuple[Fraction | int, ...]) -> tuple[np.ndarray, ...]:
  """The transforms of Winograd's F(m, r): y = A^T [(G g) * (B^T d)] for a tile of m outputs
  y[i] = sum_k d[i + k] g[k] of an r-tap correlation, with m + r - 1 products instead of m * r.

  A^T and G come from Toom-Cook at `points` (m + r - 2 finite points, then infinity); B^T is
  then the unique matrix that makes the identity hold, solved for and checked here.

  Returns:
    (A^T [m, a], G [a, r], B^T [a, a]) as float64, a = m + r - 1.
  """
  a = m + r - 1
  pts = [Fraction(p) for p in points]
  if len(pts) != a - 1 or len(set(pts)) != len(pts):
    raise ValueError(f"F({m}, {r}) needs {a - 1} distinct finite points, got {points}")
  at = [[float(p**i) for p in pts] + [float(i == m - 1)] for i in range(m)]
  g = []
  for p in pts:
    f = np.prod([p - q for q in pts if q != p])
    g.append([float(p**k / f) for k in range(r)])
  g.append([float(k == r - 1) for k in range(r)])
  at, g = np.array(at), np.array(g)
  # sum_j A^T[i, j] G[j, k] B^T[j, l] = [l == i + k] for every i, k, l: linear in B^T.
  system = np.einsum("ij,jk,jJ,lL->iklJL", at, g, np.eye(a), np.eye(a)).reshape(m * r * a, a * a)
  target = np.array([[[float(l == i + k) for l in range(a)] for k in range(r)] for i in range(m)])
  bt, *_ = np.linalg.lstsq(system, target.reshape(-1), rcond=None)
  if not np.allclose(system @ bt, target.reshape(-1), atol=1e-9):
    raise ValueError(f"no Winograd F({m}, {r}) at points {points}")
  return at, g, bt.reshape(a, a)


def winograd_suits(x: jax.Array, w: jax.Array, pad_l: int, pad_r: int) -> bool:
  """Whether `winograd_correlate` pays: float32 (bfloat16 would lose too much in the
  transforms), both channel counts >= WINOGRAD_MIN_CHANNELS and at least one whole tile of
  outputs."""
  out_len = x.shape[1] + pad_l + pad_r - w.shape[0] + 1
  wide = min(x.shape[-1], w.shape[-1]) >= WINOGRAD_MIN_CHANNELS
  return x.dtype == jnp.float32 and w.dtype == jnp.float32 and wide and out_len >= WINOGRAD_TILE


def _combine(coefs: np.ndarray, xs: list[jax.Array]) -> jax.Array:
  """sum_i coefs[i] * xs[i], skipping zero coefficients (elementwise; XLA fuses it)."""
  out = None
  for c, x in zip(coefs.tolist(), xs):
    if c == 0:
      continue
    term = x if c == 1 else -x if c == -1 else x * c
    out = term if out is None else out + term
  return out


def _winograd_tiles(length: int, pad_l: int, pad_r: int, taps: int) -> tuple[int, int, int]:
  """(segments S, output tiles, input tiles) of an F(4, 4) correlation (see below)."""
  m = WINOGRAD_TILE
  segments = -(-taps // m)
  tiles = -(-(length + pad_l + pad_r - taps + 1) // m)
  return segments, tiles, tiles + segments - 1


def _input_tiles(x: jax.Array, pad_l: int, in_tiles: int, axis: int) -> list[jax.Array]:
  """The 7 transformed input tiles U_j = (B^T d)_j of x zero-padded by pad_l along `axis`:
  tile t spans samples 4t .. 4t+6 of the padded x; each U_j has `in_tiles` along `axis`."""
  m = WINOGRAD_TILE
  _, _, bt = toom_cook(m, m, WINOGRAD_POINTS)
  length = x.shape[axis]
  blocks = in_tiles + 1  # each input tile spans two blocks of m samples
  pads = [(0, 0)] * x.ndim
  pads[axis] = (pad_l, max(m * blocks - length - pad_l, 0))
  xp = jax.lax.slice_in_dim(jnp.pad(x, pads), 0, m * blocks, axis=axis)
  xp = xp.reshape(*x.shape[:axis], blocks, m, *x.shape[axis + 1 :])
  d = [  # [..., in_tiles, ...] each: sample i of every tile
    jnp.take(jax.lax.slice_in_dim(xp, i // m, i // m + in_tiles, axis=axis), i % m, axis=axis + 1)
    for i in range(2 * m - 1)
  ]
  return [_combine(bt[j], d) for j in range(2 * m - 1)]


def winograd_correlate(x: jax.Array, w: jax.Array, pad_l: int, pad_r: int) -> jax.Array:
  """The correlation of `conv1d` by Winograd's F(4, 4): x [B, L, C_in], w [T, C_in, C_out].

  The kernel is cut into S = ceil(T / 4) segments of 4 taps. Output tile j (outputs 4j .. 4j+3)
  of segment s reads the 7 input samples from 4(j + s): input tile j + s. So each input tile is
  transformed once (U = B^T d, 7 values per channel), and in the transformed domain each of the
  7 components is an ordinary S-tap correlation over tiles, with the transformed kernel (G g):
  7 * S multiply-adds per 4 outputs and channel pair, against 4 * T directly (14 against 28 for
  the paper model's 7-tap polyphase layers). A^T folds each component back to 4 outputs. The
  transforms are sums of slices, fused by XLA. Its derivatives are `conv1d`'s: the input
  gradient is another such correlation, the weight gradient `winograd_weight_grad`.
  """
  b, length, c_in = x.shape
  taps, _, c_out = w.shape
  m = WINOGRAD_TILE
  at, g, _ = toom_cook(m, m, WINOGRAD_POINTS)
  segments, tiles, in_tiles = _winograd_tiles(length, pad_l, pad_r, taps)
  u = _input_tiles(x, pad_l, in_tiles, axis=1)  # [B, in_tiles, C_in] each
  wp = jnp.pad(w, ((0, segments * m - taps), (0, 0), (0, 0))).reshape(segments, m, c_in, c_out)
  v = [_combine(g[j], [wp[:, k] for k in range(m)]) for j in range(2 * m - 1)]  # [S, C_in, C_out]
  prods = [
    jax.lax.conv_general_dilated(u_j, v_j, (1,), [(0, 0)], dimension_numbers=_DN)
    for u_j, v_j in zip(u, v)
  ]  # [B, tiles, C_out] each
  y = jnp.stack([_combine(at[i], prods) for i in range(m)], axis=2)  # [B, tiles, m, C_out]
  out_len = length + pad_l + pad_r - taps + 1
  return y.reshape(b, tiles * m, c_out)[:, :out_len]


def winograd_weight_grad(
  x: jax.Array, g: jax.Array, pad_l: int, pad_r: int, taps: int
) -> jax.Array:
  """`_conv1d_weight_grad` through `winograd_correlate`'s transforms: dw [T, C_in, C_out].

  Backwards through the forward: the output gradient g [B, L_out, C_out] unfolds into the 7
  components (dM_j = sum_i A^T[i, j] g_i), each component's S-tap kernel gradient is the
  canonical weight-gradient convolution of U_j and dM_j (C_in as its batch, B as its feature),
  and G^T folds the 7 back into the 4 taps of each segment. Both operands are built directly in
  that convolution's layout, so the only transposes are of x and g, once each.
  """
  b, length, c_in = x.shape
  c_out = g.shape[-1]
  m = WINOGRAD_TILE
  at, gm, _ = toom_cook(m, m, WINOGRAD_POINTS)
  segments, tiles, in_tiles = _winograd_tiles(length, pad_l, pad_r, taps)
  u = _input_tiles(x.transpose(2, 1, 0), pad_l, in_tiles, axis=1)  # [C_in, in_tiles, B] each
  gt = g.transpose(1, 0, 2)  # [L_out, B, C_out]
  gt = jnp.pad(gt, ((0, tiles * m - gt.shape[0]), (0, 0), (0, 0))).reshape(tiles, m, b, c_out)
  dm = [_combine(at[:, j], [gt[:, i] for i in range(m)]) for j in range(2 * m - 1)]
  dv = [  # [C_in, S, C_out] each
    jax.lax.conv_general_dilated(u_j, dm_j, (1,), [(0, 0)], dimension_numbers=_DN)
    for u_j, dm_j in zip(u, dm)
  ]
  dwp = jnp.stack([_combine(gm[:, k], dv) for k in range(m)], axis=2)  # [C_in, S, m, C_out]
  return dwp.reshape(c_in, segments * m, c_out)[:, :taps].transpose(1, 0, 2)


def same_pad_before(kernel_len: int, stride: int) -> int:
  """Left padding TF uses for a 'SAME' conv whose input length is a multiple of the stride."""
  return max(kernel_len - stride, 0) // 2


@functools.cache
def polyphase_plan(kernel_len: int, stride: int) -> tuple[np.ndarray, int, int]:
  """Tap table turning a stride-s transposed conv into a stride-1 conv with s outputs per step.

  TF's transposed conv ('SAME', output length s*L) is
    y[n] = sum_m x[m] W[n + p - s*m],   p = same_pad_before(K, s).
  Writing n = s*q + r and j = q - m gives y[s*q + r] = sum_j x[q - j] W[s*j + r + p], a stride-1
  correlation over taps t = j_max - j whose weight for phase r is W[s*(j_max - t) + r + p].

  Returns:
    (index [T, s] into W, with K marking a zero tap), left padding, right padding of x.
  """
  p = same_pad_before(kernel_len, stride)
  js = [
    j
    for j in range(-kernel_len, kernel_len + 1)
    if any(0 <= stride * j + r + p < kernel_len for r in range(stride))
  ]
  j_min, j_max = min(js), max(js)
  taps = j_max - j_min + 1
  t = np.arange(taps)[:, None]
  r = np.arange(stride)[None, :]
  index = stride * (j_max - t) + r + p  # [T, s]
  index = np.where((index >= 0) & (index < kernel_len), index, kernel_len)
  return index, j_max, -j_min


def polyphase_kernel(kernel: jax.Array, stride: int) -> tuple[jax.Array, int, int]:
  """[K, C_in, C_out] transposed-conv kernel -> [T, C_in, s * C_out] stride-1 kernel (+ padding)."""
  k, c_in, c_out = kernel.shape
  index, pad_l, pad_r = polyphase_plan(k, stride)
  padded = jnp.concatenate([kernel, jnp.zeros((1, c_in, c_out), kernel.dtype)], axis=0)
  taps = padded[index]  # [T, s, C_in, C_out]
  taps = taps.transpose(0, 2, 1, 3).reshape(index.shape[0], c_in, stride * c_out)
  return taps, pad_l, pad_r


def nearest_kernel(kernel: jax.Array, stride: int) -> tuple[jax.Array, int, int]:
  """Nearest-neighbour upsampling + a 'SAME' conv as one stride-1 conv on the low-rate input.

  With u[n] = x[n // s] and TF's stride-1 'SAME' left padding P = (K - 1) // 2, the layer is
    y[n] = sum_k u[n + k - P] W[k].
  Writing n = s*q + r, u[s*q + r + k - P] = x[q + j] with j = floor((r + k - P) / s), so
    y[s*q + r] = sum_j x[q + j] V_r[j],   V_r[j] = sum_{d<s} W[s*j + P - r + d] = B[s*j + P + s-1-r]
  with B[m] = sum_{e<s} W[m - e] (W zero outside [0, K)): W convolved with a length-s box. u is
  zero outside [0, s*L) exactly where x is outside [0, L), so zero-padding x is exact. j runs
  from floor(-P / s) to floor((K + s - 2 - P) / s); for phase r' = s-1-r, tap t = j - j_min reads
  B[s*(t + j_min) + P + r'], contiguous in (t, r'), so the taps are slices and a reshape (no
  gathers, whose gradients are slow scatters on CPU).

  Args:
    kernel: [K, C_in, C_out], the conv's kernel.
    stride: s, the upsampling factor.

  Returns:
    (kernel [T, C_in, s * C_out], phase-major like `polyphase_kernel`; left and right padding).
  """
  k, c_in, c_out = kernel.shape
  s = stride
  p = (k - 1) // 2
  j_min, j_max = (-p) // s, (k + s - 2 - p) // s
  taps = j_max - j_min + 1
  padded = jnp.pad(kernel, ((s - 1, s - 1), (0, 0), (0, 0)))  # [K + 2s - 2, C_in, C_out]
  box = padded[s - 1 : s - 1 + k + s - 1]  # B: e = 0 ...
  for e in range(1, s):
    box = box + padded[s - 1 - e : s - 1 - e + k + s - 1]  # ... + W[m - e]; [K + s - 1, ...]
  lo = -(s * j_min + p)  # B's index s*j_min + P (in [1 - s, 0]) lands at 0
  box = jnp.pad(box, ((lo, taps * s - lo - (k + s - 1)), (0, 0), (0, 0)))  # [T * s, ...]
  v = box.reshape(taps, s, c_in, c_out)[:, ::-1]  # [T, s (phase r), C_in, C_out]
  return v.transpose(0, 2, 1, 3).reshape(taps, c_in, s * c_out), -j_min, j_max


def space_to_depth_kernel(kernel: jax.Array, stride: int) -> tuple[jax.Array, int, int]:
  """[K, C_in, C_out] strided-conv kernel -> [T, s * C_in, C_out] kernel over s-sample frames.

  TF's strided conv ('SAME', input length s*L) is y[m] = sum_k x[s*m + k - p] W[k]. With
  k - p = s*u + r (frame offset u, phase r) it reads frame m+u, phase r: a stride-1 conv over
  frames whose taps u run from floor(-p/s) to floor((K-1-p)/s).

  Returns:
    (kernel [T, s * C_in, C_out], left padding, right padding) in frames.
  """
  k, c_in, c_out = kernel.shape
  p = same_pad_before(k, stride)
  u_min, u_max = (-p) // stride, (k - 1 - p) // stride
  taps = u_max - u_min + 1
  offset = -p - u_min * stride  # where W[0] lands in the flattened [T * s] taps
  padded = jnp.pad(kernel, ((offset, taps * stride - offset - k), (0, 0), (0, 0)))
  return padded.reshape(taps, stride * c_in, c_out), -u_min, u_max


def _glorot(key: jax.Array, shape: tuple[int, int, int]) -> jax.Array:
  # tf.layers' default for conv and transposed-conv kernels: fan_in + fan_out = K * (C_in + C_out).
  return nnx.initializers.glorot_uniform(in_axis=(0, 1), out_axis=2)(key, shape, jnp.float32)


class Upsample1d(nnx.Module):
  """Transposed conv, stride s, TF 'SAME': [B, L, C_in] -> [B, s * L, C_out]."""

  # [K, C_in, C_out] kernel, stride -> (stride-1 kernel [T, C_in, s * C_out], left, right padding)
  phase_kernel = staticmethod(polyphase_kernel)

  def __init__(self, c_in: int, c_out: int, kernel_len: int, stride: int, *, rngs: nnx.Rngs):
    self.stride = stride
    self.kernel = nnx.Param(_glorot(rngs.params(), (kernel_len, c_in, c_out)))
    self.bias = nnx.Param(jnp.zeros((c_out,), jnp.float32))

  def __call__(self, x: jax.Array) -> jax.Array:
    b, length, _ = x.shape
    kernel = self.kernel[...].astype(x.dtype)
    w, pad_l, pad_r = self.phase_kernel(kernel, self.stride)  # [T, C_in, s * C_out]
    y = conv1d(x, w, pad_l, pad_r)  # [B, L, s * C_out]
    y = y.reshape(b, length * self.stride, -1)  # [B, L, s*C] -> [B, s*L, C]
    return y + self.bias[...].astype(x.dtype)


class NearestUpsample1d(Upsample1d):
  """Repeat each sample s times, then a stride-1 TF 'SAME' conv: [B, L, C_in] -> [B, s*L, C_out].

  The WaveGAN authors' `nn` option. Parameters (names, shapes, initialisation) are
  `Upsample1d`'s; the conv runs at the input rate through `nearest_kernel`.
  """

  phase_kernel = staticmethod(nearest_kernel)


class Downsample1d(nnx.Module):
  """Strided conv, stride s, TF 'SAME': [B, s * L, C_in] -> [B, L, C_out].

  With `spectral_iters` > 0 the kernel, viewed as a [K * C_in, C_out] matrix, is divided by its
  largest singular value (`spectral_normalize`) on every call.
  """

  def __init__(
    self,
    c_in: int,
    c_out: int,
    kernel_len: int,
    stride: int,
    *,
    rngs: nnx.Rngs,
    spectral_iters: int = 0,
  ):
    self.stride = stride
    self.spectral_iters = spectral_iters
    self.kernel = nnx.Param(_glorot(rngs.params(), (kernel_len, c_in, c_out)))
    self.bias = nnx.Param(jnp.zeros((c_out,), jnp.float32))

  def __call__(self, x: jax.Array) -> jax.Array:
    b, n, c = x.shape
    kernel = self.kernel[...]
    if self.spectral_iters:
      kernel = spectral_normalize(kernel, self.spectral_iters)
    kernel = kernel.astype(x.dtype)
    w, pad_l, pad_r = space_to_depth_kernel(kernel, self.stride)  # [T, s * C_in, C_out]
    frames = x.reshape(b, n // self.stride, self.stride * c)  # [B, L, s * C_in]
    y = conv1d(frames, w, pad_l, pad_r)  # [B, L, C_out]
    return y + self.bias[...].astype(x.dtype)


def minibatch_std(x: jax.Array, group: int, eps: float = 1e-8) -> jax.Array:
  """Minibatch standard deviation (Karras et al. 2018): x [B, L, C] -> the extra channel [B, L, 1].

  The batch is split into B / G groups of G consecutive clips. Per group, the standard deviation
  over its clips of every (position, channel), sqrt(var + eps) with the population variance, is
  averaged to one scalar, which fills the channel of each of the group's clips.

  Args:
    x: features [B, L, C]; B must be a multiple of `group`.
    group: clips per group, G >= 1.
    eps: added to the variance inside the square root.

  Returns:
    [B, L, 1] in x's dtype (computed in float32).
  """
  b, length, c = x.shape
  if group < 1 or b % group:
    raise ValueError(f"minibatch std: batch {b} does not split into groups of {group}")
  g = x.astype(jnp.float32).reshape(b // group, group, length, c)  # [B/G, G, L, C]
  var = jnp.mean(jnp.square(g - jnp.mean(g, axis=1, keepdims=True)), axis=1)  # [B/G, L, C]
  stat = jnp.mean(jnp.sqrt(var + eps), axis=(1, 2))  # [B/G]
  stat = jnp.repeat(stat, group)  # [B]
  return jnp.broadcast_to(stat[:, None, None], (b, length, 1)).astype(x.dtype)


@functools.cache
def _power_start(n: int) -> np.ndarray:
  """The power iteration's fixed start vector [n]: unit norm, deterministic, generic."""
  v = np.random.default_rng(0).standard_normal(n)
  return (v / np.linalg.norm(v)).astype(np.float32)


def _unit(v: jax.Array) -> jax.Array:
  return v / jnp.maximum(jnp.linalg.norm(v), 1e-12)


def spectral_normalize(w: jax.Array, iters: int) -> jax.Array:
  """w / sigma, sigma the largest singular value of w viewed as a [prod(shape[:-1]), C_out] matrix.

  Spectral normalisation (Miyato et al. 2018), stateless: sigma is estimated afresh on every call
  by `iters` power iterations from a fixed start vector, so the weights stay a plain pytree. The
  singular vectors u, v are constants (stop_gradient) and gradients flow through sigma = u^T W v.
  The estimate never exceeds the true sigma and converges like (sigma_2 / sigma_1)^(2 * iters).
  Computed in float32, returned in w's dtype.

  Args:
    w: a kernel [..., C_out], e.g. a conv's [K, C_in, C_out] or a dense layer's [F, C_out].
    iters: power iterations, >= 1 (unrolled).

  Returns:
    w / sigma, same shape and dtype as w.
  """
  mat = w.astype(jnp.float32).reshape(-1, w.shape[-1])  # [M, N]
  frozen = jax.lax.stop_gradient(mat)

  v = jnp.asarray(_power_start(mat.shape[1]))  # [N]
  for _ in range(iters):  # unrolled: a few matrix-vector products
    u = _unit(frozen @ v)  # [M]
    v = _unit(frozen.T @ u)  # [N]
  sigma = u @ mat @ v
  return (w.astype(jnp.float32) / sigma).astype(w.dtype)


def phase_shuffle(x: jax.Array, rng: jax.Array, radius: int) -> jax.Array:
  """Shifts [B, T, C] in time by one random k in [-radius, radius], reflect-padding the edge.

  As in the authors' code, one shift per call is shared by the whole batch.
  """
  if radius == 0:
    return x
  t = x.shape[1]
  shift = jax.random.randint(rng, (), -radius, radius + 1)
  padded = jnp.pad(x, ((0, 0), (radius, radius), (0, 0)), mode="reflect")
  # Output sample i reads input i - shift, i.e. padded index i - shift + radius.
  return jax.lax.dynamic_slice_in_dim(padded, radius - shift, t, axis=1)


def lrelu(x: jax.Array, alpha: float = 0.2) -> jax.Array:
  return jnp.maximum(x, alpha * x)
