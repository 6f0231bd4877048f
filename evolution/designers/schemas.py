"""Pydantic response schemas, one per role, sent as Gemini's `response_schema` and used to
re-validate every reply's text (`.parsed` is silently None on bad JSON; `validate` gives the
message that goes back into the retry prompt)."""

from __future__ import annotations

import pydantic


class Proposal(pydantic.BaseModel):
  title: str                 # the new design's name (an identifier-like word)
  abstract: str
  motivation: str
  plan: str
  selection: str             # mutation: the path of the unit to change, e.g. "0.0.1" ("" otherwise)
  variant_name: str


class Rating(pydantic.BaseModel):
  rating: int                # 1..5
  review: str
  suggestions: str


class PlannedUnit(pydantic.BaseModel):
  name: str                  # identifier; the code unit's KIND name
  role: str                  # sequence_mixer | channel_mixer | norm | block
  description: str
  children: list[str]        # names of other planned units, reused kinds, or "keep:<path>" subtrees


class Plan(pydantic.BaseModel):
  units: list[PlannedUnit]   # the first is the top of the new material; implemented in reverse
  rationale: str


class CodeReply(pydantic.BaseModel):
  source: str                # one code unit (module docstring, KIND literal, one UnitModule class)
  notes: str


class DirectReply(pydantic.BaseModel):
  title: str
  abstract: str
  source: str                # the whole block as one code unit of role "block"


SCHEMAS = {c.__name__: c for c in (Proposal, Rating, Plan, CodeReply, DirectReply)}


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
