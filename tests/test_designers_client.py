"""The Gemini client, recording, replay, cost and config checks, against the fake endpoint through
the real google-genai client (no network)."""

import json
import os

import pytest

from evolution.designers import config as dconfig
from evolution.designers import cost, schemas
from evolution.designers.client import Call, GeminiTransport
from evolution.designers.fake_gemini import FakeGemini
from evolution.designers.record import Recorder, ReplayError, load_records
from evolution.designers.session import DesignBudgetExhausted, RunBudgetExhausted, Session
from evolution.store import Store

KEY = "sk-test-KEY-3f9c2a7e51"


def transport_cfg(url, **over):
  cfg = dconfig.default_config()
  cfg.base_url = url
  cfg.retry_initial_s, cfg.retry_max_s, cfg.timeout_s = 0.01, 0.05, 5.0
  cfg.update(over)
  return cfg


def call(role, prompt="hello", **kw):
  return Call(role, "gemini-2.5-flash", f"[genesys_jax role: {role}] system", prompt, **kw)


RATING = {"rating": 4, "review": "fine", "suggestions": "none"}


def test_retries_429_then_503_then_success_and_the_key_goes_only_in_the_header():
  with FakeGemini({"reviewer": [{"status": 429}, {"status": 503}, {"json": RATING}]}, fallback=None) as fake:
    reply = GeminiTransport(transport_cfg(fake.url), KEY)(call("reviewer", schema="Rating"), schemas.Rating)
  assert reply.error is None and json.loads(reply.text) == RATING
  assert fake.roles() == ["reviewer"] * 3
  assert reply.usage == {"prompt": 1000, "candidates": 400, "thoughts": 100, "tool_prompt": 0, "total": 1500}
  assert reply.finish_reason == "STOP"
  for r in fake.requests:
    headers = {k.lower(): v for k, v in r["headers"].items()}
    assert headers["x-goog-api-key"] == KEY and r["version"] == "v1beta"
    assert KEY not in json.dumps(r["body"])
  body = fake.requests[0]["body"]
  assert body["generationConfig"]["responseMimeType"] == "application/json"
  assert "rating" in json.dumps(body["generationConfig"]["responseSchema"])


def test_errors_that_are_not_retried_and_exhausted_retries_become_reply_errors():
  with FakeGemini({"reviewer": [{"status": 400, "message": "bad request"}],
                   "observer": [{"status": 503}] * 3}, fallback=None) as fake:
    t = GeminiTransport(transport_cfg(fake.url, retry_attempts=3), KEY)
    bad = t(call("reviewer"), schemas.Rating)
    down = t(call("observer"), schemas.Rating)
  assert bad.text is None and bad.error.startswith("API error 400") and "bad request" in bad.error
  assert down.error.startswith("API error 503")
  assert fake.roles() == ["reviewer"] + ["observer"] * 3


def test_a_reply_that_times_out_is_retried_then_reported_as_a_timeout_not_an_api_error():
  with FakeGemini({"planner": [{"delay": 1.0, "json": RATING}, {"json": RATING}],
                   "coder": [{"delay": 1.0}, {"delay": 1.0}]}, fallback=None) as fake:
    t = GeminiTransport(transport_cfg(fake.url, timeout_s=0.3, retry_attempts=2), KEY)
    recovered = t(call("planner"), schemas.Rating)
    lost = t(call("coder"), schemas.Rating)
  assert recovered.error is None and json.loads(recovered.text) == RATING
  assert lost.text is None and lost.error.startswith("timeout after 0.3 s")


def test_malformed_structured_output_gives_a_message_to_feed_back():
  with FakeGemini({"reviewer": [{"text": '{"rating": "four", "review": "x"'}, {"raw": "<html>oops"}]},
                  fallback=None) as fake:
    t = GeminiTransport(transport_cfg(fake.url), KEY)
    truncated = t(call("reviewer"), schemas.Rating)
    garbage = t(call("reviewer"), schemas.Rating)
  parsed, error = schemas.validate(schemas.Rating, truncated.text)
  assert parsed is None and "not a valid Rating JSON object" in error
  parsed, error = schemas.validate(schemas.Rating, '{"rating": "four", "review": "x", "suggestions": ""}')
  assert parsed is None and "rating" in error
  assert garbage.text is None and garbage.error.startswith("malformed response body")


def test_v1_path_and_search_grounding_queries_and_urls():
  with FakeGemini() as fake:
    reply = GeminiTransport(transport_cfg(fake.url, api_version="v1"), KEY)(call("searcher", search=True))
  assert fake.requests[0]["version"] == "v1"
  assert fake.requests[0]["body"]["tools"] == [{"googleSearch": {}}]
  assert reply.grounding == {"queries": ["token shift language model"],
                             "urls": [{"uri": "https://arxiv.org/abs/2305.13048", "title": "RWKV"}]}


def test_cost_from_usage_and_the_pricing_table():
  pricing = dconfig.parse_pricing(dconfig.default_config().pricing)
  assert pricing["gemini-2.5-pro"] == {"input": 1.25, "output": 10.0}
  usage = {"prompt": 1_000_000, "candidates": 100_000, "thoughts": 100_000, "tool_prompt": 0}
  assert cost.usd(pricing, "gemini-2.5-pro", usage) == pytest.approx(1.25 + 2.0)
  with pytest.raises(ValueError, match="no entry for model 'mystery'"):
    cost.usd(pricing, "mystery", usage)
  with pytest.raises(ValueError, match="expected 'MODEL: USD_IN USD_OUT'"):
    dconfig.parse_pricing("gemini-2.5-pro 1.25")


def _session_cfg(**over):
  cfg = dconfig.default_config()
  cfg.update(over)
  return cfg


def test_recording_then_replay_without_the_server_and_loud_failure_on_a_missing_call(tmp_path):
  pricing = dconfig.parse_pricing(dconfig.default_config().pricing)
  with FakeGemini() as fake, Store.open(str(tmp_path / "old")) as store:
    rec = Recorder(store, pricing, transport=GeminiTransport(transport_cfg(fake.url), KEY))
    s = Session(rec, _session_cfg(), 0)
    first = [s.ask("reviewer", "[genesys_jax role: reviewer] r", f"p{i}", schemas.Rating) for i in range(2)]
    assert rec.spent() == pytest.approx(2 * cost.usd(pricing, "gemini-2.5-flash", first[0][0].usage))
  records = load_records(str(tmp_path / "old"))
  assert sorted(records) == [(0, "reviewer", 0), (0, "reviewer", 1)]
  with Store.open(str(tmp_path / "new")) as store:   # the server is gone: only the record answers
    rec = Recorder(store, pricing, replay=records, replay_from="old")
    s = Session(rec, _session_cfg(), 0)
    again = [s.ask("reviewer", "[genesys_jax role: reviewer] r", f"p{i}", schemas.Rating) for i in range(2)]
    assert [a[1] for a in again] == [f[1] for f in first]
    with pytest.raises(ReplayError, match="no recorded reviewer call #2 of proposal 0"):
      s.ask("reviewer", "[genesys_jax role: reviewer] r", "p2", schemas.Rating)
    s2 = Session(rec, _session_cfg(), 0)
    with pytest.raises(ReplayError, match="differs from the recorded request"):
      s2.ask("reviewer", "[genesys_jax role: reviewer] r", "changed prompt", schemas.Rating)
  for root, _, files in os.walk(tmp_path):
    for f in files:
      with open(os.path.join(root, f), "rb") as fh:
        assert KEY.encode() not in fh.read()


def test_budgets_per_design_and_per_run(tmp_path):
  pricing = dconfig.parse_pricing(dconfig.default_config().pricing)
  one = cost.usd(pricing, "gemini-2.5-flash", {"prompt": 1000, "candidates": 400, "thoughts": 100})
  with FakeGemini() as fake, Store.open(str(tmp_path)) as store:
    rec = Recorder(store, pricing, transport=GeminiTransport(transport_cfg(fake.url), KEY))
    s = Session(rec, _session_cfg(max_usd_per_design=1.5 * one), 0)
    s.ask("reviewer", "[genesys_jax role: reviewer] r", "a", schemas.Rating)
    s.ask("reviewer", "[genesys_jax role: reviewer] r", "b", schemas.Rating)
    with pytest.raises(DesignBudgetExhausted):
      s.ask("reviewer", "[genesys_jax role: reviewer] r", "c", schemas.Rating)
    assert s.summary()["usd_proposal"] == pytest.approx(2 * one)
    s = Session(rec, _session_cfg(max_usd=2.5 * one), 1)
    s.ask("planner", "[genesys_jax role: planner] r", "a", schemas.Rating)
    with pytest.raises(RunBudgetExhausted, match="designer budget exhausted"):
      s.ask("planner", "[genesys_jax role: planner] r", "b", schemas.Rating)
    assert s.summary()["usd_implementation"] == pytest.approx(one)


def test_an_llm_run_without_a_key_is_one_error_before_anything_is_written(tmp_path, monkeypatch):
  from configs import ladder  # pylint: disable=g-import-not-at-top
  from genesys_jax import loop  # pylint: disable=g-import-not-at-top
  for var in dconfig.client.KEY_VARS:
    monkeypatch.delenv(var, raising=False)
  config = ladder.get_config("llm_smoke")
  workdir = tmp_path / "run"
  with pytest.raises(ValueError, match="needs a Gemini API key in the environment: set GEMINI_API_KEY"):
    loop.run(config, str(workdir))
  assert not workdir.exists()
  config.designer.models.coder = "unpriced-model"
  config.designer.kind = "llm"
  monkeypatch.setenv("GEMINI_API_KEY", KEY)
  with pytest.raises(ValueError, match="config.designer.models.coder = 'unpriced-model': has no price"):
    loop.run(config, str(workdir))
  assert not workdir.exists()


# -- the reply shapes a real Gemini sends, and what the session does with each ----------------------
def _shapes_session(fake, store, **over):
  pricing = dconfig.parse_pricing(dconfig.default_config().pricing)
  rec = Recorder(store, pricing, transport=GeminiTransport(transport_cfg(fake.url), KEY))
  return Session(rec, _session_cfg(max_output_tokens=1000, max_output_tokens_limit=4000, **over), 0)


def _config(request):
  return request["body"]["generationConfig"]


def test_thinking_that_eats_the_output_cap_is_re_asked_with_a_larger_cap_and_bounded_thinking(tmp_path):
  with FakeGemini({"reviewer": [{"think": 1500, "json": RATING}] * 2}, fallback=None) as fake, \
      Store.open(str(tmp_path)) as store:
    s = _shapes_session(fake, store)
    reply, parsed, error = s.ask("reviewer", "[genesys_jax role: reviewer] r", "p", schemas.Rating)
  assert error is None and parsed.rating == 4 and reply.finish_reason == "STOP"
  first, second = fake.requests
  assert _config(first)["maxOutputTokens"] == 1000 and "thinkingConfig" not in _config(first)
  assert _config(second)["maxOutputTokens"] == 2000 and _config(second)["thinkingConfig"]["thinking_budget"] == 1000
  assert s.summary()["reasks"] == {"max_tokens": 1} and s.summary()["calls"] == {"reviewer": 2}
  assert [t["finish_reason"] for t in s.transcript] == ["MAX_TOKENS", "STOP"]


def test_an_answer_cut_at_the_cap_limit_gets_the_shorter_ask(tmp_path):
  long = {"json": RATING, "answer_tokens": 5000}
  with FakeGemini({"planner": [long, long, long, {"json": RATING}]}, fallback=None) as fake, \
      Store.open(str(tmp_path)) as store:
    s = _shapes_session(fake, store)
    _, parsed, error = s.ask("planner", "[genesys_jax role: planner] r", "full prompt", schemas.Rating,
                             short_prompt="short prompt")
  assert error is None and parsed.rating == 4
  caps = [_config(r)["maxOutputTokens"] for r in fake.requests]
  assert caps == [1000, 2000, 4000, 4000]                   # doubled up to the limit, then asked for less
  last = fake.requests[-1]["body"]["contents"][0]["parts"][0]["text"]
  assert last.startswith("short prompt") and "cut off at the output limit" in last
  assert s.summary()["reasks"] == {"max_tokens": 3}


def test_a_blocked_prompt_is_asked_again_without_its_optional_context(tmp_path):
  blocked = {"block": "SAFETY", "if": "sibling", "json": RATING}
  with FakeGemini({"reviewer": [blocked] * 3}, fallback=None) as fake, Store.open(str(tmp_path)) as store:
    s = _shapes_session(fake, store)
    _, parsed, error = s.ask("reviewer", "[genesys_jax role: reviewer] r", "core + sibling designs",
                             schemas.Rating, short_prompt="core")
    assert error is None and parsed.rating == 4
    assert s.transcript[0]["blocked"] == "SAFETY" and s.transcript[0]["error"] == "empty reply (SAFETY)"
    _, parsed, error = s.ask("reviewer", "[genesys_jax role: reviewer] r", "no short form: sibling",
                             schemas.Rating)
  assert parsed is None and error == "empty reply (SAFETY)"   # nothing shorter to ask: a plain failure
  assert len(fake.requests) == 3


def test_an_answer_withheld_for_safety_counts_as_blocked(tmp_path):
  with FakeGemini({"observer": [{"withheld": "SAFETY"}, {"json": RATING}]}, fallback=None) as fake, \
      Store.open(str(tmp_path)) as store:
    s = _shapes_session(fake, store)
    _, parsed, error = s.ask("observer", "[genesys_jax role: observer] r", "x", schemas.Rating, short_prompt="y")
  assert parsed.rating == 4 and s.summary()["reasks"] == {"blocked": 1}


def test_empty_candidates_are_asked_again_once_and_thought_parts_are_not_the_answer(tmp_path):
  with FakeGemini({"reviewer": [{"empty": True}, {"thought": "Let me think: {\"rating\": 1", "json": RATING}],
                   "planner": [{"empty": True}, {"empty": True}]}, fallback=None) as fake, \
      Store.open(str(tmp_path)) as store:
    s = _shapes_session(fake, store)
    reply, parsed, error = s.ask("reviewer", "[genesys_jax role: reviewer] r", "x", schemas.Rating)
    assert error is None and parsed.rating == 4 and json.loads(reply.text) == RATING
    _, parsed, error = s.ask("planner", "[genesys_jax role: planner] r", "x", schemas.Rating)
  assert parsed is None and error == "empty reply (no candidates)"
  assert s.summary()["reasks"] == {"empty": 2} and len(fake.requests) == 4
