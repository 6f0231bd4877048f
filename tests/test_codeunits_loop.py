"""Code units end to end: train.train on a /2 design file, and an evolution run that brings its own
units (config.units.files), checks and trains them in the sandbox, reuses them in GP mutations and
survives a SIGKILL + resume. Slow: several sandboxed JAX children and real training."""

import glob
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from gab import codeunits, registry
from gab.tree import Unit, design_to_json

U = Unit.make
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
UNITS = os.path.join(HERE, "code_units", "*.py")


def env():
  return dict(os.environ, PYTHONPATH=ROOT, GEMINI_API_KEY="fake-key-never-seen-by-unit-code")


@pytest.mark.slow
def test_train_train_trains_a_design_with_three_code_units(tmp_path):
  kinds = [codeunits.declare(open(p).read()) for p in sorted(glob.glob(UNITS))]
  dc, sq, ts = kinds
  tree = registry.normalize(U("Sequence", [
      U("Residual", [U("Sequence", [U("RMSNorm"), U(dc)])]),
      U("Residual", [U("Sequence", [U("RMSNorm"), U(ts)])]),
      U("Residual", [U("Sequence", [U("RMSNorm"), U(sq)])])]))
  path = tmp_path / "coded.json"
  path.write_text(design_to_json(tree, "coded", codeunits.sources_for(tree)))
  for kind in kinds:
    codeunits.forget(kind)
  cmd = [sys.executable, "-m", "genesys_jax.cli.train", f"--design={path}", "--config=configs/ladder.py:smoke",
         f"--workdir={tmp_path / 'wd'}"]
  proc = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  metrics = json.loads(proc.stdout.strip().splitlines()[-1])
  assert metrics["val_bpb"] < 8 and metrics["steps_done"] == metrics["steps"] > 0
  assert os.listdir(tmp_path / "wd" / "checkpoints")  # the sandbox wrote its checkpoints there
  assert os.stat(tmp_path / "wd" / "checkpoints").st_uid == os.geteuid()  # handed back


def _rows(db_path, sql):
  with sqlite3.connect(db_path) as db:
    return db.execute(sql).fetchall()


def _coded_seed(path):
  kinds = [codeunits.declare(open(p).read()) for p in sorted(glob.glob(UNITS))]
  dc, sq, ts = kinds
  tree = registry.normalize(U("Sequence", [
      U("Residual", [U("Sequence", [U("RMSNorm"), U(dc)])]),
      U("Residual", [U("Sequence", [U("RMSNorm"), U(ts)])]),
      U("Residual", [U("Sequence", [U("RMSNorm"), U(sq)])])]))
  path.write_text(design_to_json(tree, "coded", codeunits.sources_for(tree)))
  for kind in kinds:
    codeunits.forget(kind)
  return tree.content_hash()


@pytest.mark.slow
def test_a_run_with_code_units_checks_trains_reuses_and_resumes_them(tmp_path):
  workdir = tmp_path / "run"
  db = workdir / "evolution.db"
  seed_file = tmp_path / "coded_seed.json"
  seed_id = _coded_seed(seed_file)
  cmd = [sys.executable, "-m", "genesys_jax.launch", "--config=configs/ladder.py:smoke",
         f"--workdir={workdir}", "--config.seed=0", "--config.evolution.n_proposals=3",
         f"--config.seeds=('{seed_file}',)", f"--config.units.files=('{UNITS}',)"]
  run = subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         start_new_session=True)
  deadline, done = time.time() + 1500, []
  while time.time() < deadline and run.poll() is None:  # SIGKILL it after its first proposal
    time.sleep(2)
    try:
      done = _rows(db, "SELECT value FROM meta WHERE key = 'proposals_done'") if db.exists() else []
    except sqlite3.OperationalError:
      done = []
    if done:
      break
  assert done, run.communicate()[0][-3000:] if run.poll() is not None else "no proposal in time"
  os.killpg(run.pid, signal.SIGKILL)
  run.wait()
  proc = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=1800)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert "resuming" in proc.stdout
  units = _rows(db, "SELECT kind, design_id FROM code_units ORDER BY seq")
  assert sorted(k.split("@")[0] for k, _ in units) == ["DecayConv", "SqReluGate", "TokenShift"]
  designs = _rows(db, "SELECT id, tree, operator, status, report FROM designs ORDER BY seq")
  with_code = {i: (op, st, json.loads(rep)) for i, tree, op, st, rep in designs if json.loads(tree).get("units")}
  assert with_code[seed_id][:2] == ("seed", "verified")  # checked and trained in the sandbox
  reused = [i for i, (op, st, _) in with_code.items() if op == "mutation"]
  assert reused  # a later GP mutation in the same run reuses the code units
  metrics = {i: json.loads(m) for i, m in _rows(db, "SELECT design_id, metrics FROM verifications")}
  assert metrics[seed_id]["val_bpb"] < 8
  for i, (op, st, report) in with_code.items():
    assert report["checks"][0]["name"] == "format"
    assert st != "verified" or metrics[i]["val_bpb"] < 8
  assert _rows(db, "SELECT value FROM meta WHERE key = 'proposals_done'") == [("3",)]
