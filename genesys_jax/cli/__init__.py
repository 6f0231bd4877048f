"""The command-line entry points, one name each: flags, the config resolved once
(`genesys_jax.resolve`), and plain values handed down to the libraries (gab/, train/, evolution/),
which define no flags, never read configs/ and have no `__main__` of their own.

  check.py           python -m genesys_jax.cli.check           one design file through the checker
  train.py           python -m genesys_jax.cli.train           one design at one rung
  seeds.py           python -m genesys_jax.cli.seeds           the seed designs as files
  export.py          python -m genesys_jax.cli.export          a run's evolution tree (JSON, GraphML)
  prepare.py         python -m genesys_jax.cli.prepare         a corpus into token shards
  tokenizer.py       python -m genesys_jax.cli.tokenizer       a SentencePiece vocabulary
  bench.py           python -m genesys_jax.cli.bench           training throughput
  bench_data.py      python -m genesys_jax.cli.bench_data      data pipeline throughput
  bench_checker.py   python -m genesys_jax.cli.bench_checker   the checker's wall time
  bench_zeroshot.py  python -m genesys_jax.cli.bench_zeroshot  the zero-shot scorer
  bench_workers.py   python -m genesys_jax.cli.bench_workers   verifier throughput, controller overhead
  table4.py          python -m genesys_jax.cli.table4          the LLM designers' valid rate
  fake_gemini.py     python -m genesys_jax.cli.fake_gemini     the fake Gemini endpoint
  endpoint.py        python -m genesys_jax.cli.endpoint        a local Gemini-API endpoint (GGUF or OpenAI URL)
  bench_code_format.py  python -m genesys_jax.cli.bench_code_format  the coder's reply format, measured

A run is `python -m genesys_jax.launch` (genesys_jax/launch.py), a worker `genesys_jax.worker`.
Every module here defines its flags only when run (`run()`), so importing one beside another
redefines nothing.
"""


def quiet_absl_logging() -> None:
  """absl logs INFO by default (e.g. JAX's `Unable to initialize backend 'tpu'` on every machine
  without one, Orbax's every restore): WARNING, unless the command line sets --verbosity."""
  from absl import flags, logging  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
