"""Data for WaveGAN: a built-in procedural corpus, audio decoding, clips and resumable batches.

Everything here is numpy; nothing imports jax.
"""

from data_pipelines.audio_io import (
    AUDIO_EXTENSIONS,
    AudioDecodeError,
    AudioFile,
    DataError,
    decode,
    is_audio_path,
    scan_folder,
)
from data_pipelines.corpus import (
    CORPUS_VERSION,
    STYLES,
    builtin_corpus,
    clip_rng,
    default_cache_root,
    make_corpus,
    synthesize,
)
from data_pipelines.manifest import Manifest, read_manifest
from data_pipelines.slicing import (
    PAD_MODES,
    SLICE_MODES,
    loud_enough,
    slice_windows,
    trim_leading_silence,
    window_offsets,
)
from data_pipelines.dataset import (
    NORMALIZE_PEAK,
    BatchSource,
    ClipSet,
    load_clips,
    reason_kind,
    skip_summary,
)

__all__ = [
    "AUDIO_EXTENSIONS",
    "AudioDecodeError",
    "AudioFile",
    "BatchSource",
    "CORPUS_VERSION",
    "ClipSet",
    "DataError",
    "Manifest",
    "NORMALIZE_PEAK",
    "PAD_MODES",
    "SLICE_MODES",
    "STYLES",
    "builtin_corpus",
    "clip_rng",
    "decode",
    "default_cache_root",
    "is_audio_path",
    "load_clips",
    "loud_enough",
    "make_corpus",
    "read_manifest",
    "reason_kind",
    "scan_folder",
    "skip_summary",
    "slice_windows",
    "synthesize",
    "trim_leading_silence",
    "window_offsets",
]
