"""A throwaway PostgreSQL server for the tests: initdb + pg_ctl in a temp dir, 127.0.0.1 only.

`GENESYS_TEST_PG_URL=postgresql://...` uses a server that is already running instead (each test
still gets its own fresh database). Running as root, the server runs as the `postgres` user
(initdb refuses root). The tests that need it skip, saying why, only if no PostgreSQL binaries are
installed (Debian: `apt-get install postgresql`).
"""

import atexit
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid

import pytest

_SERVER: dict = {}


def _binaries() -> str | None:
  found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
  if found:
    return os.path.dirname(found[-1])
  initdb = shutil.which("initdb")
  return os.path.dirname(initdb) if initdb else None


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _start() -> str:
  """The admin URL of a fresh server (started once per test session)."""
  if "url" in _SERVER:
    return _SERVER["url"]
  if os.environ.get("GENESYS_TEST_PG_URL"):
    _SERVER["url"] = os.environ["GENESYS_TEST_PG_URL"]
    return _SERVER["url"]
  bindir = _binaries()
  if bindir is None:
    pytest.skip("PostgreSQL is not installed (no initdb): apt-get install postgresql, or set "
                "GENESYS_TEST_PG_URL to a running server")
  root = tempfile.mkdtemp(prefix="genesys_pg_")
  as_user: list[str] = []
  if os.geteuid() == 0:
    pw = pwd.getpwnam("postgres")
    os.chown(root, pw.pw_uid, pw.pw_gid)
    as_user = ["runuser", "-u", "postgres", "--"]
  data, port = os.path.join(root, "data"), _free_port()
  subprocess.run([*as_user, f"{bindir}/initdb", "-D", data, "-A", "trust", "-U", "postgres",
                  "--no-sync", "-E", "UTF8"], check=True, capture_output=True)
  options = (f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off -c synchronous_commit=off "
             f"-c full_page_writes=off -c max_connections=100")
  subprocess.run([*as_user, f"{bindir}/pg_ctl", "-D", data, "-o", options, "-l", f"{root}/log", "-w",
                  "start"], check=True, capture_output=True)

  def stop():
    subprocess.run([*as_user, f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "stop"],
                   capture_output=True)
    shutil.rmtree(root, ignore_errors=True)
  atexit.register(stop)
  _SERVER["url"] = f"postgresql://postgres@127.0.0.1:{port}/postgres"
  return _SERVER["url"]


def fresh_database() -> str:
  """The URL of a new, empty database on the test server."""
  import psycopg  # pylint: disable=g-import-not-at-top
  admin = _start()
  name = f"t_{uuid.uuid4().hex[:12]}"
  with psycopg.connect(admin, autocommit=True) as conn:
    conn.execute(f"CREATE DATABASE {name}")
  return admin.rsplit("/", 1)[0] + "/" + name


@pytest.fixture
def pg_url():
  return fresh_database()
