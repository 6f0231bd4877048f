"""Train a SentencePiece vocabulary on a corpus (the command: `python -m genesys_jax.cli.tokenizer`).

`--corpus` takes what `data.corpus` takes (kjv, files:GLOB, tfds:..., seqio:... with
`--modules`). The model reserves the ids seqio and the trainer expect (0 pad, 1 EOS, 2 UNK, no
BOS), falls back to bytes for unseen characters and keeps text as it is (identity
normalisation, whitespace kept), so decode(encode(text)) == text. Use it with
`--config.data.vocab=spm --config.data.spm_model=FILE.model`. The file is written atomically.
"""

from __future__ import annotations

import os
import tempfile
from typing import Iterator

from train import kjv, sources

MAX_LINE = 16384  # bytes of one training "sentence" (longer lines are cut)


def _lines(data_cfg, max_bytes: int) -> Iterator[str]:
  """Lines of the source's text documents, up to `max_bytes` in all."""
  seen = 0
  items = (((None, d) for d in kjv.corpus_documents("kjv")) if data_cfg.corpus == "kjv"
           else sources.make_source(data_cfg).items())
  for _, payload in items:
    if not isinstance(payload, str):
      raise ValueError(f"corpus {data_cfg.corpus!r} yields tokens, not text: train the "
                       "tokenizer on a text corpus (files:, tfds:)")
    for line in payload.split("\n"):
      if line.strip():
        line = line[:MAX_LINE]
        seen += len(line)
        yield line
        if seen >= max_bytes:
          return


def train_tokenizer(data_cfg, vocab_size: int, out: str, max_bytes: int = 1 << 30,
                    threads: int | None = None, model_type: str = "unigram") -> str:
  """Trains the SentencePiece model and writes it to `out` (atomically); returns `out`."""
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top
  if vocab_size < 260:
    raise ValueError(f"--vocab_size {vocab_size}: expected >= 260 (3 specials + 256 byte pieces)")
  out = os.path.abspath(out)
  os.makedirs(os.path.dirname(out), exist_ok=True)
  with tempfile.TemporaryDirectory(dir=os.path.dirname(out)) as tmp:
    prefix = os.path.join(tmp, "spm")
    spm.SentencePieceTrainer.train(
        sentence_iterator=_lines(data_cfg, max_bytes), model_prefix=prefix,
        vocab_size=vocab_size, model_type=model_type, byte_fallback=True,
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, normalization_rule_name="identity",
        remove_extra_whitespaces=False, split_digits=True, allow_whitespace_only_pieces=True,
        max_sentence_length=MAX_LINE * 4, character_coverage=0.9995, hard_vocab_limit=False,
        num_threads=threads or os.cpu_count() or 1, minloglevel=2)
    os.replace(prefix + ".model", out)
  return out
