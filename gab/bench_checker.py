"""Time the full check: `python -m gab.bench_checker` is `genesys_jax.cli.bench_checker` (the
command lives there: it draws mutants with evolution's operators, a higher layer than gab)."""

if __name__ == "__main__":
  from genesys_jax.cli import bench_checker as _cli  # pylint: disable=g-import-not-at-top
  _cli.run()
