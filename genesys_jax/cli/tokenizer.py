"""Train a SentencePiece vocabulary: `python -m genesys_jax.cli.tokenizer --corpus=SPEC --vocab_size=32000
--out=FILE.model` (`train.tokenizer`; use it with `--config.data.vocab=spm --config.data.spm_model=FILE.model`).

`--corpus` takes what `data.corpus` takes (kjv, files:GLOB, tfds:..., seqio:... with `--modules`).
Prints the model's path; a corpus that does not load is one `error:` line and exit 2.
"""

from __future__ import annotations

import sys


def main(argv) -> None:
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top
  from train import data, tokenizer  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  cfg = data.default_data_config()
  cfg.corpus = f.corpus
  cfg.modules = tuple(f.modules)
  cfg.text_docs = f.text_docs
  try:
    print(tokenizer.train_tokenizer(cfg, f.vocab_size, f.out, max_bytes=f.max_bytes))
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


def define_flags() -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("corpus", "kjv", "kjv | files:GLOB | tfds:NAME[/CONFIG][:VERSION] | seqio:TASK")
  flags.DEFINE_list("modules", [], "Modules that register a seqio task (for seqio:).")
  flags.DEFINE_string("text_docs", "file", "Plain text files: one document per file or blank_lines.")
  flags.DEFINE_integer("vocab_size", 32000, "Number of pieces.")
  flags.DEFINE_string("out", None, "Where to write the .model file.")
  flags.DEFINE_integer("max_bytes", 1 << 30, "Text read from the corpus at most.")
  flags.mark_flags_as_required(["out"])


def run() -> None:
  from absl import app  # pylint: disable=g-import-not-at-top
  define_flags()
  app.run(main)


if __name__ == "__main__":
  run()
