"""Shape of the code: lines per package, the longest functions, and import cycles between modules.

  python benchmarks/code_stats.py [ROOT]

Lines are physical lines of the .py files. A function's length runs from its `def` to its last line
(nested functions count within their parent and on their own). Cycles are strongly connected
components (scipy's csgraph) of the graph of module-level and function-level imports among the project's modules.
"""

from __future__ import annotations

import ast
import os
import sys

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

PACKAGES = ("wavegan", "data_pipelines", "checkpoints")


def modules(root: str) -> dict[str, str]:
  """Module name -> file path, for every .py file of the project's packages."""
  out = {}
  for pkg in PACKAGES:
    for folder, _, names in os.walk(os.path.join(root, pkg)):
      for name in names:
        if name.endswith(".py"):
          path = os.path.join(folder, name)
          mod = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
          out[mod.removesuffix(".__init__")] = path
  return out


def package_of(mod: str) -> str:
  parts = mod.split(".")
  return (
    ".".join(parts[:2]) if len(parts) > 2 or (len(parts) == 2 and is_pkg.get(mod)) else parts[0]
  )


is_pkg: dict[str, bool] = {}


def imports(mod: str, path: str, known: set[str]) -> set[str]:
  """Project modules that `mod` imports (anywhere in the file)."""
  tree = ast.parse(open(path, encoding="utf-8").read())
  found = set()
  for node in ast.walk(tree):
    names = []
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    for name in names:
      while name and name not in known:
        name = name.rpartition(".")[0]
      if name and name != mod:
        found.add(name)
  return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """Strongly connected components with more than one module (scipy's csgraph)."""
  nodes = sorted(graph)
  index = {n: i for i, n in enumerate(nodes)}
  pairs = [(index[a], index[b]) for a in nodes for b in graph[a]]
  rows, cols = zip(*pairs) if pairs else ((), ())
  adjacency = csr_matrix((np.ones(len(pairs)), (rows, cols)), shape=(len(nodes), len(nodes)))
  _, labels = connected_components(adjacency, directed=True, connection="strong")
  groups = [[n for n, label in zip(nodes, labels) if label == k] for k in set(labels)]
  return sorted(sorted(g) for g in groups if len(g) > 1)


def main(root: str = ".") -> None:
  mods = modules(root)
  for mod, path in mods.items():
    is_pkg[mod] = path.endswith("__init__.py")
  lines: dict[str, int] = {}
  funcs = []
  for mod, path in mods.items():
    text = open(path, encoding="utf-8").read()
    pkg = package_of(mod)
    lines[pkg] = lines.get(pkg, 0) + text.count("\n")
    for node in ast.walk(ast.parse(text)):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        funcs.append((node.end_lineno - node.lineno + 1, f"{mod}.{node.name}"))
  for name in ("tests", "benchmarks"):
    folder = os.path.join(root, name)
    if os.path.isdir(folder):
      lines[name] = sum(
        open(os.path.join(folder, f), encoding="utf-8").read().count("\n")
        for f in os.listdir(folder)
        if f.endswith(".py")
      )
  print("lines per package")
  for pkg, n in sorted(lines.items()):
    print(f"  {pkg:28s} {n:6d}")
  print("ten longest functions")
  for n, name in sorted(funcs, reverse=True)[:10]:
    print(f"  {n:4d}  {name}")
  graph = {m: imports(m, p, set(mods)) for m, p in mods.items()}
  found = cycles(graph)
  print(f"import cycles: {len(found)}")
  for comp in found:
    print("  " + " <-> ".join(comp))


if __name__ == "__main__":
  main(*sys.argv[1:])
