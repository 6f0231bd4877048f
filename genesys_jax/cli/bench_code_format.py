"""Which reply format serves the coder better: code in a ```python block, or inside a JSON string?

  python -m genesys_jax.cli.bench_code_format --endpoint=local:qwen2.5-coder-1.5b --n=4 [--out=F]

The same coder task (a mutation of the GPT seed: its attention replaced by one new sequence mixer,
the coder's real prompt) is asked `n` times per format with different sampling seeds, the formats
interleaved so that load on the machine falls on both alike; the JSON format gets the same prompt
with the answer instruction swapped for a JSON object {"source", "notes"} under a response schema
(a grammar on a local model; a reply that is JSON only to Python's lenient parser, e.g. with raw
newlines inside the string, is still judged on its code, and counted in `strict_json` apart). Each answer is judged as the pipeline would: parsed, linted, its KIND
read, composed and checked in the sandbox. Prints one JSON object per format: answers usable,
lint-clean, readable, passing the checker, and the seconds and output tokens per answer.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import pydantic


class JsonCode(pydantic.BaseModel):
  source: str
  notes: str


PROPOSAL = dict(title="GatedConvMix", abstract="Replace attention by a gated causal depthwise "
                "convolution followed by a per-channel decaying running mean.",
                motivation="local mixing plus a cheap long-range summary at linear cost",
                plan="one new sequence mixer: a causal depthwise conv (kernel 4) gated by a "
                "sigmoid projection, plus an exponentially decaying cumulative mean of the input",
                selection="0.0.1", variant_name="GatedConvMix")


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--endpoint", required=True)
  parser.add_argument("--n", type=int, default=4)
  parser.add_argument("--max_tokens", type=int, default=1536)
  parser.add_argument("--out", default="")
  args = parser.parse_args(argv)
  from configs import ladder  # pylint: disable=g-import-not-at-top
  from evolution.designers import config as dconfig, context, endpoint, pipeline, prompts, schemas
  from evolution.designers import coder
  from evolution.designers.client import Call, GeminiTransport
  from gab import codeunits, registry, seeds
  from gab.tree import DesignError, design_to_json
  from genesys_jax import resolve
  config = resolve.resolve(ladder.get_config("smoke"))
  rung = config.rungs[config.ladder.rungs[0]].to_dict()
  ctx = context.Context("mutation", [], [seeds.seed("gpt")], {}, config.checker.to_dict(), rung, set(),
                        [], [], ["gpt: validation bits per byte none yet"], {})
  proposal = schemas.Proposal(**PROPOSAL)
  plan = schemas.Plan(units=[schemas.PlannedUnit(name="GatedConvMix", role="sequence_mixer",
                                                 description=PROPOSAL["plan"], children=[])],
                      rationale="one leaf")
  imp = pipeline.Implementer(None, ctx, None, proposal, None, plan, None)
  text, _ = coder.prompt(imp.job("GatedConvMix"), [])
  head, _, _ = text.rpartition("\n\nAnswer with the complete code unit")
  json_text = head + ("\n\nAnswer with a JSON object: \"source\" (the complete code unit, as one "
                      "string) and \"notes\".")
  cfg = dconfig.default_config()
  cfg.endpoint, cfg.timeout_s, cfg.retry_attempts = args.endpoint, 3600.0, 1
  served = endpoint.Endpoint(endpoint.backend(args.endpoint, cfg))
  cfg.base_url = served.url
  transport = GeminiTransport(cfg, dconfig.LOCAL_KEY)
  check = pipeline.sandbox_checker(300.0)
  results: dict[str, list[dict]] = {"fenced": [], "json": []}
  try:
    for i in range(args.n):
      for fmt in ("fenced", "json"):
        settings = (("max_output_tokens", args.max_tokens), ("seed", i), ("temperature", 0.7))
        call = Call("coder", "local", prompts.system("coder"), text if fmt == "fenced" else json_text,
                    "" if fmt == "fenced" else "JsonCode", False, settings)
        start = time.monotonic()
        reply = transport(call, None if fmt == "fenced" else JsonCode)
        row = {"seconds": round(time.monotonic() - start, 1), "output_tokens": reply.usage["candidates"],
               "finish": reply.finish_reason, "usable": False, "lint_clean": False, "readable": False,
               "passed": False, "why": ""}
        if fmt == "fenced":
          source, _, error = schemas.code_reply(reply.text)
        else:  # strict JSON, else as Python's lenient parser reads it (raw newlines in strings)
          parsed, error = schemas.validate(JsonCode, reply.text)
          row["strict_json"] = parsed is not None
          if parsed is None and reply.text:
            try:
              parsed = JsonCode.model_validate(json.loads(reply.text, strict=False))
            except (ValueError, pydantic.ValidationError):
              pass
          source = parsed.source if parsed else None
        row["usable"] = source is not None
        if source is None:
          row["why"] = str(error)[:200]
        elif (lint := codeunits.lint(source)):
          row["why"] = lint[0]
        else:
          row["lint_clean"] = True
          try:
            kind = codeunits.declare(source)
            unit = codeunits.unit(kind)
            assert unit.name == "GatedConvMix" and unit.declaration["role"] == "sequence_mixer", unit.name
            tree = registry.normalize(imp.compose({"GatedConvMix": kind}))
            row["readable"] = not registry.type_errors(tree)
            report = check(design_to_json(tree, units={kind: source}), ctx, True)
            row["passed"] = bool(report.get("passed"))
            row["why"] = "" if row["passed"] else prompts.render_report(report)[:300]
          except (DesignError, AssertionError) as e:
            row["why"] = f"{type(e).__name__}: {e}"[:200]
        results[fmt].append(row)
        print(json.dumps({"format": fmt, "try": i, **row}), file=sys.stderr, flush=True)
  finally:
    served.close()
  summary = {fmt: {"answers": len(rows), **{k: sum(r.get(k, 0) for r in rows) for k in
                                              ("usable", "lint_clean", "readable", "passed", "strict_json")},
                   "seconds_per_answer": round(sum(r["seconds"] for r in rows) / max(len(rows), 1), 1),
                   "output_tokens_per_answer": round(sum(r["output_tokens"] for r in rows) / max(len(rows), 1))}
             for fmt, rows in results.items()}
  if args.out:
    with open(args.out, "w") as f:
      json.dump({"summary": summary, "answers": results}, f, indent=1)
  print(json.dumps(summary, sort_keys=True))
  return 0


if __name__ == "__main__":
  sys.exit(main())
