"""The Ladder of Scales: how many designs each rung may verify, when its slots open, and who takes them.

The top rung gets `n_target` slots; each lower rung gets the next rung's budget divided by `ratio`
(0.25 in the original: 350M:1, 125M:4, 70M:16, 31M:64, 14M:256). Every valid design is verified at
the lowest rung regardless of its budget (the original's `verify_all`); the seeds are trained on
every rung as baselines, outside the budget.

Promotion waits for evidence. A rung's slots open as results come in at the rung below, in
proportion to the share of that rung's expected designs seen (`opened`: the lowest rung expects
every proposal of the run, a higher rung its budget), and all of them once the rung below is final
(every proposal made, and nothing more can be promoted to it). A slot goes to a design in the top
`top_fraction` of the rung below, ranked among every design with a result there, baselines
included, once at least `min_seen` have one (`evolution.selection.promotion_candidates`): the best
of them with probability `exploit_prob`, another of them otherwise. The controller promotes one
design at a time at its barriers, so what it picks depends on the results recorded, never on which
worker finished first.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

from evolution import selection
from gab import fields


@dataclasses.dataclass(frozen=True)
class LadderConfig:
  """The `ladder` config section (the rungs themselves are `config.rungs`, train/rung.py)."""
  rungs: tuple = fields.field((), "rung names, lowest first (each a key of config.rungs)", fields.strings)
  n_target: int = fields.field(1, "slots of the top rung", fields.integer(1))
  ratio: float = fields.field(0.5, "each lower rung gets its upper neighbour's slots / ratio",
                              fields.number(0.0, 1.0, lo_open=True))
  exploit_prob: float = fields.field(0.8, "promote the best candidate this often (else another "
                                     "candidate)", fields.probability)
  top_fraction: float = fields.field(0.25, "a candidate for promotion ranks in this top fraction of "
                                     "its rung, baselines included", fields.number(0.0, 1.0, lo_open=True))
  min_seen: int = fields.field(3, "designs (baselines included) with a result at a rung before any is "
                               "promoted from it", fields.integer(1))

  def problems(self) -> list[str]:
    if not self.rungs:
      return [".rungs = (): expected at least one rung name"]
    if len(set(self.rungs)) != len(self.rungs):
      return [f".rungs = {self.rungs!r}: expected each rung once"]
    return []


def budgets(n_rungs: int, n_target: int, ratio: float) -> list[int]:
  """Slots per rung, lowest first."""
  if n_rungs < 1 or n_target < 1 or not 0 < ratio <= 1:
    raise ValueError(f"ladder needs n_rungs >= 1, n_target >= 1 and 0 < ratio <= 1; got "
                     f"{n_rungs}, {n_target}, {ratio}")
  out = [n_target]
  for _ in range(n_rungs - 1):
    out.append(int(math.floor(out[-1] / ratio + 1e-9)))
  return out[::-1]


def opened(budget: int, seen_below: int, expected_below: int, final_below: bool) -> int:
  """Slots of a rung open when `seen_below` of the `expected_below` designs the rung below will
  have got a result there: in proportion, and all once the rung below is final."""
  if final_below:
    return budget
  return min(budget, int(math.floor(budget * seen_below / max(expected_below, 1) + 1e-9)))


def promotion(designs: Sequence[dict[str, Any]], rungs: Sequence[str], lad, n_proposals: int,
              proposals_done: int, zeroshot_weight: float) -> tuple[int, list[dict[str, Any]]] | None:
  """(index of the rung to promote to, its candidates best first) for the lowest rung with an open
  slot and a candidate, or None. `designs`: selection rows (evolution/selection.py), seeds
  included; `lad`: the ladder config; called at a barrier (every result so far recorded)."""
  discovered = [d for d in designs if not d.get("is_seed")]
  budget = budgets(len(rungs), lad.n_target, lad.ratio)
  used = [sum(r in d["metrics"] for d in discovered) for r in rungs]
  final = proposals_done >= n_proposals  # the lowest rung gets no more results
  for i in range(1, len(rungs)):
    expected = n_proposals if i == 1 else budget[i - 1]
    candidates = selection.promotion_candidates(designs, rungs[i - 1], rungs[i], lad.top_fraction,
                                                lad.min_seen, zeroshot_weight)
    if candidates and used[i] < opened(budget[i], used[i - 1], expected, final):
      return i, candidates
    final = final and (used[i] >= budget[i] or not candidates)
  return None
