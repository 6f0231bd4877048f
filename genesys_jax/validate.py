"""Config validation, in one place, before a run writes anything.

`check_config(config)` walks the fields a run uses and raises `ConfigError` listing every value
that is out of its type or range, one line per field: the field's path, its value and what is
expected (`config.rungs.tiny.batch_size = 0: expected an integer >= 1`). Fields this module does
not know are left alone (other sections belong to their own modules), and a missing section is
skipped, so an older or smaller config validates too. Pure Python: no JAX, no TensorFlow.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Mapping

from evolution.jobqueue import CHECK_JOB

_MISSING = object()
MODES = ("scratch", "mutation", "crossover")
DTYPES = ("float32", "bfloat16", "float16")


class ConfigError(ValueError):
  """One or more config fields are invalid; `lines` holds one message per field."""

  def __init__(self, lines: list[str]):
    self.lines = list(lines)
    super().__init__("\n".join(self.lines))


# -- value predicates: each returns None when the value fits, else what was expected ---------------
Rule = Callable[[Any], "str | None"]


def _is_int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def integer(lo: int | None = None, hi: int | None = None, also: tuple = ()) -> Rule:
  def rule(v):
    if v in also and _is_int(v):
      return None
    if _is_int(v) and (lo is None or v >= lo) and (hi is None or v <= hi):
      return None
    rng = (f" >= {lo}" if hi is None else f" in [{lo}, {hi}]") if lo is not None else ""
    extra = "".join(f" or {a}" for a in also)
    return f"an integer{rng}{extra}"
  return rule


def number(lo: float | None = None, hi: float | None = None, lo_open: bool = False,
           hi_open: bool = False) -> Rule:
  def rule(v):
    ok = _is_num(v)
    if ok and lo is not None:
      ok = v > lo if lo_open else v >= lo
    if ok and hi is not None:
      ok = v < hi if hi_open else v <= hi
    if ok:
      return None
    if lo is not None and hi is not None:
      return f"a number in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    if lo is not None:
      return f"a number {'>' if lo_open else '>='} {lo:g}"
    return "a finite number"
  return rule


def probability(v):
  return number(0.0, 1.0)(v) and "a probability in [0, 1]"


def string(v):
  return None if isinstance(v, str) else "a string"


def one_of(*choices: str) -> Rule:
  return lambda v: None if v in choices else f"one of {', '.join(map(repr, choices))}"


def strings(v):
  if isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v):
    return None
  return "a tuple of strings"


# -- the fields a run uses -------------------------------------------------------------------------
TOP = {"seed": integer(0), "seeds": strings, "replay_from": string}
SECTIONS: dict[str, dict[str, Rule]] = {
    "data": {"seq_len": integer(1), "val_fraction": number(0.0, 1.0, True, True),
             "split_seed": integer(0), "corpus": string, "vocab": string, "spm_model": string,
             "data_dir": string},
    "checker": {"d_model": integer(1), "n_blocks": integer(1), "vocab_size": integer(2),
                "seq_len": integer(1), "batch": integer(1), "seed": integer(0),
                "causal_rtol": number(0.0), "large_input_scale": number(0.0, lo_open=True),
                "train_steps": integer(1), "train_lr": number(0.0, lo_open=True),
                "size_tolerance": number(0.0, 1.0, hi_open=True), "min_d_model": integer(1),
                "d_model_multiple": integer(1), "flops_warn_ratio": number(0.0, lo_open=True),
                "flops_fail_ratio": number(0.0, lo_open=True),
                "memory_warn_ratio": number(0.0, lo_open=True),
                "memory_fail_ratio": number(0.0, lo_open=True)},
    "train": {"dtype": one_of(*DTYPES), "save_every": integer(0), "max_to_keep": integer(1),
              "log_every": integer(1), "remat": lambda v: None if isinstance(v, bool) else "true or false"},
    "train.mesh": {"data": integer(1, also=(-1,)), "fsdp": integer(1, also=(-1,)),
                   "tensor": integer(1, also=(-1,))},
    "zeroshot": {"tasks": strings, "max_len": integer(1), "batch_size": integer(1),
                 "limit": integer(0)},
    "evolution": {"n_proposals": integer(0), "max_retries": integer(1),
                  "exploit_prob": probability, "top_fraction": number(0.0, 1.0, lo_open=True),
                  "seed_prob": probability, "zeroshot_weight": probability,
                  "max_depth": integer(1), "max_size": integer(1)},
    "ladder": {"rungs": strings, "n_target": integer(1), "ratio": number(0.0, 1.0, lo_open=True),
               "exploit_prob": probability},
    "jobs": {"check_in_workers": lambda v: None if isinstance(v, bool) else "true or false"},
}
RUNG = {"d_model": integer(1), "n_blocks": integer(1), "target_params": integer(0),
        "lr": number(0.0, lo_open=True), "batch_size": integer(1), "train_tokens": integer(0),
        "tokens_per_param": number(0.0), "eval_batches": integer(1), "warmup_frac": number(0.0, 1.0),
        "min_lr_ratio": number(0.0, 1.0), "grad_clip": number(0.0, lo_open=True),
        "weight_decay": number(0.0), "grad_accum": integer(1), "memory_limit_gb": number(0.0)}


def _get(node: Any, path: str) -> Any:
  for part in path.split("."):
    if not isinstance(node, Mapping) and not hasattr(node, "keys"):
      return _MISSING
    if part not in node:
      return _MISSING
    node = node[part]
  return node


def _fmt(value: Any) -> str:
  if isinstance(value, str):
    return repr(value)
  if isinstance(value, (list, tuple)):
    return repr(tuple(value))
  if hasattr(value, "to_dict"):
    return repr(value.to_dict())
  return repr(value)


def _check_fields(config, prefix: str, rules: Mapping[str, Rule], out: list[str]) -> None:
  for name, rule in rules.items():
    path = f"{prefix}.{name}" if prefix else name
    value = _get(config, path)
    if value is _MISSING:
      continue
    expected = rule(value)
    if expected:
      out.append(f"config.{path} = {_fmt(value)}: expected {expected}")


def _check_mode_probs(config, out: list[str]) -> None:
  probs = _get(config, "evolution.mode_probs")
  if probs is _MISSING:
    return
  path = "config.evolution.mode_probs"
  if not hasattr(probs, "items"):
    out.append(f"{path} = {_fmt(probs)}: expected a dict over {', '.join(MODES)}")
    return
  unknown = sorted(set(probs) - set(MODES))
  if unknown:
    out.append(f"{path} has unknown modes {unknown}: expected only {', '.join(MODES)}")
  bad = False
  for mode, p in probs.items():
    if probability(p):
      out.append(f"{path}.{mode} = {_fmt(p)}: expected a probability in [0, 1]")
      bad = True
  if not bad and not unknown and abs(sum(probs.values()) - 1.0) > 1e-6:
    parts = " + ".join(f"{m} {p:g}" for m, p in probs.items())
    out.append(f"{path} sums to {sum(probs.values()):g} ({parts}): expected probabilities "
               f"summing to 1")


def _check_rungs(config, processes: int, only: Iterable[str] | None, out: list[str]) -> None:
  rungs = _get(config, "rungs")
  ladder = _get(config, "ladder.rungs")
  if rungs is _MISSING:
    return
  if ladder is not _MISSING and strings(ladder) is None:  # (a bad type is reported with ladder)
    if not ladder:
      out.append("config.ladder.rungs = (): expected at least one rung name")
    missing = [r for r in ladder if r not in rungs]
    if missing:
      out.append(f"config.ladder.rungs names {missing}, but config.rungs has only {sorted(rungs)}")
    if len(set(ladder)) != len(ladder):
      out.append(f"config.ladder.rungs = {_fmt(ladder)}: expected each rung once")
  if CHECK_JOB in rungs:
    out.append(f"config.rungs.{CHECK_JOB}: {CHECK_JOB!r} is reserved (the job queue's name for checker "
               f"jobs); rename the rung")
  names = list(rungs) if only is None else [r for r in only if r in rungs]
  for name in names:
    lines: list[str] = []
    _check_fields(rungs[name], "", RUNG, lines)
    out.extend(line.replace("config.", f"config.rungs.{name}.", 1) for line in lines)
    if lines:
      continue  # the combined rules below need valid fields
    rung = rungs[name]
    if rung.get("train_tokens", 1) == 0 and rung.get("tokens_per_param", 1) == 0:
      out.append(f"config.rungs.{name}: train_tokens = 0 and tokens_per_param = 0: expected one of "
                 f"them > 0 (the rung's token budget)")
    batch, accum = rung.get("batch_size", 1), rung.get("grad_accum", 1)
    if batch % (accum * processes):
      out.append(f"config.rungs.{name}.batch_size = {batch}: expected a multiple of grad_accum "
                 f"{accum} x {processes} processes")


def config_errors(config, processes: int = 1, rungs: Iterable[str] | None = None) -> list[str]:
  """Every invalid field of `config`, one line each (empty: the config is valid).

  `rungs` limits the per-rung checks to those rungs (default: all of config.rungs)."""
  out: list[str] = []
  _check_fields(config, "", TOP, out)
  for section, rules in SECTIONS.items():
    _check_fields(config, section, rules, out)
  checker = _get(config, "checker")
  if checker is not _MISSING and not out:
    for kind in ("flops", "memory"):
      warn, fail = checker.get(f"{kind}_warn_ratio"), checker.get(f"{kind}_fail_ratio")
      if warn is not None and fail is not None and fail < warn:
        out.append(f"config.checker.{kind}_fail_ratio = {fail!r}: expected >= "
                   f"{kind}_warn_ratio {warn!r}")
  _check_mode_probs(config, out)
  _check_rungs(config, processes, rungs, out)
  return out


def check_config(config, processes: int = 1, rungs: Iterable[str] | None = None) -> None:
  """Raise `ConfigError` (one line per invalid field) unless `config` is valid."""
  errors = config_errors(config, processes, rungs)
  if errors:
    raise ConfigError(errors)
