"""Built-in unit kinds; importing this package registers them (in this fixed order)."""

# pylint: disable=unused-import
from gab.units import attention, combinators, conv, mlp, norm  # noqa: F401  the skeleton's kinds
from gab.units import attention_variants, layernorm, linear_attention, mlp_variants  # noqa: F401
from gab.units import mamba2, retnet, rwkv6, ttt  # noqa: F401  seed layers
