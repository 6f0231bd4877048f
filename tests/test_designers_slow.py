"""The designer commands end to end (table4, the llm_smoke launch): minutes each, marked slow."""

import json
import os
import socket
import subprocess
import sys

import pytest

from evolution.designers.fake_gemini import FakeGemini
from evolution.store import Store
from genesys_jax.cli import table4
from test_designers_loop import KEY

pytestmark = pytest.mark.slow


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
  server = subprocess.Popen([sys.executable, "-m", "genesys_jax.cli.fake_gemini", f"--port={port}"],
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
