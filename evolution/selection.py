"""Selection: fitness by rank aggregation over rungs, and the original's quadrant scheme.

A design here is a dict with an `id` and `metrics` = {rung name: verification metrics}; optional
keys: `fitness` (used as given when there are no `metrics`), `confidence` (likewise), `is_seed`
(a seed design, re-drawn by designers with a small probability) and `status`; other keys pass
through untouched, and the dict itself is what the selectors return. Lists are taken in the order
given (the store's creation order), and ties keep that order.

Fitness (`fitness`, the one definition: selection, promotion and the islands' migrations rank by it;
higher is better): rank-based, so neither the bpb scale of a rung nor a rung's number of designs
dominates.
1. At each rung, each criterion ranks the designs verified there by their mid-rank percentile:
   (number of designs it beats + half the number it ties, itself included) / number ranked, in
   (0, 1); the best of n scores 1 - 1/(2n), a design alone 0.5. Criteria: `val_bpb` (lower is
   better) and each zero-shot task in `metrics["zeroshot"]` = {task: accuracy} (higher is better).
2. A design's rung score = its bpb percentile, or, when it has zero-shot results there,
   (1 - zeroshot_weight) x bpb percentile + zeroshot_weight x mean of its task percentiles.
3. Its fitness = the mean of its rung scores weighted by rung index + 1 (1, 2, 3, ... from the
   lowest rung: a higher rung trains longer and is the better measurement) -- a weighted Borda count.
Confidence = the sum of those weights over the rungs a design was verified at.

Quadrants: a design is good when its fitness is at least the upper quartile's (the
ceil(top_fraction x n)-th best), confident when its confidence is at least the upper quartile's.
Designers exploit good & confident designs with probability `exploit_prob` and explore the others.

Promotion (`promotion_candidates`, `pick_promotion`) ranks within one rung: a design goes up the
ladder only from the top fraction of the rung below, baselines included.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import numpy as np

Design = dict[str, Any]
QUADRANTS = ("good_confident", "good_unconfident", "poor_confident", "poor_unconfident")


def percentiles(values: Sequence[float]) -> list[float]:
  """Mid-rank percentile of each value among `values` (higher value, higher percentile)."""
  v = np.asarray(values, np.float64)
  below = (v[None, :] < v[:, None]).sum(1)
  equal = (v[None, :] == v[:, None]).sum(1)
  return ((below + 0.5 * equal) / len(v)).tolist()


def _rung_names(designs: Sequence[Design], rungs: Sequence[str] | None) -> list[str]:
  """The ladder's rungs, lowest first; when not given, the rung names found, sorted."""
  if rungs is not None:
    return list(rungs)
  return sorted({r for d in designs for r in d.get("metrics", {})})


def rung_scores(designs: Sequence[Design], rung: str, zeroshot_weight: float = 0.5) -> dict[str, float]:
  """Each verified design's score at `rung` in (0, 1), from within-rung ranks (see module doc)."""
  here = [d for d in designs if d.get("metrics", {}).get(rung, {}).get("val_bpb") is not None]
  bpb = percentiles([-float(d["metrics"][rung]["val_bpb"]) for d in here])
  tasks = sorted({t for d in here for t in d["metrics"][rung].get("zeroshot") or {}})
  task_pct: dict[str, dict[str, float]] = {}
  for task in tasks:
    have = [d for d in here if task in (d["metrics"][rung].get("zeroshot") or {})]
    pct = percentiles([float(d["metrics"][rung]["zeroshot"][task]) for d in have])
    task_pct[task] = {d["id"]: p for d, p in zip(have, pct)}
  scores = {}
  for d, b in zip(here, bpb):
    zs = [task_pct[t][d["id"]] for t in tasks if d["id"] in task_pct[t]]
    scores[d["id"]] = b if not zs else (1 - zeroshot_weight) * b + zeroshot_weight * float(np.mean(zs))
  return scores


def fitness(designs: Sequence[Design], rungs: Sequence[str] | None = None,
            zeroshot_weight: float = 0.5) -> dict[str, float | None]:
  """Fitness of each design (None when it has no verification): weighted Borda over rungs."""
  names = _rung_names(designs, rungs)
  per_rung = [rung_scores(designs, r, zeroshot_weight) for r in names]
  out: dict[str, float | None] = {}
  for d in designs:
    pairs = [(i + 1, s[d["id"]]) for i, s in enumerate(per_rung) if d["id"] in s]
    out[d["id"]] = sum(w * x for w, x in pairs) / sum(w for w, _ in pairs) if pairs else None
  return out


def confidence(design: Design, rungs: Sequence[str]) -> float:
  """Sum of rung weights (1, 2, 3, ... by rung index) over the rungs the design was verified at."""
  metrics = design.get("metrics", {})
  return float(sum(i + 1 for i, r in enumerate(rungs) if metrics.get(r, {}).get("val_bpb") is not None))


def _scores(designs: Sequence[Design], rungs: Sequence[str] | None, zeroshot_weight: float
            ) -> tuple[list[float | None], list[float]]:
  """(fitness, confidence) of each design: from `metrics` when present, else the given values."""
  names = _rung_names(designs, rungs)
  agg = fitness(designs, names, zeroshot_weight)
  fit = [agg[d["id"]] if "metrics" in d else d.get("fitness") for d in designs]
  conf = [confidence(d, names) if "metrics" in d else float(d.get("confidence", 0.0)) for d in designs]
  return fit, conf


def _upper_quartile(values: Sequence[float], top_fraction: float) -> float:
  """The ceil(top_fraction x n)-th largest value (so ties with it are in the top)."""
  ranked = sorted(values, reverse=True)
  return ranked[max(1, math.ceil(top_fraction * len(ranked))) - 1]


def quadrant_of(designs: Sequence[Design], rungs: Sequence[str] | None = None, top_fraction: float = 0.25,
                zeroshot_weight: float = 0.5) -> list[str]:
  """Each design's quadrant (one of QUADRANTS); unscored designs (fitness None) are poor.

  Thresholds are the upper quartiles over all designs with a fitness (confidence likewise).
  """
  fit, conf = _scores(designs, rungs, zeroshot_weight)
  scored = [i for i, f in enumerate(fit) if f is not None]
  if not scored:
    return ["poor_unconfident"] * len(designs)
  fit_bar = _upper_quartile([fit[i] for i in scored], top_fraction)
  conf_bar = _upper_quartile([conf[i] for i in scored], top_fraction)
  out = []
  for f, c in zip(fit, conf):
    good = f is not None and f >= fit_bar
    sure = f is not None and c >= conf_bar
    out.append(f"{'good' if good else 'poor'}_{'confident' if sure else 'unconfident'}")
  return out


def quadrants(designs: Sequence[Design], rungs: Sequence[str] | None = None, top_fraction: float = 0.25,
              zeroshot_weight: float = 0.5) -> dict[str, list[Design]]:
  """Designs by quadrant, each list in the order given."""
  where = quadrant_of(designs, rungs, top_fraction, zeroshot_weight)
  return {q: [d for d, w in zip(designs, where) if w == q] for q in QUADRANTS}


def _ranked(fit: Sequence[float | None], keep: Sequence[bool]) -> list[int]:
  """Indices of the kept designs, best fitness first (unscored last; ties in the order given)."""
  return sorted((i for i in range(len(fit)) if keep[i]), key=lambda i: np.inf if fit[i] is None else -fit[i])


def _pick(key: jax.Array, pool: Sequence[Any]) -> Any:
  return pool[int(jax.random.randint(key, (), 0, len(pool)))]


def _parent_index(key: jax.Array, candidates: Sequence[Design], exploit_prob: float, top_fraction: float,
                  seed_prob: float, rungs: Sequence[str] | None, zeroshot_weight: float) -> int:
  if not candidates:
    raise ValueError("no verified design to select a parent from")
  k_seed, k_mode, k_pick = jax.random.split(key, 3)
  seeds = [i for i, c in enumerate(candidates) if c.get("is_seed")]
  if seeds and bool(jax.random.uniform(k_seed) < seed_prob):
    return _pick(k_pick, seeds)
  where = quadrant_of(candidates, rungs, top_fraction, zeroshot_weight)
  fit, _ = _scores(candidates, rungs, zeroshot_weight)
  best = _ranked(fit, [w == "good_confident" for w in where])
  rest = _ranked(fit, [w != "good_confident" for w in where])
  exploit = bool(jax.random.uniform(k_mode) < exploit_prob)
  return _pick(k_pick, (best or rest) if exploit else (rest or best))


def select_parent(key: jax.Array, candidates: Sequence[Design], exploit_prob: float = 0.8,
                  top_fraction: float = 0.25, seed_prob: float = 0.05, rungs: Sequence[str] | None = None,
                  zeroshot_weight: float = 0.5) -> Design:
  """A designer's parent: a seed with probability `seed_prob` (if any candidate `is_seed`); else
  with probability `exploit_prob` a good & confident design, otherwise one of the rest.

  Without `metrics`, `fitness` and `confidence` are taken as given (confidence 0 if absent: all
  equally confident, so exploiting means picking from the top quartile by fitness).
  """
  return candidates[_parent_index(key, candidates, exploit_prob, top_fraction, seed_prob, rungs,
                                  zeroshot_weight)]


def select_parents(key: jax.Array, candidates: Sequence[Design], n: int, exploit_prob: float = 0.8,
                   top_fraction: float = 0.25, seed_prob: float = 0.05, rungs: Sequence[str] | None = None,
                   zeroshot_weight: float = 0.5) -> list[Design]:
  """`n` parents (e.g. for a crossover) by `select_parent`, distinct while candidates remain.

  Each draw ranks the candidates not yet drawn, so quadrants shift as the best are taken."""
  chosen: list[int] = []
  for i in range(n):
    left = [j for j in range(len(candidates)) if j not in chosen] or list(range(len(candidates)))
    pick = _parent_index(jax.random.fold_in(key, i), [candidates[j] for j in left], exploit_prob,
                         top_fraction, seed_prob, rungs, zeroshot_weight)
    chosen.append(left[pick])
  return [candidates[j] for j in chosen]


def promotion_candidates(designs: Sequence[Design], below: str, rung: str, top_fraction: float = 0.25,
                         min_seen: int = 3, zeroshot_weight: float = 0.5) -> list[Design]:
  """The designs that may be promoted from rung `below` to `rung`, best first (genesys_jax/ladder.py).

  A candidate is discovered (not `is_seed`), `verified`, has a result at `below` and none at
  `rung`, and ranks in the top ceil(top_fraction x n) of the n designs with a result at `below`,
  baselines included, by its score there (`rung_scores`; its rank: 1 + the designs scoring higher).
  There is none until n >= min_seen. Ties keep the order given."""
  scores = rung_scores(designs, below, zeroshot_weight)
  if len(scores) < min_seen:
    return []
  top = max(1, math.ceil(top_fraction * len(scores)))
  out = []
  for d in sorted((d for d in designs if d["id"] in scores), key=lambda d: -scores[d["id"]]):
    rank = 1 + sum(s > scores[d["id"]] for s in scores.values())
    if (rank <= top and not d.get("is_seed") and d.get("status") == "verified"
        and rung not in d.get("metrics", {})):
      out.append(d)
  return out


def pick_promotion(key: jax.Array, candidates: Sequence[Design], exploit_prob: float = 0.8) -> Design:
  """The first (best) candidate with probability `exploit_prob`, else one of the others."""
  k_mode, k_pick = jax.random.split(key)
  if len(candidates) == 1 or bool(jax.random.uniform(k_mode) < exploit_prob):
    return candidates[0]
  return _pick(k_pick, list(candidates[1:]))
