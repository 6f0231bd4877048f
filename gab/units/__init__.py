"""Built-in unit kinds; importing this package registers them (in this fixed order)."""

from gab.units import attention, combinators, conv, mlp, norm  # noqa: F401
