"""Skip reasons and one-line summaries of what a load or a prepare used and skipped."""

from __future__ import annotations


def reason_kind(reason: str) -> str:
  """A skip reason's category for summaries, e.g. 'cannot decode (...)' -> 'unreadable'.

  Truncated files and permission problems are kinds of their own: each has its own remedy (copy
  the file again; fix its permissions), which a plain "unreadable" would hide.
  """
  for prefix, kind in (
    ("truncated", "truncated"),
    ("permission denied", "permission denied"),
    ("cannot decode", "unreadable"),
    ("cannot read", "unreadable"),
    ("no such file", "unreadable"),
    ("is a folder", "unreadable"),
    ("a part of the path", "unreadable"),
    ("empty", "empty"),
    ("shorter than", "too short"),
    ("longer than", "too long"),
    ("contains NaN", "NaN/Inf"),
    ("silent", "silent"),
    ("cannot make", "too few channels"),
    ("not in the manifest", "not in the manifest"),
    ("no '", "unlabelled in the manifest"),
  ):
    if reason.startswith(prefix):
      return kind
  return "other"


def summarize(files_used: int, clips: int, skipped: tuple[tuple[str, str], ...]) -> str:
  """One line on what was used and skipped: '2031 files used (2031 clips), 5 skipped: 3 unreadable, 2 too short'."""
  line = f"{files_used} files used ({clips} clips), {len(skipped)} skipped"
  if not skipped:
    return line
  counts: dict[str, int] = {}
  for _, reason in skipped:
    kind = reason_kind(reason)
    counts[kind] = counts.get(kind, 0) + 1
  return (
    line
    + ": "
    + ", ".join(f"{n} {k}" for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
  )
