"""Zero-shot task files: JSON lines in the standard layouts, read into scoring requests.

Four layouts, told apart by their fields (the first line decides; every line must match it):
- `blimp`: `sentence_good`, `sentence_bad` (BLiMP minimal pairs). Each sentence is scored as a
  whole, with an empty context; right when log P(good) > log P(bad).
- `choice`: `query`, `choices`, `gold` (COPA, PIQA, ARC). log P(choice | query) per choice.
- `partial`: `context_options`, `continuation`, `gold` (WinoGrande, WSC: partial scoring).
  log P(continuation | option) per context option.
- `lambada`: `context`, `continuation` (LAMBADA). The target must be the greedy continuation.

Joining context and continuation follows the harness convention: a single space goes between
them, as the first character of the continuation (so it is scored), unless the context is empty,
the context already ends with whitespace (PIQA's queries end with a newline) or the continuation
starts with whitespace. Length normalisation (acc_norm, reported for `choice` tasks only) divides
by the UTF-8 bytes of the choice itself, without that space.
"""

from __future__ import annotations

import dataclasses
import json
import os

FORMATS = {
    "blimp": ("sentence_good", "sentence_bad"),
    "choice": ("query", "choices", "gold"),
    "partial": ("context_options", "continuation", "gold"),
    "lambada": ("context", "continuation"),
}
_EXPECTED = "; ".join(f"{name}: {', '.join(fields)}" for name, fields in FORMATS.items())


@dataclasses.dataclass(frozen=True)
class Example:
  """One question: a (context, continuation) request per candidate and the right candidate."""
  requests: tuple[tuple[str, str], ...]
  norm_bytes: tuple[int, ...]  # UTF-8 bytes each candidate's log-likelihood is divided by (acc_norm)
  gold: int


@dataclasses.dataclass(frozen=True)
class Task:
  name: str    # the file's stem
  format: str  # a key of FORMATS
  path: str
  examples: tuple[Example, ...]


def join(context: str, continuation: str) -> tuple[str, str]:
  """(context, continuation) with the harness's single-space delimiter moved into the latter."""
  if context and not context[-1].isspace() and not continuation[:1].isspace():
    continuation = " " + continuation
  return context, continuation


def _nbytes(text: str) -> int:
  return max(1, len(text.encode("utf-8")))


def detect_format(row: dict) -> str | None:
  for name, fields in FORMATS.items():
    if all(f in row for f in fields):
      return name
  return None


class _LineError(ValueError):
  pass


def _text(row: dict, field: str) -> str:
  value = row[field]
  if not isinstance(value, str):
    raise _LineError(f"field {field!r} must be a string, got {type(value).__name__}")
  return value


def _texts(row: dict, field: str) -> list[str]:
  value = row[field]
  if not isinstance(value, list) or len(value) < 2 or not all(isinstance(v, str) for v in value):
    raise _LineError(f"field {field!r} must be a list of at least 2 strings")
  return value


def _gold(row: dict, n: int) -> int:
  gold = row["gold"]
  if isinstance(gold, bool) or not isinstance(gold, int) or not 0 <= gold < n:
    raise _LineError(f"field 'gold' must be an integer in [0, {n}), got {gold!r}")
  return gold


def _nonempty(text: str, field: str) -> str:
  if not text.strip():
    raise _LineError(f"field {field!r} must not be empty")
  return text


def parse_example(fmt: str, row: dict) -> Example:
  """The Example of one parsed line in format `fmt` (_LineError if its fields are malformed)."""
  if fmt == "blimp":
    good = _nonempty(_text(row, "sentence_good"), "sentence_good")
    bad = _nonempty(_text(row, "sentence_bad"), "sentence_bad")
    return Example((("", good), ("", bad)), (_nbytes(good), _nbytes(bad)), 0)
  if fmt == "choice":
    query, choices = _text(row, "query"), _texts(row, "choices")
    for c in choices:
      _nonempty(c, "choices")
    return Example(tuple(join(query, c) for c in choices), tuple(_nbytes(c) for c in choices),
                   _gold(row, len(choices)))
  if fmt == "partial":
    options = _texts(row, "context_options")
    cont = _nonempty(_text(row, "continuation"), "continuation")
    return Example(tuple(join(o, cont) for o in options), (_nbytes(cont),) * len(options),
                   _gold(row, len(options)))
  if fmt == "lambada":
    cont = _nonempty(_text(row, "continuation"), "continuation")
    return Example((join(_text(row, "context"), cont),), (_nbytes(cont),), 0)
  raise ValueError(f"unknown format {fmt!r}: expected one of {sorted(FORMATS)}")


def load_task(path: str, limit: int | None = None) -> Task:
  """Reads a JSON-lines task file (the first `limit` examples if given).

  Raises a one-line ValueError naming the file and line for anything it cannot score.
  """
  fmt, examples = None, []
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
      if limit is not None and len(examples) >= limit:
        break
      if not line.strip():
        continue
      where = f"{path}:{lineno}"
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not a JSON object ({e.msg}); expected fields of "
                         f"{_EXPECTED}") from None
      if not isinstance(row, dict):
        raise ValueError(f"{where}: not a JSON object; expected fields of {_EXPECTED}")
      line_fmt = detect_format(row)
      if line_fmt is None or (fmt is not None and line_fmt != fmt):
        want = f"the {fmt} fields {', '.join(FORMATS[fmt])}" if fmt else f"fields of {_EXPECTED}"
        raise ValueError(f"{where}: expected {want}; got fields {sorted(row)}")
      fmt = line_fmt
      try:
        examples.append(parse_example(fmt, row))
      except _LineError as e:
        raise ValueError(f"{where}: {e}") from None
  if not examples:
    raise ValueError(f"{path}:1: no examples; expected JSON lines with fields of {_EXPECTED}")
  name = os.path.splitext(os.path.basename(path))[0]
  return Task(name, fmt, path, tuple(examples))
