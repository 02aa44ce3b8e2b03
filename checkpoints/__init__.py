"""Checkpointing for WaveGAN runs: orbax-backed, atomic, asynchronous, self-describing."""

from checkpoints.manager import Checkpointer, CheckpointNotFoundError

__all__ = ["CheckpointNotFoundError", "Checkpointer"]
