"""Shared fixtures: tiny configs and a small built-in corpus in a temporary cache."""

import os

import pytest

# Tests run on the host CPU; keep XLA from grabbing an accelerator if one happens to exist.
os.environ.setdefault("JAX_PLATFORMS", "cpu")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
  """The built-in corpus is generated under a per-session temporary cache, never in $HOME."""
  monkeypatch.setenv("WAVEGAN_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
