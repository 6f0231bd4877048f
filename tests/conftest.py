"""Shared test setup: tiny configs, explicit keys, a data cache shared by the whole session."""

import atexit
import os
import shutil
import sys
import tempfile

# Compiled XLA programs are cached on disk for the session (JAX's persistent compilation cache),
# shared by the pytest-xdist workers and every CLI, worker and launch process the tests start: many
# tests compile the same programs (the seeds' checks, the GPT reference of the efficiency check).
# It changes no result (the same executables are loaded). Sandboxed children never see it: their
# environment is scrubbed (gab.sandbox.ENV_KEEP), so untrusted code cannot write into it.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _CACHE = tempfile.mkdtemp(prefix="genesys_jax_xla_cache_")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
  atexit.register(shutil.rmtree, _CACHE, True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
# The adversarial units (tests/adversarial/leaky_units.py) are registered by tests outside that
# folder too (the `leaky_kinds` fixture).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "adversarial"))


@pytest.fixture(scope="session", autouse=True)
def data_dir(tmp_path_factory):
  """One corpus cache for the session, unless GENESYS_DATA_DIR points at an existing one."""
  if not os.environ.get("GENESYS_DATA_DIR"):
    os.environ["GENESYS_DATA_DIR"] = str(tmp_path_factory.mktemp("genesys_data"))
  return os.environ["GENESYS_DATA_DIR"]


@pytest.fixture(scope="session")
def tiny_lm_losses():
  """`losses(tree, d_model=64, length=32, steps=15)`: the per-step training losses of a 2-block LM
  of `tree` on one fixed random-token batch, through the trainer's own train step (AdamW 3e-3)."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from gab.model import LM  # pylint: disable=g-import-not-at-top
  from train import trainer  # pylint: disable=g-import-not-at-top

  def losses(tree, d_model: int = 64, length: int = 32, steps: int = 15) -> list[float]:
    model = LM(tree, 259, d_model, 2)
    tokens = jnp.asarray(np.random.default_rng(0).integers(3, 259, (4, length + 1)), jnp.int32)
    params = model.init(jax.random.key(0), tokens[:, :-1])
    opt = optax.adamw(3e-3)
    state = trainer.TrainState(jnp.zeros((), jnp.int32), params, opt.init(params),
                               jax.random.key_data(jax.random.key(0)))
    step = jax.jit(trainer.make_train_step(model, opt))
    out = []
    for _ in range(steps):
      state, metrics = step(state, tokens)
      out.append(float(metrics["loss"]))
    return out
  return losses


@pytest.fixture(scope="module")
def leaky_kinds():
  """The adversarial units of tests/adversarial/leaky_units.py, registered for one module."""
  import leaky_units  # pylint: disable=g-import-not-at-top
  leaky_units.register()
  yield leaky_units
  leaky_units.unregister()


@pytest.fixture
def z_kinds():
  """Two test-only kinds: a mixer `MemoWriter` that writes Z["memo"] and a channel mixer
  `MemoReader` that reads it (both identities), registered for the test only."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  from gab import registry  # pylint: disable=g-import-not-at-top
  from gab.units.base import UnitModule  # pylint: disable=g-import-not-at-top

  class Noop(UnitModule):
    @nn.compact
    def __call__(self, x, z):
      return x, z

  specs = [registry.KindSpec("MemoWriter", registry.MIXER, Noop, writes=("memo",)),
           registry.KindSpec("MemoReader", registry.CHANNEL, Noop, reads=("memo",))]
  for spec in specs:
    registry.register(spec)
  yield
  for spec in specs:
    del registry._REGISTRY[spec.name]  # pylint: disable=protected-access


def ladder_config(variant: str = "smoke"):
  """configs/ladder.py's get_config(variant), loaded from the file as the launch command does."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location("ladder", "configs/ladder.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant)


def set_fields(config, changes):
  """`config` with each dotted field of `changes` set ({"rungs.tiny.lr": 1e-3}); returned."""
  for path, value in changes.items():
    *parents, leaf = path.split(".")
    node = config
    for part in parents:
      node = node[part]
    node[leaf] = value
  return config


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
  """(workdir, leaderboard, log lines) of one smoke run of the loop, shared by the loop and report
  tests (about 40 s on 2 cores). Tests must not change its workdir (copy it first)."""
  from genesys_jax import loop  # pylint: disable=g-import-not-at-top
  workdir = tmp_path_factory.mktemp("smoke")
  lines = []
  board = loop.run(ladder_config("smoke"), str(workdir), log=lines.append)
  return workdir, board, lines


# Test modules that share a session fixture run in the same xdist worker, so it runs once.
SHARED_SCOPES = {"tests/test_report.py": "tests/test_loop.py",  # all four use `smoke_run`
                 "tests/test_export_design.py": "tests/test_loop.py",
                 "tests/test_resume.py": "tests/test_loop.py"}


def pytest_xdist_make_scheduler(config, log):
  from xdist.scheduler import LoadScopeScheduling  # pylint: disable=g-import-not-at-top

  class Scheduling(LoadScopeScheduling):
    """`--dist loadscope` (a module per worker), with the modules of SHARED_SCOPES together."""

    def _split_scope(self, nodeid: str) -> str:
      scope = super()._split_scope(nodeid)
      return SHARED_SCOPES.get(scope, scope)
  return Scheduling(config, log)
