"""A run's config: one record per section, each field defined once (gab/fields.py).

`default_config()` is the ConfigDict configs/ladder.py starts from (every section at its defaults,
no rungs); `genesys_jax/validate.py` checks a config against these records; `result_affecting()`
lists the fields whose change alters what a run's results mean (the rest only change how it is
carried out or shown, or how long it goes): a resumed run may not change them (genesys_jax/resume.py).
The sections' records live with the code that reads them:

  data       train/data.py DataConfig            checker  gab/checker.py CheckerConfig
  train      train/trainer.py TrainConfig        zeroshot train/zeroshot.py ZeroshotConfig
  rungs      train/rung.py Rung (one per rung)   ladder   genesys_jax/ladder.py LadderConfig
  evolution  evolution/config.py                 designer evolution/designers/config.py
  store, jobs, units, and the top-level fields: here.
"""

from __future__ import annotations

import dataclasses

import ml_collections

from evolution.config import EvolutionConfig
from evolution.designers.config import DesignerConfig
from gab import fields
from gab.checker import CheckerConfig
from genesys_jax.ladder import LadderConfig
from train.data import DataConfig
from train.rung import Rung
from train.trainer import TrainConfig
from train.zeroshot import ZeroshotConfig


@dataclasses.dataclass(frozen=True)
class StoreConfig:
  url: str = fields.field("", "'' = SQLite at WORKDIR/evolution.db (one host); "
                          "postgresql://USER@HOST[:PORT]/DB for fleets", fields.string, results=False)


@dataclasses.dataclass(frozen=True)
class JobsConfig:
  """Verification jobs (genesys_jax/jobs.py): trained by the controller itself (in_process) or by
  verifier workers (python -m genesys_jax.worker)."""
  in_process: bool = fields.field(True, "the controller trains its own jobs (one process); False: "
                                  "verifier workers do", fields.boolean, results=False)
  generation: int = fields.field(1, "proposals per generation: their rung-0 jobs run in parallel, "
                                 "then a barrier", fields.integer(1), results=False)
  lease_s: float = fields.field(300.0, "a claimed job returns to the queue this long after its last "
                                "heartbeat", fields.number(0.0, lo_open=True), results=False)
  heartbeat_s: float = fields.field(10.0, "between a worker's lease renewals",
                                    fields.number(0.0, lo_open=True), results=False)
  max_attempts: int = fields.field(2, "attempts lost to infrastructure before a job is recorded as "
                                   "failed", fields.integer(1), results=False)
  poll_s: float = fields.field(0.5, "how often an idle worker or a waiting controller looks at the "
                               "queue", fields.number(0.0, lo_open=True), results=False)
  check_in_workers: bool = fields.field(True, "with workers, they also check the GP proposals "
                                        "(applied in proposal order at the barrier)", fields.boolean,
                                        results=False)


@dataclasses.dataclass(frozen=True)
class UnitsConfig:
  files: tuple = fields.field((), "globs of hand-written code units (.py, gab.codeunits) the run may "
                              "use", fields.strings)


@dataclasses.dataclass(frozen=True)
class RunConfig:
  seed: int = fields.field(0, "the run's seed: every random choice flows from it", fields.integer(0))
  seeds: tuple = fields.field(("gpt",), "seed designs: names of gab.seeds or design files",
                              fields.strings)
  replay_from: str = fields.field("", "a recorded run's workdir: re-run it and report any divergence",
                                  fields.string, results=False)
  branch_from: str = fields.field("", "a recorded run's workdir: start this new run from its history, "
                                  "keeping the results the config's changes leave valid "
                                  "(genesys_jax/branch.py)", fields.string, results=False)
  report: bool = fields.field(True, "refresh the HTML report under WORKDIR/report after every "
                              "verification", fields.boolean, results=False)
  data: DataConfig = fields.section(DataConfig, "the corpus")
  checker: CheckerConfig = fields.section(CheckerConfig, "the symbolic checker")
  train: TrainConfig = fields.section(TrainConfig, "how verifications train")
  zeroshot: ZeroshotConfig = fields.section(ZeroshotConfig, "zero-shot tasks scored after each "
                                            "verification")
  store: StoreConfig = fields.section(StoreConfig, "where the run is kept")
  jobs: JobsConfig = fields.section(JobsConfig, "verification jobs")
  designer: DesignerConfig = fields.section(DesignerConfig, "who proposes")
  units: UnitsConfig = fields.section(UnitsConfig, "hand-written code units")
  evolution: EvolutionConfig = fields.section(EvolutionConfig, "proposals, operators, selection")
  ladder: LadderConfig = fields.section(LadderConfig, "the Ladder of Scales")
  rungs: dict = fields.table(Rung, "the rungs by name")


def default_config() -> ml_collections.ConfigDict:
  return fields.defaults(RunConfig)


def result_affecting() -> list[str]:
  """Dotted paths (`rungs.*.lr` for every rung) of the fields whose change alters what results mean."""
  return [path for path, spec in fields.walk(RunConfig) if spec.results]
