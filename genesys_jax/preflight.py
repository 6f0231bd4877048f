"""What a run needs, checked before it writes anything.

`check(config, config_json, workdir, corpus)` raises one clear error (a ValueError or OSError whose
message names the field or path and what was expected) for, in this order:
- the workdir: its parent folder must exist (a typo there would create a tree of folders silently),
  and the workdir itself, if it exists, must be a folder;
- a resumed run whose config changes what its results mean (genesys_jax/resume.py), or a branch that
  cannot be made (genesys_jax/branch.py);
- the seeds (`config.seeds`: names of gab.seeds or readable design files);
- the hand-written code units (`config.units.files`: each glob matches, each file passes the lint);
- the corpus (`config.data.corpus`), which is prepared here on first use: into the data cache
  (`$GENESYS_DATA_DIR`), never the workdir.
It returns the harmless config changes a resumed run applies.
"""

from __future__ import annotations

import os
from typing import Callable

import ml_collections

from genesys_jax import branch, code_units, resume


def _workdir(workdir: str) -> None:
  path = os.path.abspath(workdir)
  parent = os.path.dirname(path)
  if not os.path.isdir(parent):
    raise ValueError(f"workdir {workdir}: its parent folder {parent} does not exist (create it first, "
                     f"or choose another --workdir)")
  if os.path.exists(path) and not os.path.isdir(path):
    raise ValueError(f"workdir {workdir} is a file, not a folder")


def _source(workdir: str, config: ml_collections.ConfigDict, config_json: str) -> list[resume.Change]:
  """The harmless changes of resuming the run in `workdir`, or none for a new run or a branch."""
  if config.branch_from and not os.path.exists(os.path.join(workdir, branch.STORE)):
    branch.check_source(config.branch_from, workdir, config.store.url)
    return []
  return resume.check(config_json, workdir)


def _seeds(config: ml_collections.ConfigDict) -> None:
  for name in config.seeds:
    try:
      code_units.seed(name)  # a design file's code units are declared here, not run
    except (ValueError, OSError) as e:
      raise ValueError(f"config.seeds: {name!r}: {getattr(e, 'strerror', None) or e}") from None


def _units(config: ml_collections.ConfigDict) -> None:
  try:
    code_units.declare_files(config.units.files)
  except (ValueError, OSError) as e:
    text = str(getattr(e, "strerror", None) or e)
    raise ValueError("config." + (text if text.startswith("units.files") else f"units.files: {text}")
                     ) from None


def _corpus(config: ml_collections.ConfigDict, corpus: Callable[[], object]) -> None:
  try:
    corpus()
  except (ValueError, FileNotFoundError) as e:
    raise ValueError(f"config.data.corpus = {config.data.corpus!r}: {e}") from None


def check(config: ml_collections.ConfigDict, config_json: str, workdir: str,
          corpus: Callable[[], object]) -> list[resume.Change]:
  """Raise the first problem a run of the resolved `config` on `workdir` would meet (see the module
  doc); the harmless changes of a resumed run. `corpus()` loads (and on first use prepares) it."""
  _workdir(workdir)
  changed = _source(workdir, config, config_json)
  _seeds(config)
  _units(config)
  _corpus(config, corpus)
  return changed
