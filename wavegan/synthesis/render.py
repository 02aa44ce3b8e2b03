"""Batch rendering: TOML job files -> audio files + a manifest that can re-render any clip exactly.

    [[job]]
    name = "snares"          # required; names the job in errors, file names and the manifest
    style = "snare"          # a name, a mix {snare = 0.7, tom = 0.3}, or left out: every style in turn
                             # (runs with fields/attributes: {instrument = "snare", pitch = 220.0})
    count = 8                # clips
    seed = 1                 # random latents: clip i uses latent i of this seed
    format = "wav"           # wav, flac or ogg (Vorbis)

Every other key, with its default, is a field of `RenderJob`. Clip i of a job is a pure function
of (model, job): its latent is saved in `OUT/latents/<job>.npy` and described, with everything
else needed to redo it, by one row of `OUT/manifest.csv` / `manifest.json`. Files that already
exist are skipped (unless `overwrite`), and files are written under a temporary name and renamed,
so a killed render simply resumes. Files are written by background threads while the device
generates the next batch.
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import io
import json
import os
import string
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import soundfile as sf

from wavegan import files
from wavegan.config import MAX_SEED, ConfigError
from wavegan.errors import UserError, one_line
from wavegan.files import atomic_path
from wavegan.synthesis import pages
from wavegan.synthesis.synthesizer import LATENT_LIMIT, Synthesizer, interpolation_path

FORMATS = {"wav": "WAV", "flac": "FLAC", "ogg": "OGG"}
SUBTYPES = {
  ("wav", "16"): "PCM_16",
  ("wav", "24"): "PCM_24",
  ("wav", "float"): "FLOAT",
  ("flac", "16"): "PCM_16",
  ("flac", "24"): "PCM_24",
  ("ogg", "vorbis"): "VORBIS",
}
_SAMPLE_BYTES = {"PCM_16": 2, "PCM_24": 3, "FLOAT": 4, "VORBIS": 2}
_HEADER_BYTES = 4096  # headers, FLAC frame overhead, file-system rounding
MAX_COUNT = 10**12  # far past any disk; the free-space check refuses long before
ENUMERATE_LIMIT = 10**7  # past this many clips, size the render before looking for files
LATENT_SOURCES = ("random", "file", "interpolate")
NORMALIZE = ("none", "peak", "loudness")
TEMPLATE_FIELDS = ("job", "style", "seed", "index")
MANIFEST_FIELDS = (
  "file",
  "job",
  "style",
  "seed",
  "latent_index",
  "latents",
  "latent_row",
  "batch_size",
  "format",
  "subtype",
  "sample_rate",
  "normalize",
  "peak_db",
  "loudness_lufs",
  "fade_out_ms",
)


class JobError(ConfigError):
  """A job file that cannot be rendered; the message names the job and the key."""


@dataclasses.dataclass(frozen=True)
class RenderJob:
  """One `[[job]]` of a job file.

  Attributes:
    name: the job's name (letters, digits, "-", "_", "."); unique in the file.
    count: clips to render (for latent = "file": default all rows of the file).
    seed: latent seed (latent = "random": clip i uses latent i of the seed).
    style: a style name, a mix {name: weight}, or None for every style in turn.
    latent: "random", "file" (rows of a saved .npy [n, latent]) or "interpolate" (count latents
      evenly spaced along a path through latent 0 of each of `seeds`).
    latent_file: the .npy for latent = "file" (relative to the job file).
    seeds: the seeds an interpolation passes through (at least 2).
    interpolation: "linear" or "slerp".
    format: "wav", "flac" or "ogg".
    subtype: "16" or "24" (wav, flac), "float" (wav), "vorbis" (ogg, the default for it).
    sample_rate: output rate in Hz (resampled with soxr); 0 = the model's rate.
    normalize: "none", "peak" (to peak_db) or "loudness" (to loudness_lufs, peak limited to peak_db).
    peak_db: peak level in dBFS for normalize = "peak", and the ceiling for "loudness".
    loudness_lufs: integrated loudness target for normalize = "loudness".
    fade_out_ms: length of a raised-cosine fade at the end of each clip; 0 = none.
    filename: file name template (no extension) with {job}, {style}, {seed}, {index}.
  """

  name: str
  count: int = 0
  seed: int = 0
  style: str | dict[str, float] | None = None
  latent: str = "random"
  latent_file: str = ""
  seeds: tuple[int, ...] = ()
  interpolation: str = "linear"
  format: str = "wav"
  subtype: str = ""
  sample_rate: int = 0
  normalize: str = "none"
  peak_db: float = -1.0
  loudness_lufs: float = -16.0
  fade_out_ms: float = 0.0
  filename: str = "{job}_{index:04d}"

  @property
  def sound_subtype(self) -> str:
    """The libsndfile subtype, e.g. "PCM_16"."""
    return SUBTYPES[(self.format, self.subtype or ("vorbis" if self.format == "ogg" else "16"))]


_TYPES: dict[str, tuple[type, ...]] = {
  "name": (str,),
  "count": (int,),
  "seed": (int,),
  "style": (str, dict),
  "latent": (str,),
  "latent_file": (str,),
  "seeds": (list,),
  "interpolation": (str,),
  "format": (str,),
  "subtype": (str, int),
  "sample_rate": (int,),
  "normalize": (str,),
  "peak_db": (int, float),
  "loudness_lufs": (int, float),
  "fade_out_ms": (int, float),
  "filename": (str,),
}


_TYPE_NAMES = {
  str: "a string",
  int: "an integer",
  float: "a number",
  dict: "a table",
  list: "an array",
}


def _job_error(label: str, key: str, msg: str) -> JobError:
  return JobError(f"{label}: key {key!r}: {msg}")


def parse_job(table: Mapping[str, Any], number: int, base_dir: str = ".") -> RenderJob:
  """Validates one `[[job]]` table (without the model: see `check_jobs`).

  Args:
    table: the job's keys.
    number: its position in the file (1-based), for messages.
    base_dir: folder that relative paths are taken from.

  Raises:
    JobError: naming the job and the key.
  """
  name = table.get("name")
  label = f"job {name!r} (#{number})" if isinstance(name, str) else f"job #{number}"
  valid = sorted(_TYPES)
  for key, value in table.items():
    if key not in _TYPES:
      raise _job_error(label, key, f"unknown key; valid: {', '.join(valid)}")
    if isinstance(value, bool) or not isinstance(value, _TYPES[key]):
      kinds = " or ".join(_TYPE_NAMES[t] for t in _TYPES[key])
      raise _job_error(label, key, f"must be {kinds}, got {value!r}")
  if not isinstance(name, str) or not name:
    raise _job_error(label, "name", "every job needs a name")
  if not all(c.isalnum() or c in "-_." for c in name) or name.startswith("."):
    raise _job_error(label, "name", "use letters, digits, '-', '_' and '.' only")
  values = dict(table)
  if "seeds" in values:
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in values["seeds"]):
      raise _job_error(label, "seeds", "must be an array of integers")
    values["seeds"] = tuple(values["seeds"])
  if "subtype" in values:
    values["subtype"] = str(values["subtype"])
  style = values.get("style")
  if isinstance(style, dict):
    values["style"] = {k: _style_value(label, k, w) for k, w in style.items()}
  job = RenderJob(**values)

  def need(cond: bool, key: str, msg: str) -> None:
    if not cond:
      raise _job_error(label, key, msg)

  need(job.latent in LATENT_SOURCES, "latent", f"must be one of {', '.join(LATENT_SOURCES)}")
  if job.latent == "file":
    need(bool(job.latent_file), "latent_file", "latent = 'file' needs a .npy file")
    path = (
      job.latent_file if os.path.isabs(job.latent_file) else os.path.join(base_dir, job.latent_file)
    )
    need(os.path.isfile(path), "latent_file", f"{path}: no such file")
    job = dataclasses.replace(job, latent_file=os.path.abspath(path))
  else:
    need(not job.latent_file, "latent_file", "only used with latent = 'file'")
    need(job.count >= 1, "count", "must be >= 1")
  if job.latent == "interpolate":
    need(len(job.seeds) >= 2, "seeds", "an interpolation needs at least 2 seeds")
  else:
    need(not job.seeds, "seeds", "only used with latent = 'interpolate'")
  need(0 <= job.count <= MAX_COUNT, "count", f"must be in [0, {MAX_COUNT}]")
  need(0 <= job.seed <= MAX_SEED, "seed", f"must be in [0, {MAX_SEED}]")
  need(all(0 <= s <= MAX_SEED for s in job.seeds), "seeds", f"each must be in [0, {MAX_SEED}]")
  need(job.interpolation in ("linear", "slerp"), "interpolation", "must be 'linear' or 'slerp'")
  need(job.format in FORMATS, "format", f"must be one of {', '.join(FORMATS)}")
  subtypes = sorted(s for f, s in SUBTYPES if f == job.format)
  need(
    not job.subtype or (job.format, job.subtype) in SUBTYPES,
    "subtype",
    f"{job.format} takes {', '.join(subtypes)}",
  )
  need(
    job.sample_rate == 0 or 1000 <= job.sample_rate <= 384000,
    "sample_rate",
    "must be 0 (the model's rate) or 1000..384000",
  )
  need(job.normalize in NORMALIZE, "normalize", f"must be one of {', '.join(NORMALIZE)}")
  need(job.peak_db <= 0, "peak_db", "must be <= 0 dBFS")
  need(job.fade_out_ms >= 0, "fade_out_ms", "must be >= 0")
  try:
    fields = [f for _, f, _, _ in string.Formatter().parse(job.filename) if f is not None]
    bad = [f for f in fields if f.split(".")[0].split("[")[0] not in TEMPLATE_FIELDS]
    need(
      not bad,
      "filename",
      f"unknown field {{{bad[0] if bad else ''}}}; valid: "
      + ", ".join(f"{{{f}}}" for f in TEMPLATE_FIELDS),
    )
    job.filename.format(job=name, style="s", seed=0, index=0)
  except (ValueError, IndexError, KeyError) as err:
    raise _job_error(label, "filename", f"not a valid template ({err})") from None
  need(
    ".." not in job.filename.split("/") and not job.filename.startswith("/"),
    "filename",
    "must stay inside the output folder",
  )
  need(
    bool(job.filename.strip()) and all(part for part in job.filename.split("/")),
    "filename",
    "must name a file (no empty parts)",
  )
  bad_char = next(
    (c for c in job.filename if not c.isprintable() or 0xD800 <= ord(c) <= 0xDFFF), None
  )
  need(
    bad_char is None,
    "filename",
    f"holds the unprintable character {bad_char!r}; use letters, digits and punctuation",
  )
  try:
    os.fsencode(job.filename)
  except UnicodeError:
    need(False, "filename", "holds characters this file system cannot encode")
  return job


def read_jobs(path: str) -> list[RenderJob]:
  """Reads and validates a TOML job file (every job, before anything is rendered).

  Raises:
    JobError: the file is missing or not TOML, has no jobs, or a job is invalid.
  """
  try:
    import tomllib  # pylint: disable=g-import-not-at-top
  except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # pylint: disable=g-import-not-at-top

  if not os.path.isfile(path):
    raise JobError(f"{path}: no such job file")
  try:
    with open(path, "rb") as f:
      doc = tomllib.load(f)
  except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
    raise JobError(f"{path}: not valid TOML ({err})") from None
  extra = sorted(set(doc) - {"job"})
  if extra:
    raise JobError(f"{path}: unknown top-level key {extra[0]!r}; jobs go in [[job]] tables")
  tables = doc.get("job")
  if not isinstance(tables, list) or not tables:
    raise JobError(f"{path}: no jobs; add at least one [[job]] table")
  base = os.path.dirname(os.path.abspath(path))
  jobs = [parse_job(t, i + 1, base) for i, t in enumerate(tables)]
  names = [j.name for j in jobs]
  dup = next((n for n in names if names.count(n) > 1), None)
  if dup:
    raise JobError(f"{path}: two jobs are named {dup!r}; names must be unique")
  return jobs


@dataclasses.dataclass(frozen=True)
class Plan:
  """A job resolved against a model: how to get any clip's latent, style and file name.

  Nothing here grows with the clip count: latents, styles and names are made per batch, so a
  job of any size renders in the memory of one batch.
  """

  job: RenderJob
  count: int
  latent_dim: int
  points: np.ndarray | None = None  # latent = "interpolate": the seeds' latents [P, latent]
  rows: np.ndarray | None = None  # latent = "file": the file's rows, memory-mapped

  def latents(self, synth: Synthesizer, start: int, stop: int) -> np.ndarray:
    """Latents float32 [stop - start, latent] of clips start .. stop - 1."""
    if self.job.latent == "random":
      return synth.latents(stop - start, self.job.seed, start)
    if self.job.latent == "interpolate":
      return interpolation_path(self.points, self.count, self.job.interpolation, start, stop)
    return np.asarray(self.rows[start:stop], np.float32)

  def style_label(self, synth: Synthesizer, i: int) -> str:
    return style_label(synth, self.job.style, i)

  def file(self, synth: Synthesizer, i: int) -> str:
    """Clip i's file, relative to the output folder, with its extension."""
    name = self.job.filename.format(
      job=self.job.name,
      seed=self.job.seed,
      index=i,
      style=_file_safe(self.style_label(synth, i)) or "clip",
    )
    return f"{name}.{self.job.format}"

  def _checked(self, synth: Synthesizer, label: str) -> Plan:
    try:
      synth.style_weights(self.job.style, 1)
    except UserError as err:
      raise _job_error(label, "style", str(err)) from None
    return self


def style_label(synth: Synthesizer, style: Any, i: int) -> str:
  """A clip's style for file names and the manifest: a name, a mix as JSON, or ""."""
  if not synth.model.conditional:
    return synth.styles[0] if len(synth.styles) == 1 else ""
  if style is None:
    return synth.styles[i % len(synth.styles)]
  if isinstance(style, str):
    return style
  return json.dumps(style, sort_keys=True)


def _check_latent_rows(label: str, rows: np.ndarray, chunk: int = 65536) -> None:
  """Refuses a latent file with non-finite or out-of-range values (read chunk by chunk)."""
  for start in range(0, rows.shape[0], chunk):
    part = np.asarray(rows[start : start + chunk], np.float64)
    bad = ~np.isfinite(part) | (np.abs(part) > LATENT_LIMIT)
    if bad.any():
      row = start + int(np.argwhere(bad)[0][0])
      raise _job_error(
        label,
        "latent_file",
        f"row {row} holds {part[bad][0]}: latents must be "
        f"finite and within [-{LATENT_LIMIT:g}, {LATENT_LIMIT:g}]",
      )


def plan_job(synth: Synthesizer, job: RenderJob, number: int) -> Plan:
  """Resolves a job against the model: its style, latent source and clip count.

  Raises:
    JobError: a style the model does not have, or a latent file of the wrong shape or values.
  """
  label = f"job {job.name!r} (#{number})"
  dim = synth.model.latent_dim
  if job.latent == "random":
    return Plan(job, job.count, dim)._checked(synth, label)
  if job.latent == "interpolate":
    points = np.stack([synth.latents(1, s)[0] for s in job.seeds])
    return Plan(job, job.count, dim, points=points)._checked(synth, label)
  try:
    rows = np.load(job.latent_file, mmap_mode="r", allow_pickle=False)
  except (OSError, ValueError) as err:
    raise _job_error(label, "latent_file", f"cannot read ({one_line(str(err))})") from None
  if rows.ndim != 2 or rows.shape[1] != dim or not np.issubdtype(rows.dtype, np.floating):
    raise _job_error(
      label, "latent_file", f"must hold float latents [n, {dim}]; got {rows.dtype} {rows.shape}"
    )
  count = job.count or rows.shape[0]
  if count > rows.shape[0]:
    raise _job_error(label, "count", f"{count} clips but the latent file has {rows.shape[0]} rows")
  _check_latent_rows(label, rows[:count])
  return Plan(job, count, dim, rows=rows[:count])._checked(synth, label)


def _style_value(label: str, key: str, value: Any) -> Any:
  """One entry of a style table: a mix weight or attribute value (number), a field's value
  (string) or a field's mix (table of numbers)."""
  if isinstance(value, str):
    return value
  if isinstance(value, dict):  # a field's mix: every weight a number
    return {k: _style_number(label, f"{key}.{k}", w) for k, w in value.items()}
  return _style_number(label, key, value)


def _style_number(label: str, key: str, w: Any) -> float:
  if isinstance(w, bool) or not isinstance(w, (int, float)) or not np.isfinite(w):
    raise _job_error(label, "style", f"value for {key!r} must be a finite number, got {w!r}")
  return float(w)


def parse_style(text: str | None) -> str | dict[str, Any] | None:
  """A command-line style: "snare", "kick=0.7,tom=0.3", "instrument=snare,pitch=220" or JSON.

  Numbers become floats (weights, attribute values); other values stay names (a field's value).
  """
  if not text:
    return None
  text = text.strip()
  if text.startswith("{"):
    try:
      return json.loads(text)
    except ValueError as err:
      raise ConfigError(f"--style {text}: not valid JSON ({err})") from None
  if "=" not in text:
    return text
  out: dict[str, Any] = {}
  for part in text.split(","):
    key, sep, value = part.partition("=")
    key, value = key.strip(), value.strip()
    if not sep or not key or not value:
      raise ConfigError(
        f"--style {text}: expected name=value pairs separated by commas, "
        f"e.g. kick=0.7,tom=0.3; got {part.strip()!r}"
      )
    if key in out:
      raise ConfigError(f"--style {text}: {key!r} is given twice")
    try:
      out[key] = float(value)
    except ValueError:
      out[key] = value
  return out


def _file_safe(label: str) -> str:
  """A style label usable in a file name ('{"kick": 0.7, ...}' -> 'kick0.7-tom0.3')."""
  if not label.startswith("{"):
    return label

  def part(k: str, v: Any) -> str:
    if isinstance(v, dict):
      return f"{k}-" + "-".join(part(kk, vv) for kk, vv in v.items())
    return f"{k}-{v}" if isinstance(v, str) else f"{k}{v:g}"

  return "-".join(part(k, v) for k, v in json.loads(label).items())


def check_plans(synth: Synthesizer, plans: list[Plan]) -> None:
  """Raises JobError when two clips of the file would get the same file name."""
  seen: dict[str, str] = {}
  for p in plans:
    for i in range(p.count):
      f = p.file(synth, i)
      if f in seen:
        raise JobError(
          f"job {p.job.name!r}: key 'filename': {one_line(f)} is also a file of job "
          f"{seen[f]!r}; add {{index}} or {{job}} to the template"
        )
      seen[f] = p.job.name


def clip_bytes(job: RenderJob, model: Any, model_rate: int) -> int:
  """An upper estimate of one clip's file size in bytes (for the free-space check)."""
  rate = job.sample_rate or model_rate
  frames = -(-model.slice_len * rate // model_rate)
  pcm = frames * model.channels * _SAMPLE_BYTES[job.sound_subtype]
  return _HEADER_BYTES + (pcm if job.format != "ogg" else pcm // 4)


def render_bytes(synth: Synthesizer, plans: list[Plan], todo: list[np.ndarray]) -> int:
  """What a render will add to the disk: its missing clips and its latent files."""
  audio = sum(
    idx.size * clip_bytes(p.job, synth.model, synth.sample_rate) for p, idx in zip(plans, todo)
  )
  return audio + sum(p.count * p.latent_dim * 4 + _HEADER_BYTES for p in plans)


def postprocess(audio: np.ndarray, job: RenderJob, model_rate: int) -> np.ndarray:
  """A clip [T, C] as it is written: resampled, normalised, faded, clipped to [-1, 1]."""
  import soxr  # pylint: disable=g-import-not-at-top

  x = np.array(audio, np.float32)  # a copy: the caller's array may be read-only
  rate = job.sample_rate or model_rate
  if rate != model_rate:
    x = soxr.resample(x, model_rate, rate, quality="HQ").astype(np.float32)
  peak_limit = 10.0 ** (job.peak_db / 20.0)
  peak = float(np.max(np.abs(x))) if x.size else 0.0
  if job.normalize == "peak" and peak > 0:
    x = x * (peak_limit / peak)
  elif job.normalize == "loudness" and peak > 0:
    from data_pipelines.normalization import loudness_gain  # pylint: disable=g-import-not-at-top

    x = x * min(loudness_gain(x, rate, job.loudness_lufs), peak_limit / peak)
  if job.fade_out_ms > 0:
    n = min(x.shape[0], int(round(job.fade_out_ms * rate / 1000)))
    if n > 0:
      ramp = 0.5 * (1 + np.cos(np.pi * np.arange(1, n + 1) / n))  # 1 -> 0, raised cosine
      x[-n:] *= ramp[:, None].astype(np.float32)
  return np.clip(x, -1.0, 1.0)


def _verify_audio(path: str, frames: int, channels: int, need: int) -> Callable[[str], None]:
  """A check that a written audio file decodes whole to `frames` x `channels`.

  At most frames + 1 frames are decoded, whatever the header claims: a file cut short by a full
  disk can carry a length that no array could hold. A failed check on a disk with less than
  `need` bytes free is a full disk (`DiskFullError`, naming `path`).
  """

  def verify(tmp: str) -> None:
    try:
      data, _ = sf.read(tmp, frames=frames + 1, dtype="float32", always_2d=True)
      problem = None
      if data.shape != (frames, channels):
        problem = f"holds {data.shape[0]} x {data.shape[1]} frames, expected {frames} x {channels}"
    except (sf.LibsndfileError, RuntimeError, ValueError) as err:
      problem = f"does not decode ({err})"
    if problem is None:
      return
    if files.free_bytes(path) < need:
      raise files.disk_full(path) from None
    raise UserError(f"{one_line(tmp)}: the written file {problem}")

  return verify


def write_clip(path: str, audio: np.ndarray, job: RenderJob, model_rate: int) -> None:
  """Post-processes and writes one clip: under a temporary name, decoded back and checked
  frame by frame count, then renamed. A failed write leaves nothing behind."""
  x = postprocess(audio, job, model_rate)
  need = x.size * _SAMPLE_BYTES[job.sound_subtype]
  with atomic_path(path, _verify_audio(path, x.shape[0], x.shape[1], need)) as tmp:
    try:
      sf.write(
        tmp, x, job.sample_rate or model_rate, format=FORMATS[job.format], subtype=job.sound_subtype
      )
    except (AssertionError, RuntimeError) as err:
      # libsndfile reports a short write as an assertion or a generic error, not an OSError.
      if files.free_bytes(path) < need:
        raise files.disk_full(path) from None
      raise UserError(f"{one_line(path)}: cannot write ({err})") from None


def save_latents(path: str, synth: Synthesizer, plan: Plan, chunk: int = 65536) -> None:
  """Writes a plan's latents [count, latent] to `path` chunk by chunk (never all in memory)."""
  with atomic_path(path) as tmp:
    with open(tmp, "wb") as f:
      header = {
        "descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
        "fortran_order": False,
        "shape": (plan.count, plan.latent_dim),
      }
      np.lib.format.write_array_header_1_0(f, header)
      for start in range(0, plan.count, chunk):
        f.write(plan.latents(synth, start, min(plan.count, start + chunk)).tobytes())


def save_array(path: str, array: np.ndarray) -> None:
  """Writes float32 `array` as a .npy file, whole or not at all."""
  with atomic_path(path) as tmp:
    with open(tmp, "wb") as f:
      np.save(f, np.asarray(array, np.float32), allow_pickle=False)


def manifest_rows(synth: Synthesizer, plan: Plan, latents_path: str) -> Iterator[dict[str, Any]]:
  """One manifest row per clip of a plan."""
  j = plan.job
  for i in range(plan.count):
    yield {
      "file": plan.file(synth, i),
      "job": j.name,
      "style": plan.style_label(synth, i),
      "seed": j.seed if j.latent == "random" else "",
      "latent_index": i,
      "latents": latents_path,
      "latent_row": i,
      "batch_size": synth.batch_size,
      "format": j.format,
      "subtype": j.sound_subtype,
      "sample_rate": j.sample_rate,
      "normalize": j.normalize,
      "peak_db": j.peak_db,
      "loudness_lufs": j.loudness_lufs,
      "fade_out_ms": j.fade_out_ms,
    }


def read_manifest(out: str) -> dict[str, dict[str, Any]]:
  """OUT/manifest.json's rows by file ({} when there is none or it cannot be read)."""
  try:
    with open(os.path.join(out, "manifest.json")) as f:
      return {r["file"]: r for r in json.load(f)}
  except (OSError, ValueError, KeyError, TypeError):
    return {}  # none yet, or unreadable: rebuilt from this render's rows


def check_unchanged(
  synth: Synthesizer,
  plan: Plan,
  todo: np.ndarray,
  out: str,
  recorded: dict[str, dict[str, Any]],
  chunk: int = 65536,
) -> None:
  """Refuses to resume a job whose existing files were rendered from another job: the manifest
  and the latents file must go on describing the files on disk.

  The clips that exist (those not in `todo`) must have the manifest rows and the latents that
  the job gives now; files the manifest does not list yet (a render killed before it wrote
  the manifest) are checked by their latents alone.

  Raises:
    JobError: naming the job, a file and what changed.
  """
  exists = np.ones(plan.count, bool)
  exists[todo] = False
  if not exists.any():
    return
  name = plan.job.name
  advice = "pass --overwrite to render the job again, or choose another output folder"
  for i, row in enumerate(manifest_rows(synth, plan, f"latents/{name}.npy")):
    old = recorded.get(row["file"]) if exists[i] else None
    changed = [
      k
      for k in MANIFEST_FIELDS
      if old is not None and k in old and k != "batch_size" and old[k] != row[k]
    ]
    if changed:
      k = changed[0]
      raise JobError(
        f"job {name!r}: {one_line(row['file'])} exists but was rendered with "
        f"{k} = {old.get(k)!r}, the job now gives {row[k]!r}; {advice}"
      )
  path = os.path.join(out, "latents", f"{name}.npy")
  try:
    saved = np.load(path, mmap_mode="r")
  except (OSError, ValueError):
    return  # no latents were kept: nothing to compare
  if saved.ndim != 2 or saved.shape[1] != plan.latent_dim or saved.shape[0] < plan.count:
    raise JobError(
      f"job {name!r}: its files exist but {path} holds latents of shape {saved.shape}; {advice}"
    )
  for lo in range(0, plan.count, chunk):  # a chunk of latents in memory at a time
    hi = min(plan.count, lo + chunk)
    ids = np.flatnonzero(exists[lo:hi])
    if ids.size and not np.array_equal(
      np.asarray(saved[lo + ids]), plan.latents(synth, lo, hi)[ids]
    ):
      raise JobError(
        f"job {name!r}: its files exist but were rendered from other latents "
        f"(its seed, seeds, interpolation or latent file changed); {advice}"
      )


def write_manifest(out: str, rows: Iterable[dict[str, Any]]) -> None:
  """Merges rows into OUT/manifest.{csv,json} (rows of other files are kept), atomically, and
  writes OUT/index.html (`pages.index_pages`: a player per clip) from the merged rows."""
  path_json = os.path.join(out, "manifest.json")
  merged = read_manifest(out)
  merged.update({r["file"]: r for r in rows})
  ordered = [merged[k] for k in sorted(merged)]
  files.write_json(path_json, ordered)
  text = io.StringIO(newline="")
  w = csv.DictWriter(text, fieldnames=MANIFEST_FIELDS)
  w.writeheader()
  w.writerows(ordered)
  files.write_text(os.path.join(out, "manifest.csv"), text.getvalue())
  title = f"{os.path.basename(os.path.normpath(os.path.abspath(out)))}: rendered clips"
  pages.write_index_pages(out, ordered, title)


@dataclasses.dataclass(frozen=True)
class RenderReport:
  """What a render did: clips written, clips skipped because their file existed."""

  written: int
  skipped: int
  seconds: float


def render(
  synth: Synthesizer,
  jobs: list[RenderJob],
  out: str,
  *,
  overwrite: bool = False,
  progress: bool = False,
  writers: int = 2,
  on_plan: Callable[[list[Plan]], None] | None = None,
) -> RenderReport:
  """Renders every job into `out`: audio files, `latents/<job>.npy` and the manifest.

  All jobs are resolved against the model first (styles, latent files, file names) and the
  output's size is checked against the free space, so an error in the last job, or a disk too
  small, stops the render before any audio is made. Memory does not grow with the clip count:
  latents are written and read back in chunks and audio is made a batch at a time.

  Ctrl-C (KeyboardInterrupt) or a full disk stops the render within one batch: the files being
  written are finished or removed, the manifest lists every file that exists, and the
  exception is raised again (with what was written, for an interrupt).

  Args:
    synth: the generator.
    jobs: validated jobs (`read_jobs`).
    out: output folder.
    overwrite: replace existing files (default: skip them, which also resumes a killed render).
    progress: show a progress bar with clips/s.
    writers: background threads post-processing and writing files.
    on_plan: called with the resolved plans before rendering (the CLI checks for existing files).

  Returns:
    Counts of written and skipped clips and the wall time.
  """
  t0 = time.perf_counter()
  if os.path.exists(out) and not os.path.isdir(out):
    raise JobError(f"{one_line(out)} is a file; the output must be a folder")
  plans = [plan_job(synth, job, i + 1) for i, job in enumerate(jobs)]
  clips = sum(p.count for p in plans)
  if clips > ENUMERATE_LIMIT:  # too many to look for each file first: size them all
    files.check_free_space(
      out,
      render_bytes(synth, plans, [np.arange(0)] * len(plans))
      + sum(p.count * clip_bytes(p.job, synth.model, synth.sample_rate) for p in plans),
      f"rendering {clips} clips",
    )
  todo = [
    np.array(
      [
        i
        for i in range(p.count)
        if overwrite or not os.path.exists(os.path.join(out, p.file(synth, i)))
      ],
      dtype=np.int64,
    )
    for p in plans
  ]
  files.check_free_space(
    out, render_bytes(synth, plans, todo), f"rendering {sum(idx.size for idx in todo)} clips"
  )
  check_plans(synth, plans)
  if on_plan is not None:
    on_plan(plans)
  recorded = read_manifest(out)
  for plan, idx in zip(plans, todo):
    check_unchanged(synth, plan, idx, out, recorded)
  for plan in plans:
    save_latents(os.path.join(out, "latents", f"{plan.job.name}.npy"), synth, plan)
  total = sum(idx.size for idx in todo)
  skipped = sum(p.count for p in plans) - total
  bar = None
  if progress:
    from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top

    bar = tqdm(total=total, unit="clip", desc="rendering", dynamic_ncols=True)
  written = 0
  try:
    written = _render_clips(synth, plans, todo, out, writers, bar)
  except KeyboardInterrupt:
    done = _finish(synth, plans, out, todo, recorded)
    raise KeyboardInterrupt(
      f"rendering stopped; {done} clips are in {one_line(out)}, all listed "
      "in its manifest; run the same command to render the rest"
    ) from None
  except files.DiskFullError:
    _finish(synth, plans, out, todo, recorded)
    raise
  finally:
    if bar is not None:
      bar.close()
  _finish(synth, plans, out, todo, recorded)
  return RenderReport(written, skipped, time.perf_counter() - t0)


def _render_clips(
  synth: Synthesizer, plans: list[Plan], todo: list[np.ndarray], out: str, writers: int, bar: Any
) -> int:
  """Generates the missing clips batch by batch while threads write the previous ones."""
  written = 0
  pool = concurrent.futures.ThreadPoolExecutor(max(1, writers))
  pending: list[concurrent.futures.Future] = []
  try:
    for plan, idx in zip(plans, todo):
      rows = np.load(os.path.join(out, "latents", f"{plan.job.name}.npy"), mmap_mode="r")
      for lo in range(0, idx.size, synth.batch_size):
        ids = idx[lo : lo + synth.batch_size]
        z = np.asarray(rows[ids], np.float32)
        weights = synth.style_weights(plan.job.style, ids.size, ids=ids)
        for _, audio in synth.batches(z, weights):
          # Bounded: at most a few batches wait for the writers, whatever the job size.
          while len(pending) > 4 * max(1, writers):
            pending.pop(0).result()
          for k in range(audio.shape[0]):
            i = int(ids[k])
            f = pool.submit(
              write_clip,
              os.path.join(out, plan.file(synth, i)),
              audio[k],
              plan.job,
              synth.sample_rate,
            )
            if bar is not None:
              f.add_done_callback(lambda _: bar.update(1))
            pending.append(f)
            written += 1
    for f in pending:
      f.result()
  except KeyboardInterrupt:
    pool.shutdown(wait=True)  # Ctrl-C: the clips already generated are still written
    raise
  finally:
    # On an error: clips not started are dropped, clips being written are finished (or removed
    # by their own failure), so no temporary outlives the render.
    pool.shutdown(wait=True, cancel_futures=True)
  return written


def _finish(
  synth: Synthesizer,
  plans: list[Plan],
  out: str,
  todo: list[np.ndarray],
  recorded: dict[str, dict[str, Any]],
) -> int:
  """Writes the manifest for every clip of the plans whose file exists; returns their count.

  Files this render skipped keep the row they were written with (e.g. their batch size)."""
  rows = []
  for plan, idx in zip(plans, todo):
    made = np.zeros(plan.count, bool)
    made[idx] = True
    for i, row in enumerate(manifest_rows(synth, plan, f"latents/{plan.job.name}.npy")):
      if os.path.exists(os.path.join(out, row["file"])):
        rows.append(row if made[i] else {**row, **recorded.get(row["file"], {})})
  try:
    write_manifest(out, rows)
  except files.DiskFullError:
    pass  # the previous manifest is intact; the clips it lacks are found again on a re-run
  return len(rows)


def rerender(
  synth: Synthesizer, row: Mapping[str, Any], out_dir: str, path: str | None = None
) -> str:
  """Re-renders one clip from its manifest row (as read from manifest.json or .csv).

  Args:
    synth: the model the manifest was rendered with.
    row: the clip's manifest row.
    out_dir: the render's output folder (latent paths in the manifest are relative to it).
    path: where to write the clip (default: `out_dir/row["file"]`, which must not exist).

  Returns:
    The path written.
  """
  try:
    rows = np.load(os.path.join(out_dir, row["latents"]), mmap_mode="r", allow_pickle=False)
    z = np.asarray(rows[int(row["latent_row"])], np.float32)
    label = row["style"]
    style = None if not label else json.loads(label) if label.startswith("{") else label
    subtype = {v: s for (f, s), v in SUBTYPES.items() if f == row["format"]}[row["subtype"]]
    job = parse_job(
      {
        "name": row["job"],
        "count": 1,
        "format": row["format"],
        "subtype": subtype,
        "sample_rate": int(row["sample_rate"]),
        "normalize": row["normalize"],
        "peak_db": float(row["peak_db"]),
        "loudness_lufs": float(row["loudness_lufs"]),
        "fade_out_ms": float(row["fade_out_ms"]),
      },
      1,
    )
  except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError) as err:
    raise JobError(
      f"manifest row for {one_line(str(row.get('file', '?')))}: cannot be "
      f"re-rendered ({one_line(repr(err))})"
    ) from None
  rendered_at = int(row.get("batch_size") or 0)  # 0: a manifest from before the field
  if rendered_at and rendered_at != synth.batch_size:
    # XLA's CPU kernels choose their summation order by shape: another batch size changes the
    # last bits of the audio.
    raise ConfigError(
      f"{one_line(row['file'])} was rendered at batch size {rendered_at}; load "
      f"the model with batch_size={rendered_at} to re-render it bit for bit"
    )
  audio = synth.from_latents(z[None], style)[0]
  target = path or os.path.join(out_dir, row["file"])
  if path is None and os.path.exists(target):
    raise ConfigError(f"{target} exists; pass another path")
  write_clip(target, audio, job, synth.sample_rate)
  return target
