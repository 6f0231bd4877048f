"""What a model must know to write a unit, stated once and generated from the code that enforces
it: the unit contract, the lint's rules (`gab.codeunits.lint_rules`), the Z entries the LM gives,
the helpers of `gab.units`, one complete worked example, the checks with the run's numbers, and the
source of any kind (built-in kinds' classes included)."""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
from typing import Any

import numpy as np

from gab import codeunits, registry

CONTRACT = '''The unit contract (every unit, built-in or code):
- `__call__(self, x, z)` returns the pair `(y, z)`. x is [batch, length, d_model] in the compute
  dtype (float32, or bfloat16 in some runs); y must have exactly x's shape and dtype. z is a dict of
  side arrays threaded through the units of a block and across blocks.
- d_model is `x.shape[-1]` (the same tree runs at several widths); length and batch vary between
  calls, so no parameter shape may depend on them.
- Causal: y at position t may depend only on x at positions <= t of the same sequence (never on
  later positions, never on other sequences of the batch).
- Parameters are float32 (`self.param(name, init, shape, jnp.float32)` or `self.dense`, whose
  parameters are float32); cast them to x.dtype where they meet x. Give every parameter a name
  unique within the unit.
- z: read only the entries the kind declares in `reads`, write only those in `writes`, and never
  change the dict you were given: write with `z = {**z, "name": value}` and return that.
- A unit with children (slots) calls child i as `y, z = self.child(i)(h, z)`; `len(self.unit.children)`
  is how many it has; the children's order is the order of the slots, then within a slot.
- Helpers on every unit: `self.hp("name")` (a hyperparameter from KIND params), `self.dense(features,
  name, out=False, use_bias=False)` (a float32 projection computing in the compute dtype; `out=True`
  for a projection back into the residual stream, initialised smaller), `self.dtype` (the compute
  dtype), `self.layer` / `self.n_layers` (this block's index, the number of blocks).
- The language model is token embedding -> n_blocks x block -> RMSNorm -> tied head; a block (the
  tree's root) supplies its own normalisation and residual connections.'''

FORMAT = '''A code unit is one Python module:
- a module docstring (the unit's documentation: what it computes);
- imports (see the rules);
- `KIND = dict(name=..., role=..., params=..., slots=..., reads=..., writes=...)`, a literal read
  without running the code: `name` the unit's name, `role` one of sequence_mixer, channel_mixer,
  norm, block; `params` {name: {"default": v, "domain": [v, ...]}} (the default in the domain);
  `slots` [{"name": str, "roles": [roles], "min_count": int, "max_count": int}] for children
  ([] for a leaf); `reads` / `writes` lists of z entry names;
- exactly one class deriving from `UnitModule` (from gab.units.base), with `@nn.compact` `__call__`.'''

WORKED_EXAMPLE = '''"""GatedConv: a causal depthwise convolution, gated by a projection of the input.

y = out(conv(x) * sigmoid(gate(x))), where conv is depthwise over time and padded on the left, so
position t sees positions t - kernel_size + 1 .. t only.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from gab.units.base import UnitModule
from gab.units.conv import causal_depthwise_conv

KIND = dict(
    name="GatedConv",
    role="sequence_mixer",
    params={"kernel_size": {"default": 4, "domain": [2, 4, 8]}},
    slots=[],
    reads=[],
    writes=[],
)


class GatedConv(UnitModule):
  @nn.compact
  def __call__(self, x, z):
    d = x.shape[-1]
    k = self.hp("kernel_size")
    kernel_KxD = self.param("kernel", nn.initializers.normal(stddev=0.3), (k, d), jnp.float32)
    mixed_BxLxD = causal_depthwise_conv(x, kernel_KxD)
    gate_BxLxD = jax.nn.sigmoid(self.dense(d, "gate")(x))
    return self.dense(d, "out", out=True)(mixed_BxLxD * gate_BxLxD), z
'''

CHILDREN_SNIPPET = '''A block with children, e.g. pre-norm residual steps over its children:
```python
KIND = dict(name="TwoStep", role="block", params={},
            slots=[{"name": "mixer", "roles": ["sequence_mixer"], "min_count": 1, "max_count": 1},
                   {"name": "ffn", "roles": ["channel_mixer"], "min_count": 1, "max_count": 1}],
            reads=[], writes=[])


class TwoStep(UnitModule):
  @nn.compact
  def __call__(self, x, z):
    for i in range(len(self.unit.children)):
      y, z = self.child(i)(nn.RMSNorm(dtype=self.dtype, name=f"norm{i}")(x), z)
      x = x + y
    return x, z
```'''

# The helpers of gab.units a unit may well call (their signatures and docs are read from the code).
HELPERS = ("conv.causal_depthwise_conv", "norm.rms_norm", "layernorm.layer_norm", "attention.rotary",
           "attention_impl.dot_product_attention", "linear_attention.chunked_linear_attention",
           "mamba2_core.ssd_chunked", "retnet_core.retention_chunked", "rwkv6.token_shift",
           "rwkv6_core.wkv_chunked", "mlp.hidden_size")


@functools.lru_cache(maxsize=1)
def helpers() -> str:
  """One line per helper: `from gab.units.M import f`, its signature and the first line of its doc."""
  lines = []
  for name in HELPERS:
    module, fname = name.split(".")
    fn = getattr(importlib.import_module(f"gab.units.{module}"), fname)
    sig = inspect.signature(fn).replace(return_annotation=inspect.Signature.empty)
    doc = (inspect.getdoc(fn) or "").split("\n")[0]
    lines.append(f"- from gab.units.{module} import {fname}: {fname}{sig}" + (f": {doc}" if doc else ""))
  return "\n".join(lines)


def lm_entries() -> str:
  """The z entries the LM gives every block, with their shapes and dtypes."""
  from gab.model import initial_z  # pylint: disable=g-import-not-at-top
  z = initial_z(np.zeros((2, 5), np.int32))
  return ", ".join(f"z[{k!r}] ({v.dtype}, [batch, length])" for k, v in sorted(z.items()))


@functools.lru_cache(maxsize=1)
def rules() -> str:
  return "\n".join(f"- {r}" for r in codeunits.lint_rules())


def system_text() -> str:
  """The contract, format, rules, z entries, helpers and the worked example: the shared part of
  every role's system instruction."""
  return (f"{CONTRACT}\n\nz entries the language model provides to every block: {lm_entries()}.\n\n"
          f"{FORMAT}\n\nThe rules every code unit is held to (a lint checks them before anything runs):\n"
          f"{rules()}\n\nHelper functions a unit may import:\n{helpers()}\n\nA complete code unit "
          f"(a real one: it passes every check):\n```python\n{WORKED_EXAMPLE}```\n\n{CHILDREN_SNIPPET}")


def checks_text(checker_cfg: dict[str, Any], rung: dict[str, Any]) -> str:
  """The checks a design must pass, in order, with this run's numbers."""
  c, r = checker_cfg, rung
  dtype = r.get("dtype") or c.get("dtype", "float32")
  dtypes = "float32" if dtype == "float32" else f"float32 and {dtype}"
  target = r.get("target_params") or "the GPT seed's size"
  tol = float(c.get("size_tolerance", 0.2))
  return "\n".join([
      "The checker runs these checks in order and stops at the first failure:",
      "1. format: kinds, children's roles and hyperparameter domains; every z entry a unit reads is "
      "written before it.",
      f"2. init: parameters initialise, float32 and finite (check scale: d_model {c['d_model']}, "
      f"{c['n_blocks']} blocks, batch {c['batch']}, length {c['seq_len']}).",
      f"3. forward: each unit returns its input's shape and dtype, calls every child it declares "
      f"and uses only its declared z entries; logits finite in {dtypes}; the logits depend on the tokens; every leaf "
      f"sequence mixer mixes positions (relative sensitivity >= {c['min_mixing']:g}).",
      f"4. causality: exactly zero dependence of any output at positions <= t on tokens after t, "
      f"and none across the sequences of a batch, at several lengths (up to beyond the context "
      f"{r.get('seq_len')}) and batch sizes, in {dtypes}.",
      f"5. differentiability: every parameter gets a finite gradient that becomes nonzero within "
      f"{c['train_steps']} training steps.",
      f"6. stability: loss and gradients finite at the context length {r.get('seq_len')}, also "
      f"with the token embeddings multiplied by {c['large_input_scale']:g}.",
      f"7. parameter_budget: the language model is sized to {target} parameters +-{tol:.0%} by "
      f"choosing d_model <= {r.get('d_model')} (multiples of {c['d_model_multiple']}) and the "
      f"number of blocks (rung: {r.get('n_blocks')}).",
      f"8. efficiency: train-step FLOPs at most {c['flops_fail_ratio']:g}x and memory at most "
      f"{c['memory_fail_ratio']:g}x the GPT seed's at batch {r.get('batch_size')}, length "
      f"{r.get('seq_len')}.",
      f"9. effectiveness: {c['train_steps']} training steps at learning rate {c['train_lr']:g} "
      f"lower the loss.",
      f"Each check must finish within {c['timeout_s']:g} s."])


def source(kind: str, sources: dict[str, str]) -> str | None:
  """The code of a kind: a code unit's source, or a built-in kind's class under the imports it
  needs (its module's imports, and the names it uses from its own module)."""
  if kind in sources:
    return sources[kind]
  if codeunits.is_code_kind(kind):
    return None
  try:
    cls = registry.get(kind).module
    text = inspect.getsource(cls)
    module = inspect.getmodule(cls)
    tree = ast.parse(inspect.getsource(module))
  except Exception:  # pylint: disable=broad-except  (an unknown kind, or no source file)
    return None
  module_text = inspect.getsource(module)
  used = {n.id for n in ast.walk(ast.parse(text)) if isinstance(n, ast.Name)}
  defs: dict[str, ast.AST] = {}
  for n in tree.body:
    if isinstance(n, (ast.FunctionDef, ast.ClassDef)):
      defs[n.name] = n
    elif isinstance(n, ast.Assign):
      defs.update({t.id: n for t in n.targets if isinstance(t, ast.Name)})
  lines = [ast.get_source_segment(module_text, n) for n in tree.body
           if isinstance(n, (ast.Import, ast.ImportFrom)) and not _is_registry_import(n)]
  public = sorted(name for name in used if name in defs and not name.startswith("_"))
  if public:
    lines.append(f"from {module.__name__} import {', '.join(public)}")
  private = [ast.get_source_segment(module_text, defs[name]) for name in sorted(used)
             if name in defs and name.startswith("_")]   # not importable by a code unit: shown
  return "\n".join(lines) + "\n\n" + "".join(f"{p}\n\n" for p in private) + "\n" + text


def _is_registry_import(node: ast.AST) -> bool:
  """`from gab import registry`, `from gab.specs import KindSpec` and the like: how built-in kinds
  register, not what they compute (and imports a code unit may not make)."""
  names = [a.name for a in node.names]
  return ((getattr(node, "module", "") or "").startswith(("gab.registry", "gab.tree", "gab.specs",
                                                          "__future__"))
          or "registry" in names or "specs" in names)
