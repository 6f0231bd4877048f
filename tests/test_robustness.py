"""Bad input, damaged stores and half-written workdirs: refused in one line, never silently.

In-process: every invalid config field is one line naming the field, its value and the expected
range, refused before the workdir is touched; garbage in a leftover WAL loses no committed row; a
damaged store file or a store that lost history stops the run with a message naming the file; a
concurrent schema migration logs nothing. Subprocesses: the tools exit 2 with one `error:` line.
"""

import importlib.util
import os
import resource
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from conftest import set_fields
from evolution import store as store_lib
from evolution.store import Store, StoreError
from gab import seeds
from gab.tree import Unit, design_to_json
from genesys_jax import loop, validate

WAL_SCRIPT = r"""
import os, signal, sys
from evolution.store import Store
store = Store.open(sys.argv[1])
for i in range(30):
  with store.transaction():
    store.add_design(f"d{i:02d}", '{"kind": "MLP"}', [], "seed", "", "valid")
    store.set_meta("proposals_done", i + 1)
os.kill(os.getpid(), signal.SIGKILL)  # die with the WAL in place, as a crash would
"""


def ladder(variant="smoke"):
  spec = importlib.util.spec_from_file_location("ladder_cfg", "configs/ladder.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant)


def env():
  return dict(os.environ, PYTHONPATH=os.getcwd())


def error_lines(stderr: str) -> list[str]:
  """The tool's own lines; C++ log lines of TensorFlow/XLA start-up are not the tool's."""
  return [line for line in stderr.splitlines() if line.startswith("error:")]


def assert_one_line(run, *needles):
  assert run.returncode == 2, (run.returncode, run.stderr[-3000:])
  assert "Traceback" not in run.stderr, run.stderr[-3000:]
  errors = error_lines(run.stderr)
  assert len(errors) == 1, run.stderr[-3000:]
  for needle in needles:
    assert needle in errors[0], (needle, errors[0])
  return errors[0]


# -- config validation -------------------------------------------------------------------------------
INVALID = [
    ("evolution.n_proposals", -1, "an integer in [0, 134217728]"),
    ("rungs.tiny.batch_size", 0, "an integer >= 1"),
    ("rungs.small.batch_size", -8, "an integer >= 1"),
    ("data.seq_len", 0, "an integer >= 1"),
    ("rungs.tiny.d_model", 0, "an integer >= 1"),
    ("rungs.tiny.n_blocks", 0, "an integer >= 1"),
    ("rungs.tiny.lr", -1e-3, "a number > 0"),
    ("rungs.tiny.train_tokens", -5, "an integer >= 0"),
    ("rungs.tiny.eval_batches", 0, "an integer >= 1"),
    ("rungs.tiny.warmup_frac", 2.0, "a number in [0, 1]"),
    ("rungs.tiny.grad_accum", 0, "an integer >= 1"),
    ("rungs.tiny.grad_clip", 0.0, "a number > 0"),
    ("evolution.exploit_prob", 1.5, "a probability in [0, 1]"),
    ("evolution.seed_prob", -0.1, "a probability in [0, 1]"),
    ("evolution.top_fraction", 0.0, "a number in (0, 1]"),
    ("evolution.max_retries", 0, "an integer in [1, 1048576]"),
    ("evolution.max_depth", 0, "an integer >= 1"),
    ("ladder.ratio", 0.0, "a number in (0, 1]"),
    ("ladder.n_target", 0, "an integer >= 1"),
    ("ladder.exploit_prob", 2.0, "a probability in [0, 1]"),
    ("data.val_fraction", 1.0, "a number in (0, 1)"),
    ("checker.size_tolerance", 1.0, "a number in [0, 1)"),
    ("checker.train_steps", 0, "an integer >= 1"),
    ("train.log_every", 0, "an integer >= 1"),
    ("train.max_to_keep", 0, "an integer >= 1"),
    ("train.save_every", -1, "an integer >= 0"),
    ("train.dtype", "float8", "one of 'float32', 'bfloat16', 'float16'"),
    ("zeroshot.batch_size", 0, "an integer >= 1"),
    ("seed", -3, "an integer >= 0"),
]


@pytest.mark.parametrize("path,value,expected", INVALID, ids=[p for p, _, _ in INVALID])
def test_each_invalid_field_is_one_line_naming_field_value_and_range(path, value, expected):
  config = ladder()
  set_fields(config, {path: value})
  assert validate.config_errors(config) == [f"config.{path} = {value!r}: expected {expected}"]


def test_combined_rules_of_probabilities_and_rungs():
  config = ladder()
  config.evolution.mode_probs.scratch = 0.5
  config.rungs.tiny.grad_accum = 3
  config.rungs.small.train_tokens = 0
  assert validate.config_errors(config) == [
      "config.evolution.mode_probs sums to 1.35 (crossover 0.25 + mutation 0.6 + scratch 0.5): "
      "expected probabilities summing to 1",
      "config.rungs.small: train_tokens = 0 and tokens_per_param = 0: expected one of them > 0 "
      "(the rung's token budget)",
      "config.rungs.tiny.batch_size = 8: expected a multiple of grad_accum 3 x 1 processes"]
  config = ladder()
  config.evolution.mode_probs.crossover = 1.25
  assert validate.config_errors(config) == [
      "config.evolution.mode_probs.crossover = 1.25: expected a probability in [0, 1]"]
  for variant in ("", "smoke", "paper"):
    assert validate.config_errors(ladder(variant)) == [], variant


@pytest.mark.parametrize("path,value", [("data.seq_len", 0), ("rungs.tiny.batch_size", 0),
                                        ("evolution.n_proposals", -1)])
def test_a_refused_config_leaves_no_files(tmp_path, path, value):
  config = ladder()
  set_fields(config, {path: value})
  workdir = tmp_path / "run"
  with pytest.raises(validate.ConfigError, match=f"config.{path} = {value}"):
    loop.run(config, str(workdir), log=lambda _: None)
  assert not workdir.exists()


# -- store integrity ---------------------------------------------------------------------------------
def test_garbage_in_the_wal_after_a_kill_loses_no_committed_row(tmp_path):
  subprocess.run([sys.executable, "-c", WAL_SCRIPT, str(tmp_path)], env=env(), timeout=120)
  wal = tmp_path / "evolution.db-wal"
  assert wal.exists()
  with open(wal, "r+b") as f:  # 4 KB of garbage over the start of the WAL
    f.write(os.urandom(4096))
  with Store.open(str(tmp_path)) as store:
    assert [d["id"] for d in store.designs()] == [f"d{i:02d}" for i in range(30)]
    assert store.get_meta("proposals_done") == 30


def test_a_damaged_store_file_is_a_clear_error_naming_it(tmp_path):
  with Store.open(str(tmp_path)) as store:
    for i in range(60):
      store.add_design(f"d{i:02d}", "x" * 2000, [], "seed", "", "valid")
  path = tmp_path / "evolution.db"
  size = path.stat().st_size
  with open(path, "r+b") as f:
    f.seek(size // 2)
    f.write(b"\xa5" * 8192)
  with pytest.raises(StoreError) as e:
    Store.open(str(tmp_path))
  assert str(path) in str(e.value) and "damaged" in str(e.value) and "backup" in str(e.value)
  path.write_bytes(b"this is not a database" * 200)
  for suffix in ("-wal", "-shm"):
    if os.path.exists(str(path) + suffix):
      os.remove(str(path) + suffix)
  with pytest.raises(StoreError, match="damaged"):
    Store.open(str(tmp_path))


def test_a_store_that_lost_history_stops_the_run_naming_the_file(tmp_path):
  (tmp_path / "checkpoints" / "0123456789abcdef" / "tiny").mkdir(parents=True)
  with pytest.raises(StoreError) as e:
    loop.run(ladder(), str(tmp_path), log=lambda _: None)
  message = str(e.value)
  assert "evolution.db" in message and "0123456789abcdef" in message and "lost history" in message


def test_a_concurrent_schema_migration_logs_no_no_op_event(tmp_path):
  path = str(tmp_path / "evolution.db")
  raw = sqlite3.connect(path, isolation_level=None)
  raw.execute("PRAGMA journal_mode=WAL")
  raw.execute("BEGIN IMMEDIATE")  # another process is migrating the fresh store right now
  opened = {}

  def second_opener():
    with Store(path) as store:
      opened.update(version=store.version(), migrated=store.events(kind="schema_migrated"))
  thread = threading.Thread(target=second_opener)
  thread.start()
  time.sleep(1.0)  # the second opener has read version 0 and waits for the write lock
  for steps in store_lib.MIGRATIONS:
    for sql in steps:
      raw.execute(sql)
  raw.execute(f"PRAGMA user_version = {store_lib.SCHEMA_VERSION}")
  raw.execute("COMMIT")
  thread.join(timeout=60)
  raw.close()
  assert opened == {"version": store_lib.SCHEMA_VERSION, "migrated": []}


def test_a_stored_design_is_not_a_duplicate_of_itself(tmp_path):
  from gab import canonical, checker  # pylint: disable=g-import-not-at-top
  from genesys_jax import check, state  # pylint: disable=g-import-not-at-top
  tree = Unit.make("Residual", [Unit.make("MLP")])  # small: fingerprints run eagerly
  fingerprint = canonical.fingerprint(tree)
  passed = checker.Report([checker.Check("format", checker.PASS, "ok")], {})
  with Store.open(str(tmp_path)) as store:
    store.add_design(tree.content_hash(), design_to_json(tree), [], "scratch", "", "valid")
    store.add_artifact(tree.content_hash(), "fingerprint", fingerprint)
    other = Unit.make("Residual", [Unit.make("GatedMLP")])
    store.add_design(other.content_hash(), design_to_json(other), [], "seed", "other", "valid")
    store.add_artifact(other.content_hash(), "fingerprint", "not this one")
    known = state.load(ladder(), store)[0].fingerprints
  assert check.judge(tree.content_hash(), passed, fingerprint, known).status == "valid"  # not its own twin
  assert check.judge("another", passed, fingerprint, known).summary() == (
      f"novelty: computes the same function as stored design {tree.content_hash()}")


# -- the tools, as a user runs them --------------------------------------------------------------------
def launch(*args, preexec_fn=None):
  return subprocess.run([sys.executable, "-m", "genesys_jax.launch", *args], capture_output=True,
                        text=True, env=env(), timeout=600, preexec_fn=preexec_fn)


def _small_files():
  resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))  # a disk that fills at 2 KB a file


def run_all(cases: dict) -> dict:
  """Run {name: (argv, preexec_fn)} at once (each is mostly start-up), return {name: result}."""
  procs = {name: subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=env(), preexec_fn=preexec)
           for name, (argv, preexec) in cases.items()}
  out = {}
  for name, proc in procs.items():
    stdout, stderr = proc.communicate(timeout=900)
    out[name] = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
  return out


def test_bad_input_to_launch_and_train_exits_2_with_one_line(tmp_path):
  deep = tmp_path / "deep.json"
  deep.write_text('{"kind": "Residual", "children": [' * 10_000 + '{"kind": "MLP"}' + "]}" * 10_000)
  smoke = "--config=configs/ladder.py:smoke"
  tool = [sys.executable, "-m", "genesys_jax.launch"]
  runs = run_all({
      "missing": (tool + ["--config=no/such/ladder.py:smoke", f"--workdir={tmp_path / 'a'}"], None),
      "unknown": (tool + [smoke, "--config.evolution.n_proposalz=1", f"--workdir={tmp_path / 'b'}"], None),
      "invalid": (tool + [smoke, "--config.data.seq_len=0", f"--workdir={tmp_path / 'c'}"], None),
      "full": (tool + [smoke, f"--workdir={tmp_path / 'd'}"], _small_files),
      "deep": ([sys.executable, "-m", "genesys_jax.cli.train", smoke, f"--design={deep}",
                f"--workdir={tmp_path / 'e'}"], None),
  })
  assert_one_line(runs["missing"], "--config=no/such/ladder.py:smoke: no such config file")
  line = assert_one_line(runs["unknown"])
  assert line == ("error: unknown config field 'config.evolution.n_proposalz' (did you mean "
                  "\"n_proposals\" instead of \"n_proposalz\"?): overrides must name existing fields "
                  "of the config file, e.g. --config.evolution.n_proposals=4")
  assert_one_line(runs["invalid"], "config.data.seq_len = 0: expected an integer >= 1")
  assert_one_line(runs["full"], "config.json: File too large")
  assert os.listdir(tmp_path / "d") == ["run.lock"]  # no config.json (nor its temporary), no evolution.db
  assert_one_line(runs["deep"], str(deep), "nested too deeply")
  for name in "abce":  # refused before anything was written: not even the workdir
    assert not (tmp_path / name).exists(), name


@pytest.mark.slow
def test_launch_on_an_unusable_workdir_and_a_zero_batch(tmp_path):
  (tmp_path / "file").write_text("")
  assert_one_line(launch("--config=configs/ladder.py:smoke", f"--workdir={tmp_path / 'file' / 'run'}"),
                  "Not a directory")
  assert_one_line(launch("--config=configs/ladder.py:smoke", "--config.rungs.tiny.batch_size=0",
                         f"--workdir={tmp_path / 'run'}"), "config.rungs.tiny.batch_size = 0")
  assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_train_with_non_utf8_design_and_a_zero_batch(tmp_path):
  bad = tmp_path / "latin1.json"
  bad.write_bytes('{"kind": "Résidual"}'.encode("latin-1"))
  good = tmp_path / "gpt.json"
  good.write_text(design_to_json(seeds.seed("gpt"), "gpt"))
  base = [sys.executable, "-m", "genesys_jax.cli.train", "--config=configs/ladder.py:smoke", f"--workdir={tmp_path / 'w'}"]
  kw = dict(capture_output=True, text=True, env=env(), timeout=600)
  assert_one_line(subprocess.run(base + [f"--design={bad}"], **kw), "not UTF-8")
  assert_one_line(subprocess.run(base + [f"--design={good}", "--config.rungs.tiny.batch_size=0"], **kw),
                  "config.rungs.tiny.batch_size = 0")
