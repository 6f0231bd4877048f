"""Checks 1-3: the design is well formed, initialises, and runs forward as the GAB contract says."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gab import registry
from gab.checks import zrule
from gab.checks.base import FAIL, PASS, Check, jit
from gab.checks.context import Context
from gab.checks.probe import Probe, by_unit, error_text, hint_for, scale_embeddings, written
from gab.model import LM
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
  ctx.build_model()
  return Check("format", PASS, f"{ctx.tree.size()} units, depth {ctx.tree.depth()}; well typed, "
               f"every Z entry is written before it is read")


def check_init(ctx: Context) -> Check:
  init = jit(ctx.model.init)
  try:
    with Probe(ctx.tree):
      ctx.params = init(ctx.key, ctx.tokens[:, :-1])
  except Exception as e:  # noqa: BLE001 - any failure of a design's code is the design's
    return Check("init", FAIL, f"initialisation failed: {error_text(e)}", hint_for(
        e, "check that every unit's hyperparameters fit d_model (e.g. heads divide it)"))
  leaves = jax.tree_util.tree_flatten_with_path(ctx.params)[0]
  n = sum(x.size for _, x in leaves)
  bad = [jax.tree_util.keystr(p) for p, x in leaves
         if x.dtype != jnp.float32 or not np.all(np.isfinite(x))]
  if bad:
    return Check("init", FAIL, f"parameter {bad[0]} is not finite float32", "create parameters in "
                 "float32 (param_dtype) with finite initialisers; cast to the compute dtype in use")
  return Check("init", PASS, f"{n:,} parameters at d_model={ctx.cfg.d_model}, "
               f"n_blocks={ctx.cfg.n_blocks}")


def causal_batch(tokens_L: np.ndarray, seed: int, vocab_size: int) -> np.ndarray:
  """[L + 1, L] tokens: row 0 is `tokens_L`; row t + 1 replaces every token after position t."""
  length = tokens_L.shape[0]
  noise_TxL = np.random.default_rng(seed + 1).integers(3, vocab_size, (length, length))
  future_TxL = np.arange(length)[None, :] > np.arange(length)[:, None]
  perturbed = np.where(future_TxL, noise_TxL, tokens_L[None, :])
  return np.concatenate([tokens_L[None, :], perturbed]).astype(np.int32)


def check_forward(ctx: Context) -> Check:
  cfg = ctx.cfg
  ctx.causal_tokens = causal_batch(ctx.tokens[0, :-1], cfg.seed, cfg.vocab_size)
  probe = Probe(ctx.tree)

  def forward(params, tokens):
    with probe:
      return ctx.model.apply(params, tokens, method=LM.with_z)

  ctx.forward_fn = jit(forward)
  try:
    logits, z = ctx.forward_fn(ctx.params, ctx.causal_tokens)
  except Exception as e:  # noqa: BLE001
    return Check("forward", FAIL, f"forward pass failed: {error_text(e)}", hint_for(e, CONTRACT_HINT))
  if probe.violations:
    lines = by_unit([(where, f" {what}") for where, what in probe.violations])
    more = f" (+{len(lines) - 1} more)" if len(lines) > 1 else ""
    return Check("forward", FAIL, lines[0] + more, CONTRACT_HINT)
  want = ctx.causal_tokens.shape + (cfg.vocab_size,)
  if logits.shape != want or logits.dtype != jnp.float32:
    return Check("forward", FAIL, f"logits are {logits.dtype}{list(logits.shape)}, expected "
                 f"float32{list(want)}", CONTRACT_HINT)
  logits, z = jax.device_get((logits, z))
  if not np.all(np.isfinite(logits)):
    where = first_nonfinite(ctx, ctx.causal_tokens, 1.0)
    return Check("forward", FAIL, f"forward pass produced NaN or Inf, first in {where}",
                 "look for divisions, exp or log without stabilisation")
  ctx.forward_out = (logits, z)
  fail = compute_dtype_failure(ctx)
  if fail:
    return fail
  fail = dataflow_failure(ctx)
  if fail:
    return fail
  return Check("forward", PASS, f"logits float32{list(want)}, finite; every unit keeps its input's "
               f"shape and dtype and uses only the Z entries it declares; the logits depend on the "
               f"tokens and every sequence mixer mixes positions")


def compute_dtype_failure(ctx: Context) -> Check | None:
  """The forward pass in the rung's compute dtype (bfloat16 on the paper ladder) is finite too."""
  dtype = ctx.compute_dtype()
  if dtype == jnp.float32:
    return None
  model = ctx.model_in(dtype)

  def forward(params, tokens):
    with Probe(ctx.tree):
      return model.apply(params, tokens)
  try:
    logits = jax.device_get(jit(forward)(ctx.params, ctx.causal_tokens))
  except Exception as e:  # noqa: BLE001
    return Check("forward", FAIL, f"forward pass in {dtype.name} failed: {error_text(e)}", CONTRACT_HINT)
  if not np.all(np.isfinite(logits)):
    where = first_nonfinite(ctx, ctx.causal_tokens, 1.0, dtype)
    return Check("forward", FAIL, f"forward pass in {dtype.name} (the rung's compute dtype) produced "
                 f"NaN or Inf, first in {where}; it is finite in float32",
                 f"compute reductions, variances and exponentials in float32 (x.astype(jnp.float32)) "
                 f"and cast back: {dtype.name} keeps only ~3 significant digits")
  return None


def dataflow_failure(ctx: Context) -> Check | None:
  """Undeclared Z reads (by any route), logits that ignore the tokens, mixers that do not mix."""
  from gab.checks import mixing, zflow  # pylint: disable=g-import-not-at-top
  from gab.checks.structural import perturb  # pylint: disable=g-import-not-at-top
  cfg, tokens = ctx.cfg, ctx.tokens[:1, :-1]
  bad = zflow.undeclared_reads(ctx.model, ctx.tree, ctx.params, tokens)
  if bad:
    where, entries = bad[0]
    more = f" (+{len(bad) - 1} more)" if len(bad) > 1 else ""
    return Check("forward", FAIL, f"{where} reads Z entries among {entries} its kind does not declare "
                 f"(its outputs depend on them; reads="
                 f"{list(registry.get(where.kind).reads)}){more}", CONTRACT_HINT)
  opened = perturb(ctx.params, jax.random.fold_in(ctx.key, 11))
  ratio, culprit = mixing.dependence(ctx.model, ctx.tree, opened, ctx.causal_tokens[:2])
  if not ratio >= cfg.min_input_dependence:
    blame = f"; the dependence is cut by {culprit}" if culprit else ""
    return Check("forward", FAIL, f"the logits do not depend on the tokens: relative change "
                 f"{ratio:.1e} per relative change of the token embeddings (at least "
                 f"{cfg.min_input_dependence:g} expected){blame}",
                 "the block's output must depend on its input (keep a residual path or make the "
                 "units' outputs functions of their inputs, not of positions or constants)")
  lazy = mixing.mixing(ctx.model, ctx.tree, opened, tokens, jax.random.fold_in(ctx.key, 13),
                       cfg.min_mixing)
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


def first_nonfinite(ctx: Context, tokens_BxL: np.ndarray, input_scale: float, dtype=None) -> str:
  """Where NaN/Inf first appears: the first unit call (children first) with a non-finite output."""
  found = []
  model = ctx.model if dtype is None else ctx.model_in(dtype)

  def run(params, tokens, scale):
    values = []

    def record(where, x, y, z_in, z_out):
      for name, v in [("output", y)] + [(f"Z[{k!r}]", z_out[k]) for k in written(z_in, z_out)]:
        if hasattr(v, "dtype") and jnp.issubdtype(v.dtype, jnp.inexact):
          per_position = v.shape[:2] == tokens.shape
          bad = ~jnp.isfinite(v.reshape(v.shape[:2] + (-1,)) if per_position else v.reshape(1, 1, -1))
          found.append((where, name, per_position))
          values.append(bad.any(axis=(0, 2)))

    with Probe(ctx.tree, record), scale_embeddings(scale):
      model.apply(params, tokens)
    return values

  values = jax.device_get(jit(run)(ctx.params, tokens_BxL, input_scale))
  for (where, name, per_position), bad in zip(found, values):
    if bad.any():
      at = f", first at position {int(np.argmax(bad))}" if per_position else ""
      return f"{where}, in its {name}{at}"
  return "the LM around the blocks (embedding, final norm or head)"
