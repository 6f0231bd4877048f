"""What each role answers: pydantic response schemas for the structured roles (sent as Gemini's
`response_schema`, and used to re-validate every reply's text: `.parsed` is silently None on bad
JSON), and the parser of the coder's free-text answer (the unit in a ```python block).

Where the answer is one of a known set (a unit role; the unit a mutation changes), the schema says
so with an enum: Gemini honours it, and a grammar-constrained local model cannot answer otherwise.
The coder answers in Markdown rather than JSON: code inside a JSON string has to be escaped line by
line, which measurably hurts a model's code (BENCHMARKS.md, "Coder reply format").
"""

from __future__ import annotations

import ast
import json
import re
from typing import Literal

import pydantic

from gab import registry

RoleName = Literal[tuple(registry.ROLES)]  # type: ignore[valid-type]


IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]{0,39}$"
CHILD = r"^(keep:[0-9]+:[0-9.]+|[A-Za-z_][A-Za-z0-9_]*(@[0-9a-f]{8})?)$"


def text(n: int):
  """A string field of at most `n` characters: Gemini and a grammar-constrained model both stop
  there, so a model that rambles cannot spend its whole output cap on one field."""
  return pydantic.Field(max_length=n)


class Proposal(pydantic.BaseModel):
  title: str = pydantic.Field(pattern=IDENTIFIER)   # the new design's name
  abstract: str = text(600)
  motivation: str = text(600)
  plan: str = text(1000)
  selection: str             # mutation: the path of the unit to change, e.g. "0.0.1" ("" otherwise)
  variant_name: str = text(60)


def proposal_schema(paths: list[str]) -> type[Proposal]:
  """`Proposal` whose `selection` must be one of `paths` (a mutation's candidate units)."""
  return pydantic.create_model("Proposal", __base__=Proposal,
                               selection=(Literal[tuple(paths)], ...))  # type: ignore[valid-type]


class Rating(pydantic.BaseModel):
  rating: int = pydantic.Field(ge=1, le=5)
  review: str = text(800)
  suggestions: str = text(600)


class PlannedUnit(pydantic.BaseModel):
  name: str = pydantic.Field(pattern=IDENTIFIER)   # the code unit's KIND name
  role: RoleName             # type: ignore[valid-type]
  description: str = text(400)
  children: list[pydantic.constr(pattern=CHILD)] = pydantic.Field(max_length=6)  # planned units,
  #                                                   reused kinds or keep:P:PATH, in order


class Plan(pydantic.BaseModel):
  units: list[PlannedUnit] = pydantic.Field(min_length=1, max_length=6)   # the first is the top;
  #                                                                         coded top-down
  rationale: str = text(400)


class ChildDecl(pydantic.BaseModel):
  """A child the coder declares for its unit: a planned unit, an existing kind, keep:P:PATH, or a
  new unit (then `role` and `description` plan it; it is written after its parent)."""
  name: str
  role: RoleName = "block"   # type: ignore[valid-type]
  description: str = ""


SCHEMAS = {c.__name__: c for c in (Proposal, Rating, Plan)}


def validate(schema: type[pydantic.BaseModel], text: str | None):
  """(instance, None) or (None, one-paragraph error message naming what is wrong)."""
  if text is None:
    return None, "the reply had no text"
  try:
    return schema.model_validate_json(text), None
  except pydantic.ValidationError as e:
    problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'reply'}: {err['msg']}"
                         for err in e.errors()[:5])
    return None, f"the reply is not a valid {schema.__name__} JSON object: {problems}"


_BLOCK = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)(?:```|\Z)", re.S)
_FENCE = re.compile(r"^[ \t]*```[ \t]*([A-Za-z0-9_+-]*)[ \t]*$", re.M)
_KIND = re.compile(r"^KIND\s*=", re.M)
PYTHON = ("python", "py", "")


def _parses(source: str) -> bool:
  try:
    ast.parse(source)   # parsing runs nothing
    return True
  except (SyntaxError, ValueError, RecursionError, MemoryError):
    return False


def _nested_unit(text: str) -> str | None:
  """The shortest text between a python fence line and any later fence line that defines KIND and
  parses: a model may put a fenced example inside its unit's docstring, so fences do not always
  pair in order (found in a real coder's reply, whose prose was then linted as its code)."""
  fences = list(_FENCE.finditer(text))
  spans = [text[a.end():b.start() if b else len(text)].lstrip("\n")
           for i, a in enumerate(fences) if a.group(1).lower() in PYTHON for b in fences[i + 1:] + [None]]
  units = [body for body in spans if _KIND.search(body) and _parses(body)]
  return min(units, key=len) if units else None


def code_reply(text: str | None) -> tuple[str | None, list[ChildDecl] | None, str | None]:
  """(source, declared children or None, error) of a coder's Markdown answer: the last ```python
  block that defines KIND and parses, else the unit found by `_nested_unit`, else the last block
  that defines KIND, else the last python block (for the lint to report on); and an optional
  ```json list of children."""
  if not text:
    return None, None, "the reply had no text"
  blocks = _BLOCK.findall(text)
  python = [body for lang, body in blocks if lang.lower() in PYTHON]
  with_kind = [b for b in python if _KIND.search(b)]
  parsed = [b for b in with_kind if _parses(b)]
  source = parsed[-1] if parsed else _nested_unit(text) or (with_kind or python or [None])[-1]
  if source is None:
    return None, None, "the reply has no ```python code block"
  children = None
  for lang, body in blocks:
    if lang.lower() == "json":
      try:
        data = json.loads(body)
        data = data.get("children", data) if isinstance(data, dict) else data
        children = pydantic.TypeAdapter(list[ChildDecl]).validate_python(data)
      except (ValueError, pydantic.ValidationError) as e:
        return None, None, (f"the ```json block must be a list of children "
                            f"[{{\"name\": ..., \"role\": ..., \"description\": ...}}]: {str(e)[:300]}")
  return source.rstrip() + "\n", children, None
