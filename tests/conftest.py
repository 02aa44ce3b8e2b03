"""Shared fixtures: tiny configs and a small built-in corpus in a temporary cache."""

import os
import subprocess
import sys

import numpy as np
import pytest
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Tests run on the host CPU; keep XLA from grabbing an accelerator if one happens to exist.
os.environ.setdefault("JAX_PLATFORMS", "cpu")


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
  """The built-in corpus is generated under a per-session temporary cache, never in $HOME.

  Compiled XLA programs go to a per-session folder too, shared by this process and the many
  `wavegan` subprocesses that compile the same tiny steps: every run of the suite starts cold, and
  a program is compiled once per suite rather than once per process.

  Session-scoped, so module-scoped fixtures (set up before any function-scoped one) see it too.
  """
  import jax  # pylint: disable=g-import-not-at-top

  base = tmp_path_factory.getbasetemp()
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv("WAVEGAN_CACHE", str(base / "cache"))
    mp.setenv("JAX_COMPILATION_CACHE_DIR", str(base / "xla"))
    mp.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.3")
    jax.config.update("jax_compilation_cache_dir", str(base / "xla"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.3)
    yield
    jax.config.update("jax_compilation_cache_dir", None)


def strong_components(nodes: list[str], edges: dict[str, set[str]]) -> list[list[str]]:
  """Groups of more than one node that reach each other along `edges` (node -> its targets)."""
  index = {n: i for i, n in enumerate(nodes)}
  pairs = [(index[a], index[b]) for a in nodes for b in edges[a] if b in index]
  rows, cols = zip(*pairs) if pairs else ((), ())
  adjacency = csr_matrix((np.ones(len(pairs)), (rows, cols)), shape=(len(nodes), len(nodes)))
  _, labels = connected_components(adjacency, directed=True, connection="strong")
  groups = [[n for n, label in zip(nodes, labels) if label == k] for k in set(labels)]
  return sorted(sorted(g) for g in groups if len(g) > 1)


def run_python(code: str, timeout: float = 120, check: bool = False) -> subprocess.CompletedProcess:
  """`python -c code` in a fresh interpreter at the repository root, on the CPU."""
  return subprocess.run(
    [sys.executable, "-c", code],
    capture_output=True,
    text=True,
    cwd=ROOT,
    env={**os.environ, "JAX_PLATFORMS": "cpu"},
    timeout=timeout,
    check=check,
  )
