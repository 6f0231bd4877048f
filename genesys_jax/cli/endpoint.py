"""A local Gemini-API endpoint by hand: `python -m genesys_jax.cli.endpoint --endpoint=local:MODEL [--port=N]`.

Serves `generateContent` on 127.0.0.1 from a local GGUF model (`local:NAME_OR_PATH`) or an
OpenAI-compatible server (`openai:URL`), as a run with `--config.designer.endpoint=...` does
itself (`evolution.designers.endpoint`). Runs until Ctrl-C.
"""

from __future__ import annotations

import argparse


def main() -> None:
  from evolution.designers import config as dconfig  # pylint: disable=g-import-not-at-top
  from evolution.designers import endpoint  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--endpoint", required=True, help="local:MODEL or openai:URL")
  parser.add_argument("--port", type=int, default=8765)
  args = parser.parse_args()
  try:
    served = endpoint.backend(args.endpoint, dconfig.default_config())
  except (ValueError, FileNotFoundError) as e:
    raise SystemExit(f"error: {e}") from None
  with endpoint.Endpoint(served, args.port) as ep:
    ep.serve_until_interrupted(f"Gemini-API endpoint for {args.endpoint} at {ep.url} (Ctrl-C to stop)")


if __name__ == "__main__":
  main()
