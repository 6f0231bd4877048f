"""Config fields, each defined once: its default, the rule its value obeys, its help, and whether
changing it changes what a run's results mean.

A config section is a frozen dataclass whose fields are declared with `field(...)`, nested
sections with `section(Cls, help)` and named sets of one section (the ladder's rungs) with
`table(Cls, help)`:

  @dataclasses.dataclass(frozen=True)
  class JobsConfig:
    generation: int = fields.field(1, "proposals per generation", fields.integer(1))
    poll_s: float = fields.field(0.5, "how often a waiting process looks at the queue",
                                 fields.number(0.0, lo_open=True), results=False)

From the class come
- `defaults(Cls)`: its `ml_collections.ConfigDict` of defaults, what configs/ladder.py assembles and
  `--config.jobs.poll_s=1` overrides;
- `errors(Cls, node, "config.jobs")`: one line per invalid value (`config.jobs.poll_s = -1: expected
  a number > 0`), per unknown or missing field, and the section's own cross-field rules (an optional
  `problems(self) -> list[str]` method of the record, run once every field is valid, whose lines
  continue the section's path: `" sums to 1.2: ..."`, `".batch_size = 8: ..."`);
- `record(Cls, node)`: the typed record of a valid section;
- `walk(Cls)`: (path, Field) of every field, e.g. the result-affecting ones; `lookup(Cls, path)`: the
  one at a path (`rungs.tiny.lr`).

`results=True` (the default) marks a field whose change alters what a run's results mean (budgets,
data, vocabulary, seeds, sizes, thresholds); `results=False` one that changes only how the run is
carried out or shown (worker counts, poll intervals, logging, checkpoint cadence, endpoints) or how
long it goes (the number of proposals, the API budget). A resumed run may change only the latter
(genesys_jax/resume.py).
Adding a field is one line in its section's class. Pure Python: no JAX.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Iterator

Rule = Callable[[Any], "str | None"]  # None when the value fits, else what was expected
_META = "genesys_field"


@dataclasses.dataclass(frozen=True)
class Field:
  help: str
  rule: Rule | None = None       # None: a nested section or a table
  results: bool = True           # whether a change alters what results mean
  derived: str = ""              # set by the run from this other field (genesys_jax/resolve.py)
  section: type | None = None    # a nested section's class
  table: bool = False            # a mapping of names to sections of class `section`


def field(default: Any, help: str, rule: Rule, *, results: bool = True, derived: str = "") -> Any:
  """A field with a default (immutable: a number, string, bool or tuple)."""
  return dataclasses.field(default=default, metadata={_META: Field(help, rule, results, derived)})


def section(cls: type, help: str) -> Any:
  """A nested section (its own fields carry `results`)."""
  return dataclasses.field(default_factory=cls, metadata={_META: Field(help, section=cls)})


def table(cls: type, help: str) -> Any:
  """Named sections of one class (e.g. `rungs.tiny`, `rungs.small`); none by default."""
  return dataclasses.field(default_factory=dict, metadata={_META: Field(help, section=cls, table=True)})


def definitions(cls: type) -> dict[str, tuple[Field, Any]]:
  """name -> (Field, default) of a section's fields, in declaration order."""
  out = {}
  for f in dataclasses.fields(cls):
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    out[f.name] = (f.metadata[_META], default)
  return out


def defaults(cls: type):
  """The section's ConfigDict of defaults (tables empty)."""
  import ml_collections  # pylint: disable=g-import-not-at-top  (only here: validation needs no ml_collections)
  out = ml_collections.ConfigDict()
  for name, (spec, default) in definitions(cls).items():
    if spec.table:
      out[name] = ml_collections.ConfigDict()
    elif spec.section is not None:
      out[name] = defaults(spec.section)
    else:
      out[name] = default
  return out


def walk(cls: type, prefix: str = "") -> Iterator[tuple[str, Field]]:
  """(dotted path, Field) of every leaf field; a table's fields as `name.*.field`."""
  for name, (spec, _) in definitions(cls).items():
    path = f"{prefix}.{name}" if prefix else name
    if spec.section is not None:
      yield from walk(spec.section, f"{path}.*" if spec.table else path)
    else:
      yield path, spec


def lookup(cls: type, path: str) -> tuple[Field, Any] | None:
  """(Field, default) of the leaf field at dotted `path` (a table's entry by any name:
  `rungs.tiny.lr`), or None when no field has that path."""
  head, _, rest = path.partition(".")
  found = definitions(cls).get(head)
  if found is None:
    return None
  spec, default = found
  if spec.section is None:
    return None if rest else found
  if spec.table:
    _, _, rest = rest.partition(".")
  return lookup(spec.section, rest) if rest else None


def _is_mapping(node: Any) -> bool:
  return hasattr(node, "keys") and hasattr(node, "__getitem__")


def _fmt(value: Any) -> str:
  if isinstance(value, (list, tuple)):
    return repr(tuple(value))
  if hasattr(value, "to_dict"):
    return repr(value.to_dict())
  return repr(value)


def errors(cls: type, node: Any, path: str, skip: tuple[str, ...] = ()) -> list[str]:
  """One line per invalid, unknown or missing field of `node` (a section of class `cls` at `path`),
  then the section's `problems()` if every field is valid. Fields named in `skip` are left out."""
  if not _is_mapping(node):
    return [f"{path} = {_fmt(node)}: expected a section with fields {', '.join(definitions(cls))}"]
  specs = definitions(cls)
  out = []
  for name in node.keys():
    if name not in specs and name not in skip:
      out.append(f"{path}.{name}: unknown field{_elsewhere(cls, name)} (fields here: "
                 f"{', '.join(specs)})")
  for name, (spec, default) in specs.items():
    if name in skip:
      continue
    where = f"{path}.{name}"
    if name not in node:
      out.append(f"{where}: missing (expected {spec.help}; default {_fmt(default)})")
    elif spec.table:
      value = node[name]
      if not _is_mapping(value):
        out.append(f"{where} = {_fmt(value)}: expected named sections")
        continue
      for entry in value.keys():
        out += errors(spec.section, value[entry], f"{where}.{entry}")
    elif spec.section is not None:
      out += errors(spec.section, node[name], where)
    elif (expected := spec.rule(node[name])) is not None:
      out.append(f"{where} = {_fmt(node[name])}: expected {expected}")
    elif spec.derived and node[name] != default:
      out.append(f"{where} = {_fmt(node[name])}: a run sets it from {spec.derived}; set that "
                 f"instead and leave this at {_fmt(default)}")
  if not out and hasattr(cls, "problems"):
    out += [f"{path}{line}" for line in record(cls, node).problems()]
  return out


def _elsewhere(cls: type, name: str) -> str:
  moved = getattr(cls, "ELSEWHERE", {}).get(name)
  return f" (it is {moved})" if moved else ""


def record(cls: type, node: Any):
  """The typed record of a valid section (nested sections and tables as records too)."""
  values = {}
  for name, (spec, _) in definitions(cls).items():
    value = node[name]
    if spec.table:
      value = {k: record(spec.section, value[k]) for k in value.keys()}
    elif spec.section is not None:
      value = record(spec.section, value)
    elif isinstance(value, list):
      value = tuple(value)
    values[name] = value
  return cls(**values)


# -- rules: each returns None when the value fits, else what was expected --------------------------
def _is_int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def integer(lo: int | None = None, hi: int | None = None, also: tuple = ()) -> Rule:
  def rule(v):
    if _is_int(v) and (v in also or ((lo is None or v >= lo) and (hi is None or v <= hi))):
      return None
    rng = (f" >= {lo}" if hi is None else f" in [{lo}, {hi}]") if lo is not None else ""
    return f"an integer{rng}{''.join(f' or {a}' for a in also)}"
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


def boolean(v):
  return None if isinstance(v, bool) else "true or false"


def one_of(*choices: str) -> Rule:
  return lambda v: None if v in choices else f"one of {', '.join(map(repr, choices))}"


def strings(v):
  if isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v):
    return None
  return "a tuple of strings"
