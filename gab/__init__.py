"""The design language: unit trees, the registry of unit kinds, compilation and the checker.

The tree's names (`gab.Unit`, ...) load on first use, so that a module of the package that needs
no JAX (`gab.fields`, the config records the data pipeline reads) is imported without it.
"""

_TREE_NAMES = ("DesignError", "Unit", "design_from_json", "design_to_json", "load_design")


def __getattr__(name: str):
  if name in _TREE_NAMES:
    from gab import tree  # pylint: disable=g-import-not-at-top
    return getattr(tree, name)
  raise AttributeError(f"module 'gab' has no attribute {name!r}")
