"""The propose stage: proposal `index` of the run, as a `Proposal` (nothing recorded).

Each proposal draws from its own key (evolution/streams.py): which designer makes it (`designer`),
which island its parents come from (`island`), then, per try, GP's mode and parents (`draw`: what
an LLM designer works on too) and the operator's child (`propose`). A child whose canonical form is
already stored is drawn again, up to `evolution.max_retries` tries. Everything is read from the run
state (genesys_jax/state.py): the pool's rows, the known canonical ids, and the parents' trees.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

from evolution import canonical, operators, selection, streams
from gab.tree import Unit
from genesys_jax import islands
from genesys_jax.check import Verdict
from genesys_jax.state import RunState

PARENTS_PER_MODE = {"scratch": 0, "mutation": 1, "crossover": 2}


@dataclasses.dataclass(frozen=True)
class Draw:
  """GP's choice for one try of a proposal, before any child exists."""
  mode: str
  parents: tuple[dict[str, Any], ...]  # the selected designs' rows (state.RunState.designs)
  key: jax.Array                       # the operator's key
  pool_size: int                       # designs selectable (on the island, with islands)


@dataclasses.dataclass(frozen=True)
class Proposal:
  index: int
  tree: Unit | None               # None: an LLM designer ended without a design
  parents: tuple[str, ...]        # the parents the child was made from (a fallback may use fewer)
  mode: str                       # scratch | mutation | crossover
  description: str
  designer: str = "gp"            # gp | llm | direct
  island: int | None = None       # with islands: where its parents came from, where it lives
  verdict: Verdict | None = None  # an LLM designer's own check (its retries need it); GP: `check`
  units: dict[str, str] = dataclasses.field(default_factory=dict)    # code unit sources it carries
  artifacts: dict[str, Any] = dataclasses.field(default_factory=dict)  # an LLM designer's record
  tries: int = 1                  # GP draws it took (a child already stored is drawn again)


def designer(state: RunState, index: int) -> str:
  """Who makes proposal `index`: gp, llm or direct (mixed: `designer.llm_prob` of them by llm)."""
  d = state.config.designer
  if d.kind != "mixed":
    return d.kind
  draw = jax.random.uniform(streams.of_proposal(state.key, "designer", index))
  return "llm" if float(draw) < float(d.llm_prob) else "gp"


def island(state: RunState, index: int) -> int | None:
  """The island proposal `index` comes from (None without islands)."""
  if state.islands is None:
    return None
  return islands.choose(state.key, index, state.islands, state.config.designer.kind == "mixed")


def pool(state: RunState, island_: int | None) -> list[dict[str, Any]]:
  """The designs parents are selected from: on the island, with islands."""
  out = state.pool()
  return out if island_ is None else islands.restrict(out, state.islands, island_)


def draw(state: RunState, index: int, attempt: int, pool_: list[dict[str, Any]]) -> Draw:
  """GP's mode and parents for try `attempt` of proposal `index`, and the operator's key."""
  evo = state.config.evolution
  k_mode, k_select, k_op = jax.random.split(streams.attempt(state.key, index, attempt), 3)
  mode = operators.choose_mode(k_mode, dict(evo.mode_probs), len(pool_), len(pool_))
  n = PARENTS_PER_MODE[mode]
  parents = selection.select_parents(
      k_select, pool_, n, evo.exploit_prob, evo.top_fraction, evo.seed_prob, state.rungs,
      evo.zeroshot_weight) if n else []
  return Draw(mode, tuple(parents), k_op, len(pool_))


def propose(state: RunState, index: int) -> Proposal:
  """GP's proposal `index`: a child of the drawn parents by the drawn mode, never a design already
  stored (by canonical form)."""
  evo = state.config.evolution
  where = island(state, index)
  pool_ = pool(state, where)
  bounds = operators.Bounds.from_config(evo)
  for attempt in range(evo.max_retries):
    d = draw(state, index, attempt, pool_)
    trees = [state.trees(p["id"]) for p in d.parents]
    child, mode, description = operators.propose(d.key, trees, dict(evo.mode_probs), d.pool_size,
                                                 bounds, mode=d.mode)
    if canonical.canonical_id(child) not in state.known:
      used = {"scratch": 0, "mutation": 1}.get(mode, len(d.parents))  # what a fallback really used
      return Proposal(index, child, tuple(p["id"] for p in d.parents[:used]), mode, description,
                      island=where, tries=attempt + 1)
  raise RuntimeError(f"proposal {index}: {evo.max_retries} tries gave only designs already in the "
                     f"store; raise evolution.max_retries")


def line(index: int, n: int, design_id: str, mode: str, parents, description: str, outcome: str) -> str:
  """A proposal's log line: `[i/n] ID MODE from PARENTS (DESCRIPTION): OUTCOME`."""
  return f"[{index + 1}/{n}] {design_id} {mode} from {','.join(parents) or '-'} ({description}): {outcome}"
