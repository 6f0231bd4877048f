"""Zero-shot scorer benchmark: `python -m train.bench_zeroshot` is `genesys_jax.cli.bench_zeroshot`
(the command lives there: it builds its rung with configs/ladder.py's `rung`)."""

if __name__ == "__main__":
  from genesys_jax.cli import bench_zeroshot as _cli  # pylint: disable=g-import-not-at-top
  _cli.run()
