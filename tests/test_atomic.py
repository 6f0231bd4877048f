"""Atomic file writes (gab/atomic.py): the old file or the whole new one, never a part, no leftovers."""

import os

import pytest

from gab import atomic


def test_a_write_replaces_the_file_whole_and_leaves_nothing_else(tmp_path):
  path = tmp_path / "f.json"
  atomic.write(str(path), "old")
  atomic.write(str(path), b"new bytes")
  assert path.read_bytes() == b"new bytes" and os.listdir(tmp_path) == ["f.json"]
  assert oct(path.stat().st_mode & 0o777) == oct(0o644)


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(tmp_path):
  path = tmp_path / "f.json"
  atomic.write(str(path), "old")

  class Unwritable(str):  # fails while writing, as a full disk would
    def encode(self, _):
      raise OSError(28, "No space left on device")
  with pytest.raises(OSError) as e:
    atomic.write(str(path), Unwritable("new"))
  assert e.value.filename == str(path) and e.value.strerror == "No space left on device"
  assert path.read_text() == "old" and os.listdir(tmp_path) == ["f.json"]
