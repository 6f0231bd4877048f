"""The chunked cross-entropy now lives in `gab.loss` (the checker trains through it too); these
names stay importable from here."""

from gab.loss import LOGITS_BUDGET_BYTES, chunk_len, chunked_nll  # noqa: F401 (re-exported)
