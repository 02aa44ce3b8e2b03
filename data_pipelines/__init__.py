"""Data for WaveGAN: a built-in corpus, decoding, slicing, a prepared cache and a grain loader.

Everything here is numpy; nothing imports jax.
"""

from data_pipelines.audio_io import (
  AUDIO_EXTENSIONS,
  AudioDecodeError,
  AudioFile,
  DataError,
  check_folder,
  decode,
  is_audio_path,
  scan_folder,
)
from data_pipelines.batches import BatchSource
from data_pipelines.cache import (
  FileEntry,
  PreparedCache,
  PrepareReport,
  is_cache,
  open_cache,
  prepare,
)
from data_pipelines.clips import ClipSet, load_clips, skip_summary
from data_pipelines.corpus import (
  CORPUS_VERSION,
  STYLES,
  builtin_corpus,
  clip_rng,
  default_cache_root,
  make_corpus,
  synthesize,
)
from data_pipelines.loader import Loader, step_dataset
from data_pipelines.manifest import Manifest, read_manifest
from data_pipelines.normalization import NORMALIZE_MODES, NORMALIZE_PEAK
from data_pipelines.preprocess import SliceOptions, process_file
from data_pipelines.reports import reason_kind
from data_pipelines.slicing import (
  PAD_MODES,
  SLICE_MODES,
  loud_enough,
  slice_windows,
  trim_leading_silence,
  window_offsets,
)

__all__ = [
  "AUDIO_EXTENSIONS",
  "AudioDecodeError",
  "AudioFile",
  "BatchSource",
  "CORPUS_VERSION",
  "ClipSet",
  "DataError",
  "FileEntry",
  "Loader",
  "NORMALIZE_MODES",
  "PrepareReport",
  "PreparedCache",
  "SliceOptions",
  "Manifest",
  "NORMALIZE_PEAK",
  "PAD_MODES",
  "SLICE_MODES",
  "STYLES",
  "builtin_corpus",
  "check_folder",
  "clip_rng",
  "decode",
  "default_cache_root",
  "is_audio_path",
  "is_cache",
  "load_clips",
  "loud_enough",
  "make_corpus",
  "open_cache",
  "prepare",
  "process_file",
  "read_manifest",
  "reason_kind",
  "scan_folder",
  "skip_summary",
  "slice_windows",
  "step_dataset",
  "synthesize",
  "trim_leading_silence",
  "window_offsets",
]
