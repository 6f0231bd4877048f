"""Write the seed designs: `python -m genesys_jax.cli.seeds --out=DIR`.

One `<seed>.json` design file per seed of `gab.seeds.SEEDS`; prints each path.
"""

from __future__ import annotations


def main(argv) -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top
  from gab import seeds  # pylint: disable=g-import-not-at-top
  del argv
  for path in seeds.write_seeds(flags.FLAGS.out):
    print(path)


def define_flags() -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("out", None, "Directory to write one <seed>.json design file per seed into.")
  flags.mark_flag_as_required("out")


def run() -> None:
  from absl import app  # pylint: disable=g-import-not-at-top
  define_flags()
  app.run(main)


if __name__ == "__main__":
  run()
