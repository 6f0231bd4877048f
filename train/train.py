"""Train one design on one rung: `python -m train.train --design=FILE.json --rung=tiny --workdir=DIR`.

The command is `genesys_jax.cli.train` (flags, config resolution, multi-process runs, --dump_params);
this path is kept so that the old command runs unchanged. The library it drives is `train.trainer`
(and `train.sandboxed` for designs with code units).
"""

if __name__ == "__main__":
  from genesys_jax.cli import train as _cli  # pylint: disable=g-import-not-at-top
  _cli.run()
