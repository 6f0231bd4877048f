"""Zero-shot scorer: batched, bucketed scores against one-example-at-a-time brute force."""

import glob
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import seqio

from gab import seeds
from gab.model import LM
from train import zeroshot as zs
from train.zeroshot_formats import Example, Task, load_task

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVAL_DIR = os.path.join(os.path.dirname(REPO_ROOT), "shared", "eval")
EVAL_FILES = sorted(glob.glob(os.path.join(EVAL_DIR, "*", "*.jsonl")))
needs_eval = pytest.mark.skipif(
    not EVAL_FILES, reason=f"evaluation data not found: no *.jsonl under {EVAL_DIR}")
VOCAB = seqio.ByteVocabulary()


@pytest.fixture(scope="module")
def lm():
  model = LM(seeds.seed("gpt"), 259, 32, 1)
  return model, model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))


@pytest.fixture(scope="module")
def brute_force(lm):
  """One request alone (a batch of one): sum of log-softmax and argmax hits at the continuation."""
  model, params = lm
  apply_1xL = jax.jit(model.apply)  # batch of one

  # Inputs are padded on the right to a multiple of 16 (one compile per 16 lengths rather than per
  # length; exact for this causal model): boundaries unlike the scorer's powers-of-two buckets,
  # and the positions scored are the unpadded sequence's.

  def score(context, continuation, max_len):
    cont = VOCAB.encode(continuation)
    seq = np.asarray([1] + VOCAB.encode(context) + cont, np.int32)[-(max_len + 1):]
    n = len(seq) - 1
    padded = np.zeros((1, -(-n // 16) * 16), np.int32)
    padded[0, :n] = seq[:-1]
    logits_LxV = np.asarray(apply_1xL(params, jnp.asarray(padded))[0, :n], np.float64)
    shifted_LxV = logits_LxV - logits_LxV.max(axis=-1, keepdims=True)
    logp_LxV = shifted_LxV - np.log(np.exp(shifted_LxV).sum(axis=-1, keepdims=True))
    positions = range(len(seq) - 1 - min(len(cont), len(seq) - 1), len(seq) - 1)
    loglik = sum(logp_LxV[t, seq[t + 1]] for t in positions)
    greedy = all(int(np.argmax(logits_LxV[t])) == seq[t + 1] for t in positions)
    return loglik, greedy
  return score


def real_requests(per_blimp_file, per_other_file):
  requests, formats = [], set()
  for path in EVAL_FILES:
    task = load_task(path, limit=per_blimp_file if "blimp" in path else per_other_file)
    formats.add(task.format)
    requests += [r for ex in task.examples for r in ex.requests]
  assert formats == {"blimp", "choice", "partial", "lambada"}
  return requests


@needs_eval
@pytest.mark.parametrize("max_len, per_blimp_file, per_other_file", [
    (256, 1, 3),  # almost nothing truncated
    (48, 1, 2),   # contexts and long continuations truncated on the left
])
def test_matches_brute_force_on_every_format(lm, brute_force, max_len, per_blimp_file,
                                             per_other_file):
  model, params = lm
  requests = real_requests(per_blimp_file, per_other_file)
  got = zs.score_requests(model.apply, params, requests, VOCAB, max_len, batch_size=16)
  assert len(got) == len(requests)
  for (ctx, cont), (loglik, greedy) in zip(requests, got):
    want_loglik, want_greedy = brute_force(ctx, cont, max_len)
    np.testing.assert_allclose(loglik, want_loglik, rtol=1e-5, atol=1e-5, err_msg=repr((ctx, cont)))
    assert greedy == want_greedy, (ctx, cont)


def test_one_compile_per_bucket_and_batch_shape(lm):
  model, params = lm
  traces = []

  def apply_fn(p, tokens_BxL):
    traces.append(tokens_BxL.shape)
    return model.apply(p, tokens_BxL)

  rng = np.random.default_rng(0)
  def requests(n):  # rows of 4..60 tokens: buckets 32 and 64
    return [("x" * int(rng.integers(1, 30)), "y" * int(rng.integers(1, 30))) for _ in range(n)]
  zs.score_requests(apply_fn, params, requests(40), VOCAB, max_len=128, batch_size=8)
  assert sorted(traces) == [(8, 32), (8, 64)]
  zs.score_requests(apply_fn, params, requests(25), VOCAB, max_len=128, batch_size=8)
  assert len(traces) == 2
  assert zs.scorer(apply_fn)._cache_size() == 2
  assert zs.bucket_lengths(128) == [32, 64, 128]
  assert zs.bucket_lengths(200) == [32, 64, 128, 200]


def test_metrics_arithmetic():
  task = Task("t", "choice", "t.jsonl", (
      Example((("q", " a"), ("q", " bbbbbbbbbb")), (1, 10), gold=1),  # acc wrong, acc_norm right
      Example((("q", " c"), ("q", " d")), (4, 4), gold=0),  # both right
      Example((("q", " e"), ("q", " f")), (1, 1), gold=0)))  # a tie counts as wrong
  loglik = np.array([-2.0, -5.0, -1.0, -3.0, -4.0, -4.0])
  out = zs.task_metrics(task, loglik, np.zeros(6, bool), np.ones(6, np.int64))
  assert out == {"acc": pytest.approx(1 / 3), "acc_norm": pytest.approx(2 / 3), "n": 3}

  lambada = Task("l", "lambada", "l.jsonl", (
      Example((("c", " w"),), (1,), 0), Example((("c", " v"),), (1,), 0)))
  out = zs.task_metrics(lambada, np.array([-2.0, -4.0]), np.array([True, False]),
                        np.array([2, 2]))
  assert out["acc"] == 0.5 and out["n"] == 2 and "acc_norm" not in out
  assert out["ppl"] == pytest.approx(math.exp(3.0))
  assert out["ppl_token"] == pytest.approx(math.exp(1.5))


def test_blimp_is_scored_by_raw_accuracy_for_selection():
  """Minimal pairs: right when log P(good) > log P(bad), whatever the lengths; no acc_norm, so
  the trainer's and `score`'s selection figure (acc_norm where there is one) is acc."""
  blimp = Task("b", "blimp", "b.jsonl", (
      # The longer good sentence loses in total (-6 < -4) but would win per byte (-0.5 > -1).
      Example((("", "g" * 12), ("", "b" * 4)), (12, 4), gold=0),
      Example((("", "g" * 4), ("", "b" * 4)), (4, 4), gold=0)))  # right either way
  out = zs.task_metrics(blimp, np.array([-6.0, -4.0, -1.0, -2.0]), np.zeros(4, bool),
                        np.ones(4, np.int64))
  assert out == {"acc": 0.5, "n": 2}
  assert out.get("acc_norm", out["acc"]) == 0.5  # what train/trainer.py and score.py select on
  partial = Task("w", "partial", "w.jsonl", (Example((("a", " x"), ("b", " x")), (1, 1), gold=1),))
  assert zs.task_metrics(partial, np.array([-1.0, -2.0]), np.zeros(2, bool),
                         np.ones(2, np.int64)) == {"acc": 0.0, "n": 1}


def _write(path, rows):
  path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
  return str(path)


def test_known_answers_end_to_end(tmp_path):
  """A model that always predicts 'a': the all-'a' candidates win, 'aaa' is greedy."""
  def apply_fn(params, tokens_BxL):
    logits_V = params["scale"] * jax.nn.one_hot(ord("a") + 3, 259)
    return jnp.broadcast_to(logits_V[None, None, :], tokens_BxL.shape + (259,))
  params = {"scale": jnp.float32(5.0)}
  paths = [
      _write(tmp_path / "pairs.jsonl", [{"sentence_good": "aaaa", "sentence_bad": "aaab"}] * 3),
      _write(tmp_path / "mc.jsonl", [{"query": "Q:", "choices": ["bb", "aa"], "gold": 1},
                                     {"query": "Q:", "choices": ["aaaaaaaa", "b"], "gold": 0}]),
      _write(tmp_path / "cloze.jsonl", [{"context": "x ", "continuation": "aaa"},
                                        {"context": "x", "continuation": "aaa"}]),
  ]
  out = zs.evaluate_tasks(apply_fn, params, ",".join(paths), VOCAB, 64, 4, limit=2)
  assert out["pairs"]["n"] == 2 and out["pairs"]["acc"] == 1.0
  # " aaaaaaaa" loses to " b" in total log-likelihood (more bytes) but wins per byte.
  assert out["mc"]["acc"] == 0.5 and out["mc"]["acc_norm"] == 1.0
  assert out["cloze"]["acc"] == 0.5  # the second one gets a delimiting space: not greedy
  assert out["cloze"]["ppl"] > 1.0 and out["cloze"]["truncated"] == 0


@needs_eval
def test_requests_follow_the_harness_convention():
  first = {os.path.basename(p): load_task(p, limit=1).examples[0] for p in EVAL_FILES}
  assert first["anaphor_number_agreement.jsonl"].requests == (
      ("", "Susan revealed herself."), ("", "Susan revealed themselves."))
  copa = first["copa.jsonl"]
  assert copa.requests[1] == ("The man turned on the faucet, therefore",
                              " water flowed from the spout.")
  assert copa.norm_bytes[1] == len("water flowed from the spout.") and copa.gold == 1
  piqa = first["piqa.jsonl"]
  assert piqa.requests[0][0].endswith("\n") and not piqa.requests[0][1].startswith(" ")
  wg = first["winogrande.jsonl"]
  assert wg.requests[0] == ("Sarah was a much better surgeon than Maria so Sarah",
                            " always got the easier cases.")
  assert first["lambada_openai.jsonl"].requests[0][1] == " signs"


@pytest.mark.parametrize("rows, line, expect", [
    (['{"query": "q", "choices": ["a", "b"], "gold": 0}', "{not json"], 2, "not a JSON object"),
    ([{"question": "q", "answer": "a"}], 1, "sentence_good"),
    ([{"query": "q", "choices": ["a", "b"], "gold": 0}, {"query": "q", "choices": ["a", "b"],
                                                         "gold": 2}], 2, "'gold'"),
    ([{"context": "c", "continuation": "w"}, {"sentence_good": "a", "sentence_bad": "b"}], 2,
     "lambada fields"),
    ([{"context_options": ["a"], "continuation": "w", "gold": 0}], 1, "context_options"),
    (["", "   "], 1, "no examples"),
])
def test_bad_file_is_a_one_line_error(tmp_path, rows, line, expect):
  path = _write(tmp_path / "bad.jsonl", rows)
  with pytest.raises(ValueError) as info:
    load_task(path)
  message = str(info.value)
  assert "\n" not in message and message.startswith(f"{path}:{line}:") and expect in message
