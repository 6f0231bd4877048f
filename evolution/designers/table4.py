"""Valid-implementation rate and cost per design, `llm` vs `direct` (the original's Table 4):
`python -m evolution.designers.table4` is `genesys_jax.cli.table4` (the command lives there: it runs
the evolution loop, a higher layer than evolution)."""

if __name__ == "__main__":
  import sys  # pylint: disable=g-import-not-at-top
  from genesys_jax.cli import table4 as _cli  # pylint: disable=g-import-not-at-top
  sys.exit(_cli.main())
