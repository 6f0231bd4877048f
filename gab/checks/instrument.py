"""The tracing side of the checks: the functions `gab.programs.export` traces, and what it saw.

This module runs where the design's code runs (the sandbox, for code units): it only builds
functions for `jax.export` and writes down `facts` (JSON): which unit produced each array a probed
program returns, contract violations, errors. The checks read the facts to name units; every
number they judge is computed by the exported programs in the checking process.

  init      the LM's init under `Probe` (contract violations, errors tagged with the unit)
  probed    the block stack returning every unit's output and written Z entry, and the final Z
  dataflow  the block stack with perturbations added where `zflow` and `mixing` need them: to the
            input of every tested sequence mixer (`mixing.is_tested`) and to every float Z entry a
            leaf unit is given but does not declare reading; it returns those units' outputs (and
            written Z entries), and every unit call's input and output (`mixing.dependence`)
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gab import registry
from gab.checks.probe import Location, Probe, by_unit, error_text, hint_for, locate, written
from gab.model import LM
from gab.tree import Unit
from gab.units.base import UnitModule


def where_json(where: Location | None) -> dict | None:
  return None if where is None else {"kind": where.kind, "path": list(where.path), "block": where.block}


def where_from(d: dict | None) -> Location | None:
  return None if d is None else Location(d["kind"], tuple(d["path"]), d["block"])


def _float(v) -> bool:
  return hasattr(v, "dtype") and jnp.issubdtype(v.dtype, jnp.inexact)


def is_tested_mixer(spec) -> bool:
  """Leaf sequence mixers, except those that write Z (they may mix into what they write) or read
  Z entries other than the LM's (they may get mixed values from there)."""
  from gab.checks.zrule import lm_provided  # pylint: disable=g-import-not-at-top
  return (spec.role == registry.MIXER and spec.is_leaf and not spec.writes
          and set(spec.reads) <= set(lm_provided()))


class Instrument:
  """Builds the traced functions of one design and collects the facts of every trace."""

  def __init__(self, tree: Unit):
    self.tree = tree
    self._facts: dict[str, Any] = {"recorded": {}, "errors": {}, "hints": {}, "dataflow": {}}
    self._violations: list[tuple[Location, str]] = []

  @property
  def facts(self) -> dict[str, Any]:
    """Everything the traces so far saw; "violations": one line per unit and contract broken."""
    lines = by_unit([(w, f" {t}") for w, t in dict.fromkeys(self._violations)])
    return {**self._facts, "violations": lines}

  def _probe(self, record=None) -> Probe:
    probe = Probe(self.tree, record)
    probe.violations = self._violations  # one list for every trace
    return probe

  def error(self, key: str, e: BaseException) -> None:
    self._facts["errors"][key] = error_text(e)
    hint = hint_for(e, "")
    if hint:  # what to repair, by what went wrong (a wrong return, a length-sized parameter, ...)
      self._facts["hints"][key] = hint

  def init(self, model: LM, tokens_BxL):
    def fn(key_data):
      probe = self._probe()
      with probe:
        params = model.init(jax.random.wrap_key_data(key_data), tokens_BxL)
      self._violations.extend(probe.uncalled())  # init runs every unit the design has
      return params
    return fn

  def probed(self, model: LM, key: str):
    def fn(params, x_BxLxD):
      recorded, values = [], []

      def add(where, entry, looked, v):
        if _float(v):
          recorded.append({"where": where_json(where), "key": entry, "looked_up": sorted(looked)})
          values.append(v)

      def record(where, x, y, z_in, z_out):
        add(where, None, z_in.looked_up, y)
        for k in written(z_in, z_out):
          add(where, k, z_in.looked_up, z_out[k])

      with self._probe(record):
        h, z = model.apply(params, x_BxLxD, method=LM.stack)
      for k in sorted(z):
        add(None, k, (), z[k])
      self._facts["recorded"][key] = recorded
      return h, values
    return fn

  def dataflow(self, model: LM, key: str, params, x):
    """(fn, extra argument shapes): fn(params, x, d_mix, d_z) -> {"h", "mix", "z", "pairs"}."""
    calls: list[dict] = []

    def run(p, x_BxLxD, d_mix, d_z, out):
      counter = {"call": 0, "mix": 0, "z": 0}

      def intercept(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name != "__call__" or not isinstance(module, UnitModule) or len(args) < 2:
          return next_fun(*args, **kwargs)
        spec = registry.get(module.unit.kind)
        found = locate(module.scope.path, self.tree)
        where = found[0] if found else Location(module.unit.kind, ())
        x_in, z = args[0], dict(args[1])
        undeclared = sorted(k for k, v in z.items() if spec.is_leaf and k not in spec.reads and _float(v))
        tested = is_tested_mixer(spec)
        if d_mix is None:  # the discovery trace
          calls.append({"where": where_json(where), "tested": tested, "undeclared": undeclared,
                        "shapes": {k: list(z[k].shape) for k in undeclared}})
        if tested and d_mix is not None:
          x_in = x_in + d_mix[counter["mix"]].astype(x_in.dtype)
        if undeclared and d_z is not None:
          for k in undeclared:
            z[k] = z[k] + d_z[counter["z"]][k].astype(z[k].dtype)
        before = dict(z)
        y, z_out = next_fun(x_in, z, *args[2:], **kwargs)
        wrote = [v for k, v in sorted(z_out.items()) if _float(v) and before.get(k) is not v]
        out["pairs"].append([x_in, y])
        if tested:
          out["mix"].append(y)
          counter["mix"] += 1
        if undeclared:
          out["z"].append([y] + wrote)
          counter["z"] += 1
        counter["call"] += 1
        return y, z_out

      with nn.intercept_methods(intercept):  # no Probe: the perturbed Z entries would read as writes
        h, _ = model.apply(p, x_BxLxD, method=LM.stack)
      out["h"] = h
      return out

    jax.eval_shape(lambda p, x_: run(p, x_, None, None, {"pairs": [], "mix": [], "z": []}), params, x)
    n_mix = sum(c["tested"] for c in calls)
    b, length, d = x.shape
    d_mix = jax.ShapeDtypeStruct((n_mix, b, length, d), jnp.float32)
    d_z = [{k: jax.ShapeDtypeStruct(tuple(c["shapes"][k]), jnp.float32) for k in c["undeclared"]}
           for c in calls if c["undeclared"]]
    self._facts["dataflow"][key] = {
        "calls": [c["where"] for c in calls],
        "mixers": [c["where"] for c in calls if c["tested"]],
        "zcalls": [[c["where"], c["undeclared"]] for c in calls if c["undeclared"]]}

    def fn(p, x_BxLxD, dm, dz):
      return run(p, x_BxLxD, dm, dz, {"pairs": [], "mix": [], "z": []})
    return fn, (d_mix, d_z)
