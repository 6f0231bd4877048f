"""The Ladder of Scales and the evolution run around it.

Variants (`--config=configs/ladder.py[:VARIANT]`):
- default: a CPU ladder of three rungs (tiny -> small -> medium) that finishes on a 2-core machine
  in about 15 minutes;
- `smoke`: a tiny run for tests (about 2 minutes), still promoting one design to a second rung;
- `discovery`: sized for `genesys_jax.experiment` (arms x seeds): two rungs, 10 proposals, three
  top-rung slots for discovered designs, a few minutes per run on 2 CPU cores;
- `llm_smoke`: `smoke` with the LLM designers mixed in (`designer.kind=mixed`) against a Gemini-
  compatible endpoint at http://127.0.0.1:8765, e.g. the fake one: `python -m
  genesys_jax.cli.fake_gemini --port=8765` (any GEMINI_API_KEY value is accepted there);
- `llm_local`: `smoke` with the LLM designers mixed in, on a local model and no key: the packaged
  Qwen2.5-Coder-1.5B (GGUF) served by llama-cpp-python in the run's process through a local
  Gemini-API endpoint (README "LLM designers on a local model" says how to install it);
- `paper`: the original's ladder (14M/31M/70M/125M/350M, context 2048, 0.5M-token batches, tokens =
  parameters x 50/40/30/20/20). It expects the original's 32k SentencePiece vocabulary:
  `--config.data.spm_model=PATH/to/tokenizer.model`.
Every field can be overridden on the command line, e.g. `--config.rungs.tiny.lr=1e-3`; each field's
default, rule and help are defined once, in its section's record (genesys_jax/run_config.py).
"""

from ml_collections import ConfigDict

from evolution.designers import config as designer_config
from genesys_jax import run_config
from train import rung as rung_lib


def rung(d_model, n_blocks, target_params, lr, batch_size, train_tokens=0, tokens_per_param=0,
         eval_batches=8, warmup_frac=0.02, grad_accum=1):
  """One rung (train/rung.py). The token budget is `train_tokens`, or parameters x
  `tokens_per_param` if that is 0.

  `target_params` is the size designs are fitted to (+-20%, by adjusting d_model and n_blocks
  from the values given here); it is the GPT seed's size at this d_model and n_blocks.
  """
  return rung_lib.make(d_model=d_model, n_blocks=n_blocks, target_params=target_params, lr=lr,
                       batch_size=batch_size, train_tokens=train_tokens,
                       tokens_per_param=float(tokens_per_param), eval_batches=eval_batches,
                       warmup_frac=warmup_frac, grad_accum=grad_accum)


def get_config(variant: str | None = None) -> ConfigDict:
  c = run_config.default_config()  # every field's default, help and rule: genesys_jax/run_config.py
  c.checker.min_d_model = 32  # small CPU rungs: let sizing narrow below 64 (e.g. Mamba2 at tiny)
  c.train.save_every = 50  # an interrupted training resumes from its last checkpoint, not step 0
  # Rungs lowest first; the top rung gets n_target slots, each lower one its upper neighbour's / ratio.
  c.ladder.update(dict(rungs=("tiny", "small", "medium"), n_target=1, ratio=0.5))
  c.rungs = ConfigDict(dict(
      tiny=rung(64, 2, 117_248, lr=3e-3, batch_size=16, train_tokens=400_000),
      small=rung(96, 3, 364_224, lr=2e-3, batch_size=16, train_tokens=800_000),
      medium=rung(128, 4, 824_832, lr=1e-3, batch_size=16, train_tokens=1_000_000),
  ))
  if variant in (None, ""):
    return c
  if variant in ("smoke", "llm_smoke", "llm_local"):
    c.data.seq_len = 64
    c.train.save_every = 20
    c.evolution.n_proposals = 3
    c.ladder.rungs = ("tiny", "small")
    c.ladder.ratio = 0.5
    c.ladder.top_fraction = 0.5  # the seed and 3 proposals at tiny: the better half may go up
    c.rungs.tiny = rung(32, 1, 20_928, lr=3e-3, batch_size=8, train_tokens=20_000, eval_batches=4)
    c.rungs.small = rung(64, 2, 117_248, lr=3e-3, batch_size=8, train_tokens=20_000, eval_batches=4)
    del c.rungs["medium"]
    if variant == "llm_smoke":
      c.evolution.n_proposals = 4
      c.designer.kind = "mixed"
      c.designer.llm_prob = 0.75
      c.designer.base_url = "http://127.0.0.1:8765"
      c.designer.timeout_s = 30.0
      c.designer.retry_initial_s = 0.2
      for role in designer_config.ROLES:
        c.designer.models[role] = "gemini-2.5-flash"
      c.designer.unit_retries = 3
      c.designer.max_failed_implementations = 2
      c.designer.max_usd = 1.0
    if variant == "llm_local":
      c.evolution.n_proposals = 3
      c.designer.kind = "mixed"
      c.designer.llm_prob = 0.67
      c.designer.endpoint = "local:qwen2.5-coder-1.5b"
      # A 1.5B model on a CPU: minutes per call, so a call may take long, a retry of a timed-out
      # call would redo it, and the tries per design are fewer than the original's (5/7/3).
      c.designer.timeout_s = 3600.0
      c.designer.retry_attempts = 1
      c.designer.temperature = 0.7
      c.designer.max_output_tokens = 1536
      c.designer.max_output_tokens_limit = 4096
      c.designer.proposal_attempts = 3
      # One implementation of 4 tries: a refused plan no longer ends it (the fallback plan reaches
      # the coder), and at ~75 s a try (a call and a sandboxed check) a second implementation
      # doubled a proposal's time for a model that mostly repeated its first code.
      c.designer.unit_retries = 4
      c.designer.max_failed_implementations = 1
    return c
  if variant == "discovery":
    # A local discovery study (genesys_jax.experiment): two rungs, three top-rung slots for
    # discovered designs, a few minutes per (arm, seed) on 2 CPU cores.
    c.evolution.n_proposals = 10
    c.train.save_every = 20
    c.ladder.rungs = ("tiny", "small")
    c.ladder.n_target = 3
    c.ladder.top_fraction = 0.5  # three slots for the better half of ~10 designs at tiny
    c.rungs.tiny = rung(64, 2, 117_248, lr=3e-3, batch_size=16, train_tokens=80_000, eval_batches=8)
    c.rungs.small = rung(96, 3, 364_224, lr=2e-3, batch_size=16, train_tokens=160_000, eval_batches=8)
    del c.rungs["medium"]
    return c
  if variant == "paper":
    c.seeds = ("gpt", "mamba2", "retnet", "rwkv6", "ttt")
    c.data.seq_len = 2048
    c.data.vocab = "spm"
    c.checker.min_d_model = 64
    c.train.dtype = "bfloat16"
    c.checker.dtype = c.train.dtype  # the checker also checks numerics and causality in it
    c.train.save_every = 200
    c.evolution.n_proposals = 1000
    c.evolution.mode_probs = dict(scratch=0.05, mutation=0.75, crossover=0.20)
    c.ladder.update(dict(rungs=("r14m", "r31m", "r70m", "r125m", "r350m"), n_target=1, ratio=0.25))
    batch = 256  # sequences of 2048 tokens: 0.5M tokens per step
    c.rungs = ConfigDict(dict(
        r14m=rung(128, 6, 5_280_000, lr=1e-3, batch_size=batch, tokens_per_param=50, eval_batches=16),
        r31m=rung(256, 6, 12_900_000, lr=1e-3, batch_size=batch, tokens_per_param=40, eval_batches=16),
        r70m=rung(512, 6, 35_300_000, lr=1e-3, batch_size=batch, tokens_per_param=30, eval_batches=16),
        r125m=rung(768, 12, 109_600_000, lr=6e-4, batch_size=batch, tokens_per_param=20, eval_batches=16,
                   grad_accum=2),
        r350m=rung(1024, 24, 334_900_000, lr=3e-4, batch_size=batch, tokens_per_param=20, eval_batches=16,
                   grad_accum=4),
    ))
    return c
  raise ValueError(f"unknown variant {variant!r} of configs/ladder.py: expected '', 'smoke', "
                   f"'llm_smoke', 'llm_local', 'discovery' or 'paper'")
