"""The designers on a real local model, with no key: the packaged SmolLM2-135M (GGUF) served by
llama-cpp-python through the local Gemini-API endpoint the run starts, talked to by the real
google-genai client. One scratch proposal goes propose -> review -> plan -> code -> check.

The model is weak: what is asserted is the plumbing (every call answered and recorded, every
structured answer valid JSON of its schema under the grammar, the coder's answer judged, the
endpoint started and stopped, no key anywhere), not the model's luck. Its length is bounded by
small output caps and one try per stage."""

import json
import socket
import urllib.parse

import pytest

from configs import ladder
from evolution.designers import client
from evolution.store import Store
from genesys_jax import loop


def local_config():
  config = ladder.get_config("llm_local")
  config.evolution.mode_probs = dict(scratch=1.0, mutation=0.0, crossover=0.0)
  config.ladder.rungs = ("tiny",)
  d = config.designer
  d.kind = "llm"
  d.endpoint = "local:smollm2-135m"
  d.local_ctx = 8192
  d.temperature = 0.0                       # greedy: the same answers every run
  d.max_output_tokens, d.max_output_tokens_limit = 320, 640
  d.proposal_attempts, d.review_pass, d.observe_pass = 1, 1, 1   # any rating passes: reach the coder
  d.unit_retries, d.max_failed_implementations = 1, 2
  return config


def test_one_proposal_through_a_real_local_model_with_no_key(tmp_path, monkeypatch):
  for var in client.KEY_VARS:
    monkeypatch.delenv(var, raising=False)
  evo = loop.Evolution(local_config(), str(tmp_path), log=lambda _: None)
  url = evo.designers.endpoint.url
  try:
    evo.step(0, 1)
  finally:
    evo.designers.close()
    evo.store.close()
  host, port = urllib.parse.urlsplit(url).hostname, urllib.parse.urlsplit(url).port
  assert host == "127.0.0.1"
  with pytest.raises(OSError), socket.create_connection((host, port), timeout=1):
    pass                                                      # the run stopped its endpoint
  with Store.open(str(tmp_path)) as store:
    calls = [json.loads(a["content"]) for a in store.artifacts(kind="llm_call")]
    (summary,) = [json.loads(a["content"]) for a in store.artifacts(kind="designer")]
    (transcript,) = [json.loads(a["content"]) for a in store.artifacts(kind="transcript")]
    failures = [json.loads(a["content"]) for a in store.artifacts(kind="failures")]
    ratings = [json.loads(a["content"]) for a in store.artifacts(kind="ratings")]
  roles = [c["role"] for c in calls]
  assert roles[:2] == ["proposer", "reviewer"] and "planner" in roles, roles
  for c in calls:                                             # every call answered by the model
    assert c["request"]["model"] == "smollm2-135m" and c["usd"] == 0
    assert c["reply"]["error"] is None and c["reply"]["usage"]["prompt"] > 1000
    assert c["reply"]["finish_reason"] in ("STOP", "MAX_TOKENS")
  for t in transcript:                                        # the grammar kept structured answers valid
    if t["role"] in ("proposer", "reviewer", "planner", "observer") and t["finish_reason"] == "STOP":
      assert not (t["error"] or "").startswith("the reply is not a valid"), t
  assert summary["designer"] == "llm" and summary["status"] in ("accepted", "challenging")
  coder = [t for t in transcript if t["role"] == "coder"]
  assert coder, "the coder was never asked"                   # propose -> review -> plan -> code
  assert "Write the unit" in coder[0]["prompt"] and "Start from this skeleton" in coder[0]["prompt"]
  assert summary["attempts"] >= 1                             # ... -> check: each answer was judged,
  verdicts = " ".join(json.dumps(f) for f in failures) + json.dumps(ratings)
  assert "Try 1:" in verdicts or summary["status"] == "accepted", verdicts   # and the verdict kept
  assert "GEMINI_API_KEY" not in json.dumps(calls) and client.api_key_from_env() is None
