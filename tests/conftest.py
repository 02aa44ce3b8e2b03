"""Shared fixtures: tiny configs and a small built-in corpus in a temporary cache."""

import os

import pytest

# Tests run on the host CPU; keep XLA from grabbing an accelerator if one happens to exist.
os.environ.setdefault("JAX_PLATFORMS", "cpu")


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
  """The built-in corpus is generated under a per-session temporary cache, never in $HOME.

  Session-scoped, so module-scoped fixtures (set up before any function-scoped one) see it too.
  """
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv("WAVEGAN_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    yield
