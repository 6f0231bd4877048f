"""The command-line entry points: flags, the config resolved once (`genesys_jax.resolve`), and plain
values handed down to the libraries (gab/, train/, evolution/), which define no flags and never
read configs/.

  check.py          python -m genesys_jax.cli.check          (old: python -m gab.checker)
  train.py          python -m genesys_jax.cli.train          (old: python -m train.train)
  seeds.py          python -m genesys_jax.cli.seeds          (old: python -m gab.seeds)
  export.py         python -m genesys_jax.cli.export         (old: python -m evolution.export)
  prepare.py        python -m genesys_jax.cli.prepare        (old: python -m train.prepare)
  bench.py          python -m genesys_jax.cli.bench          (old: python -m train.bench)
  bench_data.py     python -m genesys_jax.cli.bench_data     (old: python -m train.bench_data)
  bench_checker.py  python -m genesys_jax.cli.bench_checker  (old: python -m gab.bench_checker)
  bench_zeroshot.py python -m genesys_jax.cli.bench_zeroshot (old: python -m train.bench_zeroshot)
  table4.py         python -m genesys_jax.cli.table4         (old: python -m evolution.designers.table4)
  bench_code_format.py  python -m genesys_jax.cli.bench_code_format  (the coder's reply format)

Each old module path still runs: its `if __name__ == "__main__":` block calls the new one.
A run is `python -m genesys_jax.launch` (genesys_jax/launch.py), a worker `genesys_jax.worker`.
Every module here defines its flags only when run (`run()`), so importing one beside another
redefines nothing.
"""

import os as _os

# TensorFlow serves data only (vocabularies, TFDS preparation): keep its C++ logging (`E0000 ...
# failed call to cuInit` on a machine without a GPU) quiet in every command here, as
# genesys_jax/launch.py does. Set before anything imports TensorFlow; the caller may override.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
