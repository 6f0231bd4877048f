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

A run is `python -m genesys_jax.launch` (genesys_jax/launch.py), a worker `genesys_jax.worker`.
Every module here defines its flags only when run (`run()`), so importing one beside another
redefines nothing.
"""

import os as _os

# TensorFlow serves data only (vocabularies, TFDS preparation): keep its C++ logging (`E0000 ...
# failed call to cuInit` on a machine without a GPU) quiet in every command here, as
# genesys_jax/launch.py does. Set before anything imports TensorFlow; the caller may override.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
