"""Scripted replies for the designer tests (the fake endpoint's side of the conversation)."""

from evolution.designers.fake_gemini import TOKEN_SHIFT, fenced

NAME = "ShiftGate"


def unit(mix=0.5, doc="ShiftGate"):
  return TOKEN_SHIFT.format(title=doc, name=NAME, mix=mix)


VALID_1 = unit(0.5, "ShiftGate: a token shift")
VALID_2 = unit(0.4, "ShiftGate: a token shift with a smaller default mix")
SYNTAX_ERROR = VALID_1.replace("def __call__(self, x, z):", "def __call__(self, x, z)")
HOSTILE = VALID_1.replace("import jax.numpy as jnp", "import jax.numpy as jnp\nimport os").replace(
    "m = self.hp(\"mix\")", "m = self.hp(\"mix\") + len(os.environ.get(\"GEMINI_API_KEY\", \"\"))")
NON_CAUSAL = VALID_1.replace("prev = jnp.pad(x, ((0, 0), (1, 0), (0, 0)))[:, :-1]",
                             "prev = jnp.pad(x, ((0, 0), (0, 1), (0, 0)))[:, 1:]")
# A runtime error in the unit's own code (a matmul of mismatched shapes), at RUNTIME_LINE.
RUNTIME = VALID_1.replace("    m = self.hp(\"mix\")\n", "    m = self.hp(\"mix\")\n    prev = prev @ jnp.ones((3, 5))\n")
RUNTIME_LINE = RUNTIME.splitlines().index("    prev = prev @ jnp.ones((3, 5))") + 1
# A real 50 GB allocation on the host (XLA would fold a jnp.zeros(...).sum() away unallocated).
MEMORY_HOG = VALID_1.replace("import jax.numpy as jnp", "import jax.numpy as jnp\nimport numpy as np").replace(
    "m = self.hp(\"mix\")", "m = self.hp(\"mix\") + float(np.ones((50_000_000_000,), np.float32)[-1])")

PROPOSAL = {"title": NAME, "abstract": "Replace attention by a gated token shift.",
            "motivation": "local mixing is cheap", "plan": "one new sequence mixer",
            "selection": "0.0.1", "variant_name": NAME}
PLAN = {"units": [{"name": NAME, "role": "sequence_mixer", "description": "a token shift",
                   "children": []}], "rationale": "one leaf"}


def rating(r, review="ok"):
  return {"json": {"rating": r, "review": review, "suggestions": "none"}}


def code(source):
  return {"text": fenced(source)}
