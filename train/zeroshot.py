"""Zero-shot evaluation: log-likelihood scoring of multiple-choice and cloze tasks.

A request is (context, continuation) text. Each is tokenized as
`[start] + encode(context) + encode(continuation)`, where `start` is the vocabulary's EOS id
(1 for seqio's ByteVocabulary): training packs documents each followed by EOS, so EOS is what
precedes the first token of a text, and with it the first token of a sentence scored with an
empty context (BLiMP) is conditioned on the start of text. Context and continuation are encoded
separately (exact for bytes; for SentencePiece the split can differ slightly from one encoding).

Rows are the last `max_len + 1` tokens of that sequence (truncated on the left; inputs are all
but the last, targets all but the first), padded on the right to the next bucket length (powers
of two from 32 up to `max_len`) and grouped into batches of a fixed size, so the jitted scorer
compiles once per bucket length, not once per example. Right padding is exact for causal models.
A mask selects the continuation's targets: the log-likelihood is their sum of log-softmax, and
a request is greedy when every one of them is the argmax of its logits. A continuation longer
than `max_len` tokens is scored on its last `max_len` tokens (counted in the task's `truncated`).

Task files and how each layout turns into requests: train/zeroshot_formats.py.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import math
import os
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gab import fields
from train.zeroshot_formats import Example, Task, load_task  # noqa: F401  (re-exported)

ApplyFn = Callable[[Any, jax.Array], jax.Array]
Vocabulary = Any  # train.vocab's (or seqio's): .encode(str) -> ids, .eos_id
MIN_BUCKET = 32


@dataclasses.dataclass(frozen=True)
class ZeroshotConfig:
  """The `zeroshot` config section: task files or folders of them, and the scorer's shapes."""
  tasks: tuple = fields.field((), "task files or folders scored after each verification (empty: "
                              "fitness from validation bpb alone)", fields.strings)
  max_len: int = fields.field(256, "tokens of a scored row at most", fields.integer(1))
  batch_size: int = fields.field(32, "rows per scoring batch", fields.integer(1), results=False)
  limit: int = fields.field(0, "examples per task at most (0: all)", fields.integer(0))


def default_config() -> ml_collections.ConfigDict:
  return fields.defaults(ZeroshotConfig)


def bucket_lengths(max_len: int) -> list[int]:
  """Row lengths rows are padded to: powers of two from 32 below `max_len`, then `max_len`."""
  lengths, n = [], MIN_BUCKET
  while n < max_len:
    lengths.append(n)
    n *= 2
  return lengths + [max_len]


@functools.lru_cache(maxsize=8)
def _cached_scorer(apply_fn: ApplyFn):
  return _make_scorer(apply_fn)


def scorer(apply_fn: ApplyFn):
  """The jitted `(params, inputs_BxL, targets_BxL, mask_BxL) -> (logp_BxL, greedy_B)` of a model.

  Cached per `apply_fn`, so repeated evaluations of one model reuse its compilations.
  """
  try:
    return _cached_scorer(apply_fn)
  except TypeError:  # an unhashable apply_fn: no reuse across calls
    return _make_scorer(apply_fn)


def _make_scorer(apply_fn: ApplyFn):
  @jax.jit
  def score(params, inputs_BxL, targets_BxL, mask_BxL):
    logits_BxLxV = apply_fn(params, inputs_BxL).astype(jnp.float32)
    logp_BxLxV = jax.nn.log_softmax(logits_BxLxV, axis=-1)
    logp_BxL = jnp.take_along_axis(logp_BxLxV, targets_BxL[..., None], axis=-1)[..., 0]
    hit_BxL = jnp.argmax(logits_BxLxV, axis=-1) == targets_BxL
    greedy_B = jnp.all(hit_BxL | ~mask_BxL, axis=-1)
    return jnp.where(mask_BxL, logp_BxL, 0.0), greedy_B
  return score


def tokenize(requests: Sequence[tuple[str, str]], vocab: Vocabulary,
             max_len: int) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
  """Rows (int32, at most max_len + 1 tokens), scored targets per row, continuation lengths."""
  rows, n_scored, n_cont = [], [], []
  for i, (context, continuation) in enumerate(requests):
    cont = list(vocab.encode(continuation))
    if not cont:
      raise ValueError(f"request {i}: the continuation {continuation!r} encodes to no tokens")
    seq = [vocab.eos_id] + list(vocab.encode(context)) + cont
    row = np.asarray(seq[-(max_len + 1):], np.int32)
    rows.append(row)
    n_scored.append(min(len(cont), len(row) - 1))
    n_cont.append(len(cont))
  return rows, np.asarray(n_scored, np.int64), np.asarray(n_cont, np.int64)


def _batches(rows: list[np.ndarray], n_scored: np.ndarray, max_len: int, batch_size: int):
  """Yields (row indices, inputs_BxL, targets_BxL, mask_BxL), one bucket length at a time."""
  buckets = bucket_lengths(max_len)
  bucket_N = np.searchsorted(buckets, [len(r) - 1 for r in rows])
  order = np.lexsort(([len(r) for r in rows], bucket_N))
  for b in np.unique(bucket_N):
    in_bucket = order[bucket_N[order] == b]
    length = buckets[b]
    for start in range(0, len(in_bucket), batch_size):
      idx = in_bucket[start:start + batch_size]
      inputs_BxL = np.zeros((batch_size, length), np.int32)
      targets_BxL = np.zeros((batch_size, length), np.int32)
      mask_BxL = np.zeros((batch_size, length), bool)
      for j, i in enumerate(idx):
        n = len(rows[i]) - 1
        inputs_BxL[j, :n] = rows[i][:-1]
        targets_BxL[j, :n] = rows[i][1:]
        mask_BxL[j, n - n_scored[i]:n] = True
      yield idx, inputs_BxL, targets_BxL, mask_BxL


def score_tokens(apply_fn: ApplyFn, params, rows: list[np.ndarray], n_scored: np.ndarray,
                 max_len: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
  """float64 log-likelihoods and bool greedy flags of tokenized rows (see `tokenize`)."""
  if batch_size < 1 or max_len < 1:
    raise ValueError(f"batch_size and max_len must be >= 1, got {batch_size} and {max_len}")
  score = scorer(apply_fn)
  pending = [(idx, score(params, inputs, targets, mask))
             for idx, inputs, targets, mask in _batches(rows, n_scored, max_len, batch_size)]
  loglik_N = np.zeros(len(rows), np.float64)
  greedy_N = np.zeros(len(rows), bool)
  for idx, (logp_BxL, greedy_B) in jax.device_get(pending):
    loglik_N[idx] = np.asarray(logp_BxL, np.float64).sum(axis=-1)[:len(idx)]
    greedy_N[idx] = greedy_B[:len(idx)]
  return loglik_N, greedy_N


def score_requests(apply_fn: ApplyFn, params, requests: Sequence[tuple[str, str]],
                   vocab: Vocabulary, max_len: int,
                   batch_size: int = 32) -> list[tuple[float, bool]]:
  """(log P(continuation | context), is_greedy) per (context, continuation) request.

  `apply_fn(params, tokens_BxL) -> logits_BxLxV`, e.g. `gab.model.LM(...).apply`.
  """
  rows, n_scored, _ = tokenize(requests, vocab, max_len)
  loglik_N, greedy_N = score_tokens(apply_fn, params, rows, n_scored, max_len, batch_size)
  return [(float(ll), bool(g)) for ll, g in zip(loglik_N, greedy_N)]


def _is_right(scores: np.ndarray, gold: int) -> bool:
  """The gold candidate beats every other one strictly (a tie counts as wrong)."""
  return bool(scores[gold] > np.delete(scores, gold).max(initial=-np.inf))


# Formats whose length-normalised accuracy is a standard figure (PIQA, ARC, HellaSwag: choices of
# different lengths). BLiMP's minimal pairs are scored by raw accuracy, as the benchmark defines
# it; partial scoring and LAMBADA score one continuation, so normalising would change nothing.
NORMALISED = ("choice",)


def task_metrics(task: Task, loglik_N: np.ndarray, greedy_N: np.ndarray,
                 n_tokens_N: np.ndarray) -> dict[str, Any]:
  """acc and n of a task from its requests' scores (in the order of its examples), and acc_norm
  for the formats in NORMALISED. Selection uses acc_norm where there is one, else acc.

  LAMBADA (one candidate): acc is the greedy-match rate, and it adds `ppl` (exp of minus the mean
  per-example log-likelihood: per target word, the harness's figure, comparable across
  tokenizers) and `ppl_token` (per scored token).
  """
  acc, acc_norm, off = [], [], 0
  for ex in task.examples:
    k = len(ex.requests)
    ll = loglik_N[off:off + k]
    if task.format == "lambada":
      acc.append(bool(greedy_N[off]))
    else:
      acc.append(_is_right(ll, ex.gold))
    if task.format in NORMALISED:
      acc_norm.append(_is_right(ll / np.asarray(ex.norm_bytes, np.float64), ex.gold))
    off += k
  if off != len(loglik_N):
    raise ValueError(f"task {task.name}: {len(loglik_N)} scores for {off} requests")
  out = {"acc": float(np.mean(acc)), "n": len(acc)}
  if task.format in NORMALISED:
    out["acc_norm"] = float(np.mean(acc_norm))
  if task.format == "lambada":
    out["ppl"] = math.exp(-float(np.mean(loglik_N)))
    out["ppl_token"] = math.exp(-float(np.sum(loglik_N)) / max(int(np.sum(n_tokens_N)), 1))
  return out


def task_paths(paths: Sequence[str] | str) -> list[str]:
  """Task files: each path as is, or a folder's `*.jsonl` files (recursively, sorted)."""
  if isinstance(paths, str):
    paths = [p for p in paths.split(",") if p]
  out = []
  for path in paths:
    if os.path.isdir(path):
      found = sorted(glob.glob(os.path.join(path, "**", "*.jsonl"), recursive=True))
      if not found:
        raise ValueError(f"{path}: a folder with no .jsonl task files")
      out += found
    else:
      out.append(path)
  return out


def evaluate_tasks(apply_fn: ApplyFn, params, paths: Sequence[str] | str,
                   vocab: Vocabulary, max_len: int, batch_size: int,
                   limit: int | None = None) -> dict[str, dict[str, Any]]:
  """{task name (file stem): {"acc", "n", "truncated", "seconds", ...}} (see `task_metrics`).

  `paths`: task files or folders of them (a comma-separated string also works); `limit` caps
  the examples per task (None or 0: all). `truncated` counts the continuations longer than
  `max_len` tokens; `seconds` is the task's wall time, loading and compiling included.
  """
  results = {}
  for path in task_paths(paths):
    t0 = time.perf_counter()
    task = load_task(path, limit=limit if limit and limit > 0 else None)
    if task.name in results:
      raise ValueError(f"{path}: a second task named {task.name!r}; task names are file stems")
    requests = [r for ex in task.examples for r in ex.requests]
    rows, n_scored, n_cont = tokenize(requests, vocab, max_len)
    loglik_N, greedy_N = score_tokens(apply_fn, params, rows, n_scored, max_len, batch_size)
    metrics = task_metrics(task, loglik_N, greedy_N, n_scored)
    metrics["truncated"] = int(np.sum(n_cont > n_scored))
    metrics["seconds"] = time.perf_counter() - t0
    results[task.name] = metrics
  return results
