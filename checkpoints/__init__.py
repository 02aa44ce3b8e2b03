"""Checkpointing for WaveGAN runs: orbax-backed, atomic, asynchronous, self-describing."""

from checkpoints.manager import CheckpointNotFoundError, Checkpointer

__all__ = ["CheckpointNotFoundError", "Checkpointer"]
