"""The heavier designer scenarios (several sandboxed checks each): marked slow."""

import json
import os
import socket
import subprocess
import sys

import pytest

import designer_scripts as s
from genesys_jax.cli import table4
from evolution.designers.fake_gemini import FakeGemini
from evolution.store import Store
from genesys_jax import loop
from test_designers_loop import KEY, fresh, llm_config, seeded  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow

MEMORY_HOG = s.VALID_1.replace("m = self.hp(\"mix\")",
                               "m = self.hp(\"mix\") + jnp.zeros((50_000_000_000,), jnp.float32).sum()")


def test_non_causal_unit_rejected_then_fixed_and_observer_rejection_then_acceptance(seeded, tmp_path,
                                                                                     monkeypatch):
  monkeypatch.setenv("GEMINI_API_KEY", KEY)
  script = {"proposer": [{"json": s.PROPOSAL}], "reviewer": [s.rating(5)], "planner": [{"json": s.PLAN}],
            "coder": [s.code(s.NON_CAUSAL), s.code(MEMORY_HOG), s.code(s.VALID_1), s.code(s.VALID_2)],
            "observer": [s.rating(2, "the mix is too large"), s.rating(4)]}
  workdir = fresh(seeded, tmp_path / "run")
  with FakeGemini(script, fallback=None) as fake:
    loop.run(llm_config(fake.url), str(workdir), log=lambda _: None)
  prompts = [json.dumps(r["body"]) for r in fake.requests if r["role"] == "coder"]
  assert "causality fail" in prompts[1]                     # the checker's report went back
  assert "sandbox" in prompts[2] or "init fail" in prompts[2]   # the 50 GB allocation was contained
  assert "observer rated it 2/5" in prompts[3]
  with Store.open(str(workdir)) as store:
    (child,) = [d for d in store.designs() if d["operator"] == "mutation"]
    assert child["status"] == "verified"
    assert json.loads(child["tree"])["units"].popitem()[1] == s.VALID_2
    ratings = json.loads(store.artifacts(design_id=child["id"], kind="ratings")[0]["content"])
    assert [r["rating"] for r in ratings] == [2, 4]


def test_table4_reports_valid_rate_and_cost_per_design_for_llm_and_direct(tmp_path, monkeypatch, capsys):
  monkeypatch.setenv("GEMINI_API_KEY", KEY)
  with FakeGemini() as fake:
    code = table4.main([f"--workdir={tmp_path}", "--n=1", "--config=configs/ladder.py:smoke",
                        f"--base_url={fake.url}"])
  assert code == 0
  result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  for name in ("llm", "direct"):
    assert result[name]["proposals"] == 1 and result[name]["valid_rate"] == 1.0, result
    assert result[name]["usd_per_design"] > 0
  assert result["llm"]["usd_proposal"] > 0 and result["direct"]["usd_proposal"] == 0


def _free_port():
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


def test_llm_smoke_launch_against_the_fake_endpoint_shows_designers_on_the_leaderboard(tmp_path):
  port = _free_port()
  env = {**os.environ, "GEMINI_API_KEY": KEY, "PYTHONPATH": os.getcwd()}
  server = subprocess.Popen([sys.executable, "-m", "evolution.designers.fake_gemini", f"--port={port}"],
                            env=env, stdout=subprocess.PIPE, text=True)
  try:
    assert "fake Gemini endpoint" in server.stdout.readline()
    out = subprocess.run([sys.executable, "-m", "genesys_jax.launch", "--config=configs/ladder.py:llm_smoke",
                          f"--workdir={tmp_path}", f"--config.designer.base_url=http://127.0.0.1:{port}"],
                         env=env, capture_output=True, text=True, timeout=1800)
  finally:
    server.terminate()
    server.wait()
  assert out.returncode == 0, out.stderr[-2000:]
  assert "[llm " in out.stdout and "review 4/5" in out.stdout, out.stdout[-3000:]
  with Store.open(str(tmp_path)) as store:
    summaries = [json.loads(a["content"]) for a in store.artifacts(kind="designer")]
  assert summaries and all(x["usd"] > 0 and x["tokens_total"] > 0 for x in summaries)
