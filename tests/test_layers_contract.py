"""The import graph: no cycles, and the import-linter contracts cover every wavegan module.

`lint-imports` (run by `make test`) checks the contracts in pyproject.toml; these tests check what
the contracts cannot say: that no modules import each other in a circle, and that a new wavegan
module cannot slip past the contracts by being left out of them.
"""

import pathlib
import sys

import grimp
from conftest import strong_components

if sys.version_info >= (3, 11):
  import tomllib
else:
  import tomli as tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("wavegan", "data_pipelines", "checkpoints")
BASE_MODULES = {"wavegan.errors", "wavegan.files"}  # what data_pipelines and checkpoints may import


def _graph() -> grimp.ImportGraph:
  """Every import among our packages: module top and lazy (inside functions) alike."""
  return grimp.build_graph(*PACKAGES, cache_dir=None)


def _contracts() -> dict[str, dict]:
  with open(ROOT / "pyproject.toml", "rb") as f:
    config = tomllib.load(f)["tool"]["importlinter"]
  return {c["id"]: c for c in config["contracts"]}


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
  """The strongly connected components of more than one module, each sorted.

  Args:
    graph: an import graph.

  Returns:
    Groups of modules that import each other in a circle, directly or through one another.
  """
  modules = sorted(graph.modules)
  edges = {m: graph.find_modules_directly_imported_by(m) for m in modules}
  return strong_components(modules, edges)


def _describe(graph: grimp.ImportGraph, group: list[str]) -> str:
  """One circle through `group`, as 'a -> b -> a'."""
  first = group[0]
  back = next(n for n in sorted(graph.find_modules_directly_imported_by(first)) if n in group)
  chain = graph.find_shortest_chain(importer=back, imported=first) or (back, first)
  return " -> ".join((first, *chain))


def test_cycle_finder_finds_a_circle():
  graph = grimp.ImportGraph()
  for importer, imported in (("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d")):
    graph.add_import(importer=importer, imported=imported)
  (group,) = _cycles(graph)
  assert group == ["p.a", "p.b", "p.c"]
  assert _describe(graph, group) == "p.a -> p.b -> p.c -> p.a"


def test_no_import_cycles():
  graph = _graph()
  circles = [_describe(graph, group) for group in _cycles(graph)]
  assert not circles, "modules that import each other:\n  " + "\n  ".join(circles)


def _layer_modules(contract: dict) -> set[str]:
  return {m.strip() for layer in contract["layers"] for m in layer.split("|")}


def test_every_wavegan_module_has_a_layer():
  graph = _graph()
  layered = _layer_modules(_contracts()["layers"])
  assert graph.find_children("wavegan") <= layered, "add the new module to a layer"
  assert {"data_pipelines", "checkpoints"} <= layered
  assert layered <= graph.modules, "a layer names a module that does not exist"


def test_packages_below_wavegan_may_import_only_errors_and_files():
  forbidden = set(_contracts()["below-wavegan"]["forbidden_modules"])
  assert forbidden == _graph().find_children("wavegan") - BASE_MODULES
