"""Verifying, the second half of the loop (`genesys_jax.loop.Evolution`): every valid design
trained at the lowest rung, then the ladder's open promotions, each sized to its rung's budget and
recorded with its metrics or as a failed verification; the jobs run here or on verifier workers
(`genesys_jax.controller`, `genesys_jax.jobs`). Promotions draw from the number of verifications so
far, so a restarted run promotes the same designs.
"""

from __future__ import annotations

import os
from typing import Any

import jax

from evolution import selection
from gab import audit, sandbox, sizing
from gab.tree import DesignError, design_from_json
from genesys_jax import code_units, controller, ladder
from genesys_jax.report import site as report_site
from train import trainer

_PROMOTION_STREAM = 1 << 30  # fold_in salt: promotion draws never collide with proposal draws
# What a design can do wrong in training that the checker could not foresee (divergence, out of
# memory at a larger rung, a width its hyperparameters do not fit): recorded as a failed
# verification, so a restarted run does not stumble on the same design again. Anything else is a
# bug or a bad config and stops the run.
_DESIGN_FAILURES = (FloatingPointError, DesignError, jax.errors.JaxRuntimeError,
                    sandbox.DesignFailure, sandbox.SandboxError)


class Verifying:
  """The verifying methods of `Evolution`: they use its config, key, rungs, store, data, workdir,
  log and `rung`/`checker_config`."""

  def verify(self, design: dict[str, Any], rung_name: str) -> None:
    """Train `design` at a rung, sized to its budget; record the result or the failure."""
    tree, _ = design_from_json(design["tree"])
    rung = self.rung(rung_name)
    where = (design["id"], rung_name)
    coded = code_units.uses_code(tree)
    size = {} if coded else sizing.fit_to_rung(tree, rung, self.checker_config())  # sizing runs code
    if size and not size["fits"]:  # checker.size_tolerance holds on every rung, not only the checked one
      return self.record_failure(design, rung_name, f"SizeError: no sizing within "
                                 f"+-{self.config.checker.size_tolerance:.0%} of {rung.target_params:,} "
                                 f"parameters (closest: {size['params']})")
    self.log(f"  training {design['id']} at rung {rung_name} " + (
        "in the sandbox" if coded else f"(d_model {size['d_model']}, {size['n_blocks']} blocks)") + " ...")
    try:
      if coded:
        metrics = code_units.train(
            design, rung, config=self.config, checker_cfg=self.checker_config(),
            checkpoint_dir=os.path.join(self.workdir, "checkpoints", *where),
            log_dir=os.path.join(self.workdir, "tensorboard", *where), desc=f"{design['id'][:8]}@{rung_name}")
      else:
        metrics = trainer.train_and_evaluate(
            tree, rung, self.data, seed=self.config.seed, d_model=size["d_model"],
            n_blocks=size["n_blocks"], checkpoint_dir=os.path.join(self.workdir, "checkpoints", *where),
            log_dir=os.path.join(self.workdir, "tensorboard", *where), train_cfg=self.config.train,
            zeroshot_cfg=self.config.zeroshot, desc=f"{design['id'][:8]}@{rung_name}")
    except _DESIGN_FAILURES as e:
      error = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
      return self.record_failure(design, rung_name, error)
    # -- issue #21: the post-training audit (gab.audit); a leaking design's metrics are voided --
    leak = audit.voided(metrics)
    if leak is not None:
      return self.record_leak(design, rung_name, leak)
    # -- end of the audit hook --
    with self.store.transaction():
      self.store.add_verification(design["id"], rung_name, metrics)
      self.store.set_status(design["id"], "verified")
    self.log(f"  {design['id']} @ {rung_name}: val_bpb {metrics['val_bpb']:.4f}, "
             f"{metrics['params']:,} params, {metrics['tokens']:,} tokens")
    self.refresh_report()

  def record_failure(self, design: dict[str, Any], rung_name: str, error: str) -> None:
    with self.store.transaction():
      self.store.add_verification(design["id"], rung_name, {"val_bpb": None, "params": None,
                                                            "tokens": None, "error": error})
      if rung_name == self.rungs[0]:
        self.store.set_status(design["id"], "failed")
    self.log(f"  {design['id']} failed at {rung_name}: {error}")
    self.refresh_report()

  def record_leak(self, design: dict[str, Any], rung_name: str, voided: dict[str, Any]) -> None:
    """A design whose trained parameters leak (issue #21): voided metrics, status leaking."""
    with self.store.transaction():
      self.store.add_verification(design["id"], rung_name, voided)
      self.store.set_status(design["id"], "leaking")
    self.log(f"  {design['id']} LEAKS at {rung_name}: {voided['error']}; its metrics are voided")
    self.refresh_report()

  def refresh_report(self) -> None:
    """Rewrite the HTML report (file by file, atomically) so a long run can be watched."""
    if self.config.get("report", True) and not getattr(self, "verifier_only", False):
      try:
        report_site.write(self.workdir, self.store, log=self.log)
      except Exception as e:  # noqa: BLE001 - the report is for watching; it must never stop a run
        self.log(f"warning: the report could not be refreshed ({type(e).__name__}: {e})")

  def next_promotion(self) -> tuple[dict[str, Any], str] | None:
    """The (design, rung) to train next above the lowest rung, if the ladder has an open slot."""
    # Seeds are baselines verified on every rung (verify_baselines): the budget is for discoveries.
    designs = [d for d in selection.designs_from_store(self.store, self.rungs) if not d["is_seed"]]
    used = [sum(r in d["metrics"] for d in designs) for r in self.rungs]
    lad = self.config.ladder
    i = ladder.next_rung(ladder.budgets(len(self.rungs), lad.n_target, lad.ratio), used, lad.ratio)
    if i is None:
      return None
    key = jax.random.fold_in(jax.random.fold_in(self.key, _PROMOTION_STREAM), sum(used))
    pick = selection.select_for_verification(key, designs, self.rungs[i], self.rungs, lad.exploit_prob,
                                             self.config.evolution.top_fraction,
                                             self.config.evolution.zeroshot_weight)
    return None if pick is None else (pick, self.rungs[i])

  def baseline_jobs(self) -> list[tuple[str, str]]:
    """(seed, rung) for every seed that trained at the lowest rung and lacks a higher rung: the
    seeds are baselines on every rung, outside the promotion budget."""
    return [(d["id"], r) for d in self.store.designs("verified") if d["operator"] == "seed"
            for r in self.rungs[1:] if not self.store.has_verification(d["id"], r)]

  def verify_pending(self) -> None:
    """Every valid design at the lowest rung, then the open promotions, as jobs: trained here or
    by verifier workers (genesys_jax/controller.py)."""
    controller.verify_pending(self)
