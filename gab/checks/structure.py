"""Checks 1-3: the design is well formed, initialises, and runs forward as the GAB contract says.

Format is judged from the tree and the kinds' declarations alone. Init and forward run the
design's exported programs (`gab.programs`): the parameters its init program returns, the logits
the trusted head computes on its block stack's output; contract violations (a unit's output of the
wrong shape or dtype, Z entries used against its declaration, Z mutated in place) are what the
tracing saw (`facts`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gab import registry
from gab.checks import mixing, zrule
from gab.checks.base import FAIL, PASS, Check, jit, on_device
from gab.checks.context import Context
from gab.checks.plan import Plan
from gab.tree import Unit

CONTRACT_HINT = ("every unit must return an array of its input's shape and dtype, and read or write "
                 "only the Z entries its kind declares (KindSpec reads/writes)")


def z_flow_errors(tree: Unit, n_blocks: int) -> list[str]:
  """Z entries read before anything writes them (the rule of `gab.checks.zrule`), as messages.

  Only the first block can break the rule (later blocks also see what earlier blocks wrote), so
  `n_blocks` does not change the verdict; it is kept for callers.
  """
  del n_blocks
  provided = list(zrule.lm_provided())
  errors = []
  for path, unit, missing in zrule.reads_before_writes(tree):
    for entry in missing:
      writers = [f"{u.kind} at {list(p)}" for p, u in tree.walk()
                 if entry in registry.get(u.kind).writes]
      why = (f"it is written only later, by {', '.join(writers)}" if writers
             else "no unit of the design writes it")
      errors.append(f"{unit.kind} at {list(path)} (block 0) reads Z[{entry!r}] before "
                    f"anything writes it: {why}; the LM provides {provided}")
  return errors


def check_format(ctx: Context) -> Check:
  errors = registry.type_errors(ctx.tree)
  if errors:
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return Check("format", FAIL, errors[0][1] + more, "use only registered kinds, fit each child to "
                 "its slot's roles and keep hyperparameters in their domains (see gab.registry)")
  ctx.tree = registry.normalize(ctx.tree)
  errors = z_flow_errors(ctx.tree, ctx.cfg.n_blocks)
  if errors:
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return Check("format", FAIL, errors[0] + more, "put the unit that writes a Z entry before the "
                 "units that read it (children of Sequence, Parallel and Gate run in order)")
  return Check("format", PASS, f"{ctx.tree.size()} units, depth {ctx.tree.depth()}; well typed, "
               f"every Z entry is written before it is read")


def check_init(ctx: Context) -> Check:
  hint = "check that every unit's hyperparameters fit d_model (e.g. heads divide it)"
  programs = ctx.ensure_programs()
  init = Plan.init_spec(ctx.cfg)
  if init.key not in programs.exported:
    return Check("init", FAIL, f"initialisation failed: {programs.facts['errors'].get(init.key, 'no init program')}",
                 programs.facts.get("hints", {}).get(init.key) or hint)
  from gab.programs import param_shapes  # pylint: disable=g-import-not-at-top
  ctx.plan = Plan(ctx.tree, ctx.cfg, ctx.rung, param_shapes(programs, init), ctx.check_dtypes())
  # On the device, as every later parameter point is: a program compiles once per shape, not
  # once more for host arrays.
  ctx.params = on_device(jit(ctx.call(init))(jax.random.key_data(ctx.key)))
  leaves = jax.tree_util.tree_flatten_with_path(ctx.params)[0]
  n = sum(x.size for _, x in leaves)
  bad = [jax.tree_util.keystr(p) for p, x in leaves
         if x.dtype != jnp.float32 or not np.all(np.isfinite(x))]
  if bad:
    return Check("init", FAIL, f"parameter {bad[0]} is not finite float32", "create parameters in "
                 "float32 (param_dtype) with finite initialisers; cast to the compute dtype in use")
  return Check("init", PASS, f"{n:,} parameters at d_model={ctx.cfg.d_model}, "
               f"n_blocks={ctx.cfg.n_blocks}")


def check_forward(ctx: Context) -> Check:
  cfg, tokens = ctx.cfg, ctx.tokens[:, :-1]
  violations = ctx.facts().get("violations", [])
  if violations:
    more = f" (+{len(violations) - 1} more)" if len(violations) > 1 else ""
    return Check("forward", FAIL, violations[0] + more, CONTRACT_HINT)
  want = tokens.shape + (cfg.vocab_size,)
  for dtype in ctx.check_dtypes():
    in_dtype = "" if dtype == jnp.float32 else f" in {dtype.name}"
    spec, probed = ctx.plan.train(dtype), ctx.plan.spec("probed", dtype, *tokens.shape)
    errors = ctx.facts()["errors"]
    error = errors.get(spec.key) and (errors.get(probed.key) or errors[spec.key])  # probed: names the unit
    if error:
      hints = ctx.facts().get("hints", {})
      hint = hints.get(probed.key) or hints.get(spec.key) or CONTRACT_HINT
      return Check("forward", FAIL, f"forward pass{in_dtype} failed: {error}", hint)
    if dtype == jnp.float32:  # with the dataflow tests' program: one compile
      logits = mixing.run(ctx, ctx.params, jax.random.fold_in(ctx.key, 13))["logits"]
    else:
      logits = jax.device_get(jit(ctx.train_lm(dtype).apply)(ctx.params, tokens))
    if logits.shape != want or logits.dtype != jnp.float32:
      return Check("forward", FAIL, f"logits are {logits.dtype}{list(logits.shape)}, expected "
                   f"float32{list(want)}", CONTRACT_HINT)
    if not np.all(np.isfinite(logits)):
      where = first_nonfinite(ctx, tokens, 1.0, dtype)
      if dtype == jnp.float32:
        return Check("forward", FAIL, f"forward pass produced NaN or Inf, first in {where}",
                     "look for divisions, exp or log without stabilisation")
      return Check("forward", FAIL, f"forward pass in {dtype.name} (the rung's compute dtype) produced "
                   f"NaN or Inf, first in {where}; it is finite in float32",
                   f"compute reductions, variances and exponentials in float32 (x.astype(jnp.float32)) "
                   f"and cast back: {dtype.name} keeps only ~3 significant digits")
  fail = dataflow_failure(ctx)
  if fail:
    return fail
  return Check("forward", PASS, f"logits float32{list(want)}, finite; every unit keeps its input's "
               f"shape and dtype and uses only the Z entries it declares; the logits depend on the "
               f"tokens and every sequence mixer mixes positions")


def dataflow_failure(ctx: Context) -> Check | None:
  """Undeclared Z reads (by any route), logits that ignore the tokens, mixers that do not mix."""
  from gab.checks import zflow  # pylint: disable=g-import-not-at-top
  from gab.checks.structural import perturb  # pylint: disable=g-import-not-at-top
  cfg = ctx.cfg
  bad = zflow.undeclared_reads(ctx, ctx.params)
  if bad:
    where, entries = bad[0]
    more = f" (+{len(bad) - 1} more)" if len(bad) > 1 else ""
    return Check("forward", FAIL, f"{where} reads Z entries among {entries} its kind does not declare "
                 f"(its outputs depend on them; reads="
                 f"{list(registry.get(where.kind).reads)}){more}", CONTRACT_HINT)
  opened = mixing.run(ctx, perturb(ctx.params, jax.random.fold_in(ctx.key, 11)),
                      jax.random.fold_in(ctx.key, 13))
  ratio, culprit = mixing.dependence(ctx, opened)
  if not ratio >= cfg.min_input_dependence:
    blame = f"; the dependence is cut by {culprit}" if culprit else ""
    return Check("forward", FAIL, f"the logits do not depend on the tokens: relative change "
                 f"{ratio:.1e} per relative change of the token embeddings (at least "
                 f"{cfg.min_input_dependence:g} expected){blame}",
                 "the block's output must depend on its input (keep a residual path or make the "
                 "units' outputs functions of their inputs, not of positions or constants)")
  lazy = mixing.mixing(ctx, opened, cfg.min_mixing)
  if lazy:
    where, r = lazy[0]
    more = f" (+{len(lazy) - 1} more)" if len(lazy) > 1 else ""
    return Check("forward", FAIL, f"{where} is registered as a sequence mixer but does not mix "
                 f"positions: the gradient of its outputs at other positions w.r.t. its input at the "
                 f"first (or last) position is {r:.1e} of its largest gradient (at least "
                 f"{cfg.min_mixing:g} expected){more}",
                 "a sequence_mixer's output at t must depend on inputs at some s < t; register a "
                 "position-wise unit as a channel_mixer or norm")
  return None


def first_nonfinite(ctx: Context, tokens_BxL: np.ndarray, input_scale: float, dtype=jnp.float32,
                    params=None) -> str:
  """Where NaN/Inf first appears: the first unit call (children first) with a non-finite output,
  by the probed program at the tokens' shape."""
  from gab.checks.structural import recorded_arrays  # pylint: disable=g-import-not-at-top
  spec = ctx.plan.spec("probed", dtype, *tokens_BxL.shape)
  params = ctx.params if params is None else params
  fn = ctx.call(spec)

  def run(p, tokens, scale):
    h, values = fn(p, ctx.embed(p, tokens, dtype) * jnp.asarray(scale).astype(dtype))
    return [~jnp.isfinite(v.astype(jnp.float32)) for v in values]

  bad = jax.device_get(jit(run)(params, tokens_BxL, input_scale))
  for rec, mask in zip(recorded_arrays(ctx, spec), bad):
    if rec.where is not None and mask.any():
      at = ""
      if rec.length_axes and mask.ndim:
        per_t = np.moveaxis(mask, rec.length_axes[0], 0).reshape(mask.shape[rec.length_axes[0]], -1)
        at = f", first at position {int(np.argmax(per_t.any(1)))}"
      name = "output" if rec.key is None else f"Z[{rec.key!r}]"
      return f"{rec.where}, in its {name}{at}"
  return "the LM around the blocks (embedding, final norm or head)"
