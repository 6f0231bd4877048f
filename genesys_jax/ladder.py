"""The Ladder of Scales: how many designs each rung may verify, and when its slots open.

The top rung gets `n_target` slots; each lower rung gets the next rung's budget divided by `ratio`
(0.25 in the original: 350M:1, 125M:4, 70M:16, 31M:64, 14M:256). Slots open dynamically: rung
i+1 releases one slot for every 1/ratio designs verified at rung i, so the expensive rungs only
spend compute once the cheaper ones have sifted enough candidates. Every valid design is verified
at the lowest rung regardless of its budget (the original's `verify_all`).
"""

from __future__ import annotations

import dataclasses
import math

from gab import fields


@dataclasses.dataclass(frozen=True)
class LadderConfig:
  """The `ladder` config section (the rungs themselves are `config.rungs`, train/rung.py)."""
  rungs: tuple = fields.field((), "rung names, lowest first (each a key of config.rungs)", fields.strings)
  n_target: int = fields.field(1, "slots of the top rung", fields.integer(1))
  ratio: float = fields.field(0.5, "each lower rung gets its upper neighbour's slots / ratio",
                              fields.number(0.0, 1.0, lo_open=True))
  exploit_prob: float = fields.field(0.8, "promote a good & unconfident design this often",
                                     fields.probability)

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


def released(budget: list[int], used: list[int], ratio: float) -> list[int]:
  """Slots open per rung given the verifications `used` so far (dynamic release)."""
  out = [budget[0]]
  for i in range(1, len(budget)):
    out.append(min(budget[i], int(math.floor(used[i - 1] * ratio + 1e-9))))
  return out


def next_rung(budget: list[int], used: list[int], ratio: float) -> int | None:
  """The lowest rung above the first with an open, unused slot, or None."""
  open_slots = released(budget, used, ratio)
  for i in range(1, len(budget)):
    if used[i] < open_slots[i]:
      return i
  return None
