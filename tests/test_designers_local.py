"""The designers on a real local model, with no key: the packaged SmolLM2-135M (GGUF) served by
llama-cpp-python through the local Gemini-API endpoint a run starts, talked to by the real
google-genai client. One scratch proposal goes propose -> review -> plan -> code -> check.

The model is weak, so what is asserted is the plumbing, not the model's luck: each stage is asked
of the model (a stage whose answer is unusable hands the next one a fixed stand-in, so every stage
runs whatever the model says), every call is answered and recorded at $0, structured answers are
valid JSON of their schema (the grammar), the coder's answer is judged (lint, reading, composition
and the sandboxed checker when it gets that far) and the verdict kept, the endpoint binds 127.0.0.1
and is stopped with the run, and no key exists anywhere. Output caps and one try per stage bound it.
"""

import json
import socket
import urllib.parse

import pytest

from configs import ladder
from evolution.designers import agents, client, context, pipeline, schemas
from evolution.designers.session import Session
from genesys_jax import loop

STAND_IN_PROPOSAL = schemas.Proposal(title="ShiftBlock", abstract="a pre-norm block over a token "
                                     "shift and an MLP", motivation="cheap mixing", plan="two units",
                                     selection="", variant_name="ShiftBlock")
STAND_IN_PLAN = schemas.Plan(units=[
    schemas.PlannedUnit(name="ShiftBlock", role="block", description="x + child(norm(x)) for each child",
                        children=["ShiftMixer", "GatedMLP"]),
    schemas.PlannedUnit(name="ShiftMixer", role="sequence_mixer", description="mix each position "
                        "with the previous one", children=[])], rationale="a root over a mixer and an MLP")


def local_config():
  config = ladder.get_config("llm_local")
  config.ladder.rungs = ("tiny",)
  d = config.designer
  d.kind = "llm"
  d.endpoint = "local:smollm2-135m"
  d.local_ctx = 8192
  d.frequency_penalty = 0.5                 # a 135M model loops without it
  d.max_output_tokens = d.max_output_tokens_limit = 192   # a stage cut short still hands on
  d.proposal_attempts, d.review_pass, d.observe_pass = 1, 1, 1
  d.unit_retries = 1
  return config


def test_one_proposal_through_a_real_local_model_with_no_key(tmp_path, monkeypatch):
  for var in client.KEY_VARS:
    monkeypatch.delenv(var, raising=False)
  controller = loop.Controller(local_config(), str(tmp_path), log=lambda _: None)
  designers, config = controller.designers, controller.config
  url = urllib.parse.urlsplit(designers.endpoint.url)
  try:
    ctx = context.build(controller.store, "scratch", [], config.checker.to_dict(),
                        config.rungs[controller.rungs[0]].to_dict(), set(), controller.rungs)
    session = Session(designers.recorder, designers.cfg, 0)
    proposal, reviews, _ = agents.propose(session, ctx, designers.cfg, None)   # propose -> review
    if proposal is None and not reviews:                      # no proposal could be reviewed:
      agents.review(session, ctx, STAND_IN_PROPOSAL)          # the reviewer reviews the stand-in
    plan, plan_error = agents.plan(session, ctx, proposal or STAND_IN_PROPOSAL, [])  # -> plan
    usable_plan = plan is not None and plan_error is None
    imp = pipeline.Implementer(session, ctx, designers.cfg, proposal or STAND_IN_PROPOSAL,
                               reviews[-1] if reviews else None, plan if usable_plan else STAND_IN_PLAN,
                               designers.check)
    ok, why = imp.run()                                                        # -> code -> check
  finally:
    designers.close()
    controller.store.close()
  assert url.hostname == "127.0.0.1"
  with pytest.raises(OSError), socket.create_connection((url.hostname, url.port), timeout=1):
    pass                                                      # the run stopped its endpoint
  roles = [t["role"] for t in session.transcript]
  firsts = [roles.index(r) for r in ("proposer", "reviewer", "planner", "coder")]
  assert firsts == sorted(firsts), roles                      # every stage asked, in order
  for t in session.transcript:                                # every call answered by the model, free
    assert t["model"] == "smollm2-135m" and t["usd"] == 0 and t["usage"]["prompt"] > 1000, t
    assert t["finish_reason"] in ("STOP", "MAX_TOKENS") and t["reply"] is not None
    if t["role"] != "coder" and t["finish_reason"] == "STOP":  # the grammar kept them JSON of their
      assert not (t["error"] or "").startswith("the reply is not a valid") or "rating" in t["error"], t  # schema (a grammar cannot bound an integer: 1..5 is checked)
  assert imp.tries >= 1 and (ok or why.startswith("unit "))  # the coder's answer was judged ...
  coder = next(t for t in session.transcript if t["role"] == "coder")
  assert "Write the unit" in coder["prompt"] and "Start from this skeleton" in coder["prompt"]
  assert ok or "Try 1:" in why                                # ... and the verdict kept for the retry
  assert client.api_key_from_env() is None and "GEMINI_API_KEY" not in json.dumps(session.transcript)


def _free_port():
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


def test_an_openai_compatible_server_by_url_behind_the_same_endpoint(tmp_path):
  """`openai:URL`: llama.cpp's own OpenAI-compatible server (llama-cpp-python[server]) as a user
  would run it, the schema sent as response_format json_schema; then the server gone."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  from evolution.designers import config as dconfig, endpoint, local_models  # pylint: disable=g-import-not-at-top
  from evolution.designers.client import Call, GeminiTransport  # pylint: disable=g-import-not-at-top
  port = _free_port()
  server = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model",
                             local_models.resolve("smollm2-135m"), "--model_alias", "smollm2-135m",
                             "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048"],
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "server.log", "w"))
  try:
    for _ in range(600):                                       # its model loads in seconds
      try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        break
      except OSError:
        time.sleep(0.1)
    cfg = dconfig.default_config()
    cfg.endpoint, cfg.timeout_s, cfg.retry_attempts = f"openai:http://127.0.0.1:{port}/v1", 300.0, 1
    call = Call("reviewer", "smollm2-135m", "You review proposals. Answer in JSON.",
                "Proposal: add a gated convolution. Rate it 1-5.", "Rating", False,
                (("max_output_tokens", 64), ("seed", 0), ("temperature", 0.0)))
    with endpoint.Endpoint(endpoint.backend(cfg.endpoint, cfg)) as ep:
      cfg.base_url = ep.url
      transport = GeminiTransport(cfg, dconfig.LOCAL_KEY)
      reply = transport(call, schemas.Rating)
      assert reply.error is None and reply.usage["prompt"] > 10 and reply.usage["candidates"] > 0
      assert reply.finish_reason in ("STOP", "MAX_TOKENS")
      if reply.finish_reason == "STOP":
        assert set(json.loads(reply.text)) == {"rating", "review", "suggestions"}
      server.terminate()
      server.wait(timeout=30)
      gone = transport(call, schemas.Rating)
    assert gone.text is None and gone.error.startswith("API error 503") and "unreachable" in gone.error
  finally:
    server.kill()
