"""The `evolution` config section: how many proposals, how the GP operators draw them, how parents
are selected, and the islands."""

from __future__ import annotations

import dataclasses

from gab import fields

MODES = ("scratch", "mutation", "crossover")
# A proposal's index and its tries are folded into the run's key (evolution/streams.py): both stay
# below the named streams' salts.
MAX_PROPOSALS = 1 << 27
MAX_RETRIES = 1 << 20


@dataclasses.dataclass(frozen=True)
class ModeProbs:
  """How often each GP mode is drawn (summing to 1)."""
  scratch: float = fields.field(0.15, "probability of a design from scratch", fields.probability)
  mutation: float = fields.field(0.60, "probability of a mutation of one parent", fields.probability)
  crossover: float = fields.field(0.25, "probability of a crossover of two parents", fields.probability)

  def problems(self) -> list[str]:
    probs = {m: getattr(self, m) for m in sorted(MODES)}
    if abs(sum(probs.values()) - 1.0) <= 1e-6:
      return []
    parts = " + ".join(f"{m} {p:g}" for m, p in probs.items())
    return [f" sums to {sum(probs.values()):g} ({parts}): expected probabilities summing to 1"]


@dataclasses.dataclass(frozen=True)
class EvolutionConfig:
  n_proposals: int = fields.field(12, "proposals of the run (raise it and rerun to extend a run)",
                                  fields.integer(0, MAX_PROPOSALS), results=False)
  max_retries: int = fields.field(32, "draws per proposal before giving up on a child never stored",
                                  fields.integer(1, MAX_RETRIES))
  mode_probs: ModeProbs = fields.section(ModeProbs, "the GP modes' probabilities")
  exploit_prob: float = fields.field(0.8, "a parent from the good & confident quadrant this often",
                                     fields.probability)
  top_fraction: float = fields.field(0.25, "the good / confident quadrants' share",
                                     fields.number(0.0, 1.0, lo_open=True))
  seed_prob: float = fields.field(0.05, "a seed as parent this often", fields.probability)
  zeroshot_weight: float = fields.field(0.5, "the zero-shot results' weight in a rung's score",
                                        fields.probability)
  max_depth: int = fields.field(8, "deepest unit tree an operator may make", fields.integer(1))
  max_size: int = fields.field(32, "most units an operator may put in a tree", fields.integer(1))
  islands: int = fields.field(0, "sub-populations (0: one population)", fields.integer(0))
  migrate_every: int = fields.field(4, "with islands: proposals between migrations", fields.integer(0))
