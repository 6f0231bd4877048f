"""A fake Gemini endpoint on this machine: `python -m genesys_jax.cli.fake_gemini --port=8765`.

The test double of the Gemini API (`evolution.designers.fake_gemini`): the real google-genai client
talks to it and gets deterministic valid replies per role, e.g. for `configs/ladder.py:llm_smoke`
(any GEMINI_API_KEY value is accepted). Runs until Ctrl-C.
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
  from evolution.designers.fake_gemini import FakeGemini  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--port", type=int, default=8765)
  args = parser.parse_args()
  with FakeGemini(port=args.port) as fake:
    print(f"fake Gemini endpoint at {fake.url} (auto replies; Ctrl-C to stop)", flush=True)
    try:
      while True:
        time.sleep(3600)
    except KeyboardInterrupt:
      pass


if __name__ == "__main__":
  main()
