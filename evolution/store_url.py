"""Open the run's store from `config.store.url`: SQLite under the workdir, or PostgreSQL for fleets.

- `""` (the default) or `sqlite:///PATH`: SQLite, `WORKDIR/evolution.db` unless a path is given.
  SQLite must not be used over a network filesystem (NFS, SMB, gcsfuse, Lustre, ...): its locks
  are unreliable there, and several hosts writing one file corrupt it. Opening refuses such a path,
  and a store first opened on another host (its name is kept next to the database, in
  `evolution.db.host`), with a message pointing at PostgreSQL.
- `postgresql://USER[:PASSWORD]@HOST[:PORT]/DB`: `evolution.store_pg.PgStore`, shared by any
  number of hosts (the password is better left to `~/.pgpass` or `PGPASSWORD`).
"""

from __future__ import annotations

import os
import socket
from typing import Callable

from evolution.store import Store, StoreError
from gab import atomic

NETWORK_FILESYSTEMS = frozenset((
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "afs", "ceph", "glusterfs", "lustre", "gpfs",
    "beegfs", "fuse.sshfs", "fuse.gcsfuse", "fuse.s3fs", "fuse.glusterfs", "fuse.ceph", "fuse.juicefs",
    "fuse.cephfs", "fuse.rclone", "fuse.mountpoint-s3", "fuse.blobfuse", "fuse.blobfuse2"))
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
_HINT = "use a PostgreSQL store instead: --config.store.url=postgresql://USER@HOST/DB"


def is_postgres(url: str) -> bool:
  return url.startswith(POSTGRES_SCHEMES)


def filesystem_type(path: str, mounts: str | None = None) -> str:
  """The type of the filesystem holding `path`, from /proc/mounts (or the given text of it)."""
  if mounts is None:
    try:
      with open("/proc/mounts") as f:
        mounts = f.read()
    except OSError:
      return "unknown"
  path = os.path.realpath(path)
  best, kind = "", "unknown"
  for line in mounts.splitlines():
    fields = line.split()
    if len(fields) < 3:
      continue
    point = fields[1].replace("\\040", " ")
    inside = path == point or path.startswith(point.rstrip("/") + "/")
    if inside and len(point) >= len(best):
      best, kind = point, fields[2]
  return kind


def check_sqlite_path(path: str, mounts: str | None = None, host: str | None = None) -> None:
  """Refuse an SQLite database on a network filesystem or first opened by another host."""
  folder = os.path.dirname(os.path.abspath(path))
  kind = filesystem_type(folder, mounts)
  if kind in NETWORK_FILESYSTEMS:
    raise StoreError(f"{path} is on a network filesystem ({kind}): SQLite must not be used over a "
                     f"network filesystem, where its locking is unreliable; {_HINT}")
  host = host or socket.gethostname()
  marker = path + ".host"
  if os.path.exists(marker):
    with open(marker) as f:
      first = f.read().strip()
    if first and first != host:
      raise StoreError(f"{path} was created on host {first!r} and this is {host!r}: an SQLite store "
                       f"must not be shared by several hosts; {_HINT} (or delete {marker} if the "
                       f"run has moved here for good)")
  else:
    os.makedirs(folder, exist_ok=True)
    atomic.write(marker, host + "\n")


def open_store(url: str, workdir: str | None = None, clock: Callable[[], float] | None = None) -> Store:
  """The store named by `url` ("" = SQLite at WORKDIR/evolution.db)."""
  url = url or ""
  if is_postgres(url):
    from evolution.store_pg import PgStore  # pylint: disable=g-import-not-at-top  (psycopg is optional)
    return PgStore(url, clock)
  if url.startswith("sqlite:///"):
    path = url[len("sqlite://"):]
  elif url == "":
    if not workdir:
      raise StoreError("no store: give --workdir=DIR (SQLite at DIR/evolution.db) or a store URL")
    path = os.path.join(workdir, "evolution.db")
  else:
    raise StoreError(f"store url {url!r}: expected '' (SQLite in the workdir), sqlite:///PATH or "
                     f"postgresql://USER@HOST[:PORT]/DB")
  check_sqlite_path(path)
  return Store(path) if clock is None else Store(path, clock)
