"""A design as exported programs: the form in which the checks and the trainer run a design.

A design's unit code runs only while it is traced. `export` traces the LM (`gab.model.LM`) at
concrete shapes and dtypes and lowers each program to StableHLO with `jax.export`; where a `Spec`
asks for a VJP, as two programs: the forward, also returning the residuals `jax.vjp` keeps, and
the backward from those residuals (so training costs what a jitted step costs: nothing is
recomputed). The kinds:

  init      raw key data -> the LM's parameters
  stack     (params, token embeddings [B, L, D]) -> the blocks' output [B, L, D] (before the final
            norm): the program that is trained
  probed    the same program traced under `gab.checks.probe.Probe`, also returning every unit's
            output and every Z entry a unit writes (children first), to name the unit that leaks
            or overflows (`gab.checks.instrument`)
  dataflow  probed, with perturbations added to the sequence mixers' inputs and to the Z entries a
            unit is given but does not declare (`gab.checks.zflow`, `gab.checks.mixing`)

The token embedding, the final norm and the tied head are outside the programs: `ExportedLM`
computes them around `stack`, so a check controls what goes in (embeddings perturbed or scaled)
and a loss what comes out.

What only the tracing can see comes back as `facts`: which unit produced each recorded array,
contract violations (wrong shapes, undeclared Z use), errors, the sizing search. Facts name
culprits and fail contracts; no verdict on what the program computes rests on them.

Built-in designs are exported in the process that checks them. Designs with code units are exported
in the sandbox, which saves the programs (`Programs.save`) for a trusted process that `load`s them:
loading refuses a program that can reach the host (side effects, infeed/outfeed/send/recv, a custom
call outside `ALLOWED_CUSTOM_CALLS`: host callbacks are custom calls), so what runs there is a pure
computation on the arrays it is given, with no Python of the design's in it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import export as jax_export
from jax._src.export._export import _CUSTOM_CALL_TARGETS_GUARANTEED_STABLE  # pylint: disable=g-importing-member

from gab import loss as loss_lib
from gab.model import LM, embed_tokens
from gab.tree import Unit
from gab.units.norm import rms_norm

KINDS = ("init", "stack", "probed", "dataflow")
# Pure compute kernels: jax's custom calls with compatibility guarantees (LAPACK/cuSOLVER kernels,
# sharding annotations, Pallas TPU kernels), less TensorFlow calls; plus cuDNN's fused attention.
ALLOWED_CUSTOM_CALLS = (frozenset(_CUSTOM_CALL_TARGETS_GUARANTEED_STABLE)
                        - {"tf.call_tf_function", "mosaic_gpu_v2"})
ALLOWED_PREFIXES = ("__cudnn$fmha",)
HOST_OPS = ("stablehlo.infeed", "stablehlo.outfeed", "stablehlo.send", "stablehlo.recv",
            "mhlo.infeed", "mhlo.outfeed", "mhlo.send", "mhlo.recv")


class ProgramError(RuntimeError):
  """A program is missing, malformed, or refused; the message says which and why, and `hint` (when
  the tracing knew one: `gab.checks.probe.hint_for`) how to repair the design."""

  def __init__(self, message: str, hint: str = ""):
    super().__init__(message)
    self.hint = hint


@dataclasses.dataclass(frozen=True)
class Spec:
  """One program to export: its kind, the LM's width and depth, compute dtype and input shape."""
  kind: str
  d_model: int
  n_blocks: int
  dtype: str = "float32"
  batch: int = 1
  length: int = 1
  vjp: bool = False

  @property
  def key(self) -> str:
    shape = f"{self.length}" if self.kind == "init" else f"{self.dtype}/{self.batch}x{self.length}"
    return f"{self.kind}@{self.d_model}x{self.n_blocks}/{shape}{'+vjp' if self.vjp else ''}"

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


@dataclasses.dataclass
class Programs:
  """Exported programs by `Spec.key`, and what the tracing saw (`facts`, JSON)."""
  exported: dict[str, Any]
  facts: dict[str, Any]
  fft: dict[str, bool] = dataclasses.field(default_factory=dict)  # has_fft, by key

  def get(self, spec: Spec):
    """The program of `spec`; ProgramError naming the tracing error (or the absence)."""
    if spec.key in self.exported:
      return self.exported[spec.key]
    error = self.facts.get("errors", {}).get(spec.key)
    raise ProgramError(error or f"no program {spec.key} was exported",
                       self.facts.get("hints", {}).get(spec.key, ""))

  def save(self, directory: str) -> None:
    """Serialized programs (with their VJPs) and the facts, as files in `directory`."""
    index = {}
    for i, (key, exp) in enumerate(sorted(self.exported.items())):
      name = f"{i}.bin"
      with open(os.path.join(directory, name), "wb") as f:
        f.write(exp.serialize())
      index[key] = name
    with open(os.path.join(directory, "facts.json"), "w") as f:
      json.dump({"programs": index, "facts": self.facts}, f, sort_keys=True)

  @classmethod
  def load(cls, directory: str) -> "Programs":
    """The programs saved in `directory`, each refused (ProgramError) if it can reach the host."""
    with open(os.path.join(directory, "facts.json")) as f:
      saved = json.load(f)
    exported = {}
    for key, name in saved["programs"].items():
      if not (isinstance(name, str) and name.endswith(".bin") and os.sep not in name):
        raise ProgramError(f"sandbox: malformed program index entry {name!r}")
      with open(os.path.join(directory, name), "rb") as f:
        try:
          exp = jax_export.deserialize(bytearray(f.read()))
        except Exception as e:  # noqa: BLE001 - bytes from the sandbox: anything may be wrong
          raise ProgramError(f"sandbox: program {key} could not be read: {type(e).__name__}") from None
      refuse_host_access(exp, key)
      exported[key] = exp
    return cls(exported, saved.get("facts", {}))


def refuse_host_access(exp, key: str) -> None:
  """ProgramError unless `exp` is a pure computation on its arguments."""
  from jax._src.interpreters import mlir  # pylint: disable=g-import-not-at-top
  from jax._src.lib.mlir import ir  # pylint: disable=g-import-not-at-top
  if exp.has_vjp():  # a VJP of jax.export's own: not one of ours (see _export_one)
    raise ProgramError(f"sandbox: program {key} carries an unexpected VJP: refused")
  for name, program in [(key, exp)]:
    if program.ordered_effects or program.unordered_effects:
      raise ProgramError(f"sandbox: program {name} has side effects "
                         f"{list(program.ordered_effects) + list(program.unordered_effects)}: refused")
    if jax.default_backend() not in program.platforms:
      raise ProgramError(f"sandbox: program {name} was lowered for {list(program.platforms)}, not "
                         f"{jax.default_backend()}")
    with mlir.make_ir_context():
      module = ir.Module.parse(program.mlir_module())
      bad = _host_access(module.operation, ir)
    if bad:
      raise ProgramError(f"sandbox: host access {bad} in program {name} refused")


def _host_access(op, ir) -> str | None:
  name = op.name
  if name in HOST_OPS:
    return name
  if name in ("stablehlo.custom_call", "mhlo.custom_call"):
    target = ir.StringAttr(op.attributes["call_target_name"]).value
    if target not in ALLOWED_CUSTOM_CALLS and not target.startswith(ALLOWED_PREFIXES):
      return f"custom_call {target}"
  for region in op.regions:
    for block in region:
      for inner in block:
        found = _host_access(inner.operation, ir)
        if found:
          return found
  return None


# -- tracing and exporting (where the design's code may run) ------------------------------------
def export(tree: Unit, vocab_size: int, specs, *, remat=False, attention: str = "auto",
           instrument=None) -> Programs:
  """Trace and export every program of `specs`; a program that fails to trace is in
  facts["errors"] (its message names the unit when the probe could tell). `instrument` (see
  `gab.checks.instrument.Instrument`) traces the probed and dataflow programs and collects the
  facts. An init program initialises on tokens of its spec's [batch, length]."""
  from gab.checks.instrument import Instrument  # pylint: disable=g-import-not-at-top
  instrument = instrument or Instrument(tree)
  exported: dict[str, Any] = {}
  for spec in specs:
    model = LM(tree, vocab_size, spec.d_model, spec.n_blocks, dtype=jnp.dtype(spec.dtype),
               remat=remat, attention=attention)
    try:
      exported.update(_export_one(spec, model, instrument))
    except Exception as e:  # noqa: BLE001 - a design's failure to trace is a fact about it
      instrument.error(spec.key, e)
  return Programs(exported, instrument.facts)


BACKWARD = "#bwd"


def _export_one(spec: Spec, model: LM, instrument) -> dict[str, Any]:
  """{key: program} (and {key#bwd: its backward} for a spec with a VJP)."""
  key_data = jax.ShapeDtypeStruct(jax.random.key_data(jax.random.key(0)).shape, jnp.uint32)
  if spec.kind == "init":
    tokens = jnp.zeros((spec.batch, spec.length), jnp.int32)
    return {spec.key: jax_export.export(jax.jit(instrument.init(model, tokens)))(key_data)}
  params = jax.eval_shape(lambda k: model.init(jax.random.wrap_key_data(k),
                                               jnp.zeros((1, spec.length), jnp.int32)), key_data)
  x = jax.ShapeDtypeStruct((spec.batch, spec.length, spec.d_model), jnp.dtype(spec.dtype))
  if spec.kind == "stack":
    args = (params, x)
    fn = lambda p, x_BxLxD: model.apply(p, x_BxLxD, method=LM.stack)[0]  # noqa: E731
  elif spec.kind == "probed":
    args, fn = (params, x), instrument.probed(model, spec.key)
  elif spec.kind == "dataflow":
    fn, extra = instrument.dataflow(model, spec.key, params, x)
    args = (params, x, *extra)
  else:
    raise ValueError(f"program kind {spec.kind!r}: expected one of {KINDS}")
  if not spec.vjp:
    return {spec.key: jax_export.export(jax.jit(fn))(*args)}
  treedef = {}

  def forward(*a):  # the outputs and the residuals the pull-back closes over
    out, pull = jax.vjp(fn, *a)
    residuals, treedef["pull"] = jax.tree.flatten(pull)
    return out, residuals

  fwd = jax_export.export(jax.jit(forward))(*args)
  out_avals, res_avals = jax.tree.unflatten(fwd.out_tree, [jax.ShapeDtypeStruct(a.shape, a.dtype)
                                                           for a in fwd.out_avals])
  bwd = jax_export.export(jax.jit(lambda res, ct: jax.tree.unflatten(treedef["pull"], res)(ct)))(
      res_avals, out_avals)
  return {spec.key: fwd, spec.key + BACKWARD: bwd}


def differentiable(fwd, bwd) -> Callable:
  """The forward program as a function whose VJP is the backward program."""

  @jax.custom_vjp
  def f(*args):
    return fwd.call(*args)[0]

  def f_fwd(*args):
    return tuple(fwd.call(*args))

  def f_bwd(residuals, ct):
    return tuple(bwd.call(residuals, ct))

  f.defvjp(f_fwd, f_bwd)
  return f


# -- the LM around the programs (trusted) -------------------------------------------------------
class ExportedLM:
  """`gab.model.LM` with its blocks replaced by an exported `stack` program.

  The embedding, final norm and tied head are this module's (the same functions `LM` uses), the
  blocks the program's. Tokens of any batch and of any length up to the program's are taken: rows
  are padded to whole program batches (and run one batch at a time), positions on the right (a
  causal program's outputs at the real positions do not see the padding); outputs are cut back.
  `input_scale` multiplies the embeddings (the large-input probe)."""

  def __init__(self, programs: Programs, spec: Spec, vocab_size: int, input_scale=1.0,
               init_spec: Spec | None = None):
    self.programs, self.spec, self.vocab_size = programs, spec, vocab_size
    self.d_model, self.n_blocks, self.dtype = spec.d_model, spec.n_blocks, jnp.dtype(spec.dtype)
    self.input_scale = input_scale
    self.init_spec = init_spec
    self._stack = call(programs, spec)

  def with_input_scale(self, scale) -> "ExportedLM":
    return ExportedLM(self.programs, self.spec, self.vocab_size, scale, self.init_spec)

  def init(self, key, tokens_BxL=None):
    """The design's initial parameters (its exported init); `tokens_BxL` is ignored (the init
    program's shape was fixed when it was exported)."""
    del tokens_BxL
    return self.programs.get(self.init_spec).call(jax.random.key_data(key))

  def param_shapes(self):
    """The parameter tree (ShapeDtypeStructs) the program takes."""
    return arg_shapes(self.programs, self.spec)[0]

  def embed(self, params, tokens_BxL):
    x = embed_tokens(params["params"]["embed"]["embedding"], tokens_BxL, self.dtype)
    return x * jnp.asarray(self.input_scale).astype(x.dtype)

  def blocks(self, params, x_BxLxD):
    """The program on embeddings of any batch and length <= its own (see the class docstring)."""
    b, length, _ = x_BxLxD.shape
    pb, pl = self.spec.batch, self.spec.length
    if length > pl:
      raise ProgramError(f"length {length} is longer than the exported program's {pl}")
    if (b, length) == (pb, pl):
      return self._stack(params, x_BxLxD)
    n = -(-b // pb)
    x = jnp.pad(x_BxLxD, ((0, n * pb - b), (0, pl - length), (0, 0)))
    y = jax.lax.map(lambda xi: self._stack(params, xi), x.reshape(n, pb, pl, -1))
    return y.reshape(n * pb, pl, -1)[:b, :length]

  def features(self, params, tokens_BxL):
    h = self.blocks(params, self.embed(params, tokens_BxL))
    return rms_norm(h, params["params"]["final_norm"])

  def head(self, params, x_BxLxD):
    return loss_lib.head_logits(x_BxLxD, self.head_matrix(params), self.dtype)

  def head_matrix(self, params):
    """The head's weights [vocab, d_model]: the token embedding (tied), float32."""
    return params["params"]["embed"]["embedding"]

  def apply(self, params, tokens_BxL):
    """Float32 logits [B, L, vocab] (the signature of `LM.apply` for `train.zeroshot`)."""
    return self.head(params, self.features(params, tokens_BxL))


def call(programs: Programs, spec: Spec) -> Callable:
  """The program of `spec` as a function (differentiable when exported with its VJP)."""
  if not spec.vjp:
    return programs.get(spec).call
  backward = programs.exported.get(spec.key + BACKWARD)
  if backward is None:
    raise ProgramError(f"no backward program for {spec.key} was exported")
  return differentiable(programs.get(spec), backward)


def out_shapes(programs: Programs, spec: Spec) -> list[tuple[int, ...]]:
  """The shapes of a program's flat outputs (what the trusted side sees, whatever the facts say)."""
  exp = programs.get(spec)
  out = jax.tree.unflatten(exp.out_tree, list(exp.out_avals))
  return [tuple(int(n) for n in a.shape) for a in jax.tree.leaves(out[0] if spec.vjp else out)]


def arg_shapes(programs: Programs, spec: Spec) -> tuple:
  """The positional arguments (ShapeDtypeStructs) a program takes."""
  exp = programs.get(spec)
  args, _ = jax.tree.unflatten(exp.in_tree, [jax.ShapeDtypeStruct(a.shape, a.dtype)
                                             for a in exp.in_avals])
  return tuple(args)


def param_shapes(programs: Programs, spec: Spec):
  """The parameter tree (ShapeDtypeStructs) an init program produces."""
  exp = programs.get(spec)
  return jax.tree.unflatten(exp.out_tree, [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in exp.out_avals])


def has_fft(programs: Programs, spec: Spec) -> bool:
  """Whether the program of `spec` (or its VJP) computes an FFT: its outputs then carry rounding
  noise from every position, and exact-zero tests of causality need a tolerance."""
  cache = programs.fft
  if spec.key not in cache:
    texts = [programs.get(spec).mlir_module()]
    if spec.key + BACKWARD in programs.exported:
      texts.append(programs.exported[spec.key + BACKWARD].mlir_module())
    cache[spec.key] = any("stablehlo.fft" in t for t in texts)
  return cache[spec.key]


def count(params) -> int:
  return int(sum(np.prod(a.shape) for a in jax.tree.leaves(params)))
