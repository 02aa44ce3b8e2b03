"""Optional progress bars over files (tqdm is imported only when a bar is shown)."""

from __future__ import annotations

from collections.abc import Iterable


def progress_bar(items: Iterable, enabled: bool, desc: str, total: int | None = None) -> Iterable:
  """Wraps `items` in a tqdm bar when `enabled` (tqdm is only imported then).

  Args:
    items: what to iterate over (files, results).
    enabled: show a bar; otherwise `items` comes back as it is.
    desc: the bar's label.
    total: number of items, for iterables without `len()`.

  Returns:
    `items`, or a tqdm bar iterating over them.
  """
  if not enabled:
    return items
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top

  return tqdm(items, desc=desc, unit="file", total=total, dynamic_ncols=True)
