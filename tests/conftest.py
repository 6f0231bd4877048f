"""Shared test setup: tiny configs, explicit keys, a data cache shared by the whole session."""

import os

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture(scope="session", autouse=True)
def data_dir(tmp_path_factory):
  """One corpus cache for the session, unless GENESYS_DATA_DIR points at an existing one."""
  if not os.environ.get("GENESYS_DATA_DIR"):
    os.environ["GENESYS_DATA_DIR"] = str(tmp_path_factory.mktemp("genesys_data"))
  return os.environ["GENESYS_DATA_DIR"]
