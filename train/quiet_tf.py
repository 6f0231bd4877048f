"""TensorFlow, TFDS and seqio for the `tfds:` and `seqio:` corpora only, imported without their noise.

Only preparing a `tfds:` or `seqio:` corpus (`train/sources.py`) imports them, through `tfds()` and
`seqio()` here; the default KJV corpus, `files:` and every reader of prepared shards never do.
TensorFlow >= 2.16 writes its C++ start-up lines (oneDNN, cudart_stub, cpu_feature_guard: six lines
per process with TF 2.21) to file descriptor 2 before its log level applies, so the import runs
with descriptor 2 captured, and what it wrote, less those lines, is written back afterwards. TF
serves data here: it is kept off the accelerators, and TFDS shows no progress bars.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import sys
import tempfile
from typing import Iterator

# C++ log lines (absl/glog format: I0000 00:00:1796416601.059154   10569 port.cc:153] ...) and the
# fixed text TensorFlow prints around them while it loads: never actionable for a data pipeline.
_NOISE = re.compile(
    r"^[IWE]\d{4} [\d:.]+\s+\d+ [\w.]+\.cc:\d+\] "
    r"|^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$"
    r"|^To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler "
    r"flags\.$")


@contextlib.contextmanager
def _filtered_stderr() -> Iterator[None]:
  """Captures file descriptor 2 for the block; then writes back every line that is not _NOISE."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      kept = [line for line in captured.read().decode("utf-8", "replace").splitlines()
              if not _NOISE.search(line)]
      if kept:
        print("\n".join(kept), file=sys.stderr, flush=True)


@functools.lru_cache(maxsize=None)
def _tensorflow():
  # What TF logs once loaded (e.g. `E0000 ... failed call to cuInit` while it reads data): fatal
  # errors only, unless the caller chose a level (importing jax sets 1 where nothing is set).
  if os.environ.get("TF_CPP_MIN_LOG_LEVEL") in (None, "1"):
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
  with _filtered_stderr():
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    import tensorflow_datasets  # noqa: F401  pylint: disable=g-import-not-at-top
    import seqio as _seqio  # noqa: F401  pylint: disable=g-import-not-at-top
    try:
      tf.config.set_visible_devices([], "GPU")  # the accelerators belong to JAX
    except RuntimeError:  # TF's devices were initialised already (by the caller)
      pass
  sys.modules["tensorflow_datasets"].disable_progress_bar()
  return tf


def tfds():
  """`tensorflow_datasets`, imported quietly."""
  _tensorflow()
  return sys.modules["tensorflow_datasets"]


def seqio():
  """`seqio`, imported quietly (with TensorFlow and TFDS, which it imports)."""
  _tensorflow()
  return sys.modules["seqio"]
