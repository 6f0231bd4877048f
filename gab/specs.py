"""Unit kinds as declarations: their roles, child slots and hyperparameters, and the table of the
kinds registered so far.

The lowest layer of the registry: the unit modules (gab/units/) and code units (gab/codeunits.py)
register their kinds here, and nothing here imports them. `gab.registry` is the registry's API for
everyone else: importing it registers the built-in kinds first.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from gab.tree import DesignError, Scalar, Unit

# Roles: what a unit does to the [batch, length, d_model] stream.
MIXER = "sequence_mixer"    # mixes information across positions (causally)
CHANNEL = "channel_mixer"   # position-wise transformation of features
NORM = "norm"               # position-wise normalisation
BLOCK = "block"             # a combinator of other units
ROLES = (MIXER, CHANNEL, NORM, BLOCK)


@dataclasses.dataclass(frozen=True)
class Slot:
  """A child slot: the roles it accepts and how many children it holds."""
  name: str
  roles: tuple[str, ...] = ROLES
  min_count: int = 1
  max_count: int = 1

  @property
  def variadic(self) -> bool:
    return self.max_count != 1


@dataclasses.dataclass(frozen=True)
class Param:
  """A hyperparameter: its default and the finite domain mutation picks from."""
  name: str
  default: Scalar
  domain: tuple[Scalar, ...]


@dataclasses.dataclass(frozen=True)
class KindSpec:
  name: str
  role: str
  module: Callable[..., Any]          # a flax.linen Module class taking (unit, layer, n_layers, dtype)
  slots: tuple[Slot, ...] = ()
  params: tuple[Param, ...] = ()
  reads: tuple[str, ...] = ()         # Z entries read
  writes: tuple[str, ...] = ()        # Z entries written
  doc: str = ""

  def param(self, name: str) -> Param:
    for p in self.params:
      if p.name == name:
        return p
    raise KeyError(name)

  @property
  def is_leaf(self) -> bool:
    return not self.slots


_REGISTRY: dict[str, KindSpec] = {}


def register(spec: KindSpec) -> KindSpec:
  if spec.role not in ROLES:
    raise ValueError(f"kind {spec.name}: role {spec.role!r} not in {ROLES}")
  if sum(s.variadic for s in spec.slots) and len(spec.slots) != 1:
    raise ValueError(f"kind {spec.name}: a variadic slot must be the kind's only slot")
  for p in spec.params:
    if p.default not in p.domain:
      raise ValueError(f"kind {spec.name}: default of {p.name} not in its domain")
  _REGISTRY[spec.name] = spec
  return spec


def unregister(name: str) -> None:
  """Forget a kind (code units a test or a sandbox registered); built-in kinds stay registered."""
  _REGISTRY.pop(name, None)


def spec(kind: str) -> KindSpec:
  """The registered kind `kind` (a DesignError naming the known ones if it is not)."""
  try:
    return _REGISTRY[kind]
  except KeyError:
    raise DesignError(f"unknown unit kind {kind!r}; known kinds: {', '.join(sorted(_REGISTRY))}") from None


def normalize(tree: Unit) -> Unit:
  """Fill omitted hyperparameters with their defaults, so equal designs hash equally."""
  params = {p.name: p.default for p in spec(tree.kind).params}
  params.update(tree.hparams)
  return Unit.make(tree.kind, [normalize(c) for c in tree.children], **params)


def hparam(unit: Unit, name: str) -> Scalar:
  """A unit's hyperparameter, or the kind's default."""
  value = unit.get_param(name)
  return spec(unit.kind).param(name).default if value is None else value
