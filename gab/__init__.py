"""The design language: unit trees, the registry of unit kinds, compilation and the checker."""

from gab.tree import DesignError, Unit, design_from_json, design_to_json, load_design  # noqa: F401
