"""Design identity (canonical form, functional fingerprint) now lives in `gab.canonical`: it is a
property of a unit tree, and the sandboxed checker computes fingerprints there. These names stay
importable from here."""

from gab.canonical import (  # noqa: F401 (re-exported)
    _round_significant, canonical, canonical_id, fingerprint)
