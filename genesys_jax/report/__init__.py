"""The HTML report of a run: `python -m genesys_jax.report --workdir=DIR` (see site.py)."""
