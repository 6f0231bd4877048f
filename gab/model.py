"""Compile unit trees into Flax modules: the GAB block and the language model around it."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gab import loss as loss_lib
from gab import registry
from gab.tree import DesignError, Unit
from gab.units import attention_impl
from gab.units.base import build, dense_init
from gab.units.norm import rms_norm


class GAB(nn.Module):
  """A Generalized Autoregressive Block compiled from a unit tree.

  Contract: `Y, Z = gab(X, Z)` with X, Y of shape [batch, length, d_model] and Z a dict of
  intermediate variables; the entries the tree writes are merged into the Z that flows on.
  """
  tree: Unit
  layer: int = 0
  n_layers: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, X, Z):
    if X.ndim != 3:
      raise DesignError(f"GAB input must be [batch, length, d_model], got shape {X.shape}")
    Y, Z_out = build(self.tree, self.layer, self.n_layers, self.dtype, name="root")(X, dict(Z))
    if Y.shape != X.shape:
      raise DesignError(f"{self.tree.kind} (root) returned shape {Y.shape}, expected {X.shape}")
    return Y, {**Z, **Z_out}


def compile(tree: Unit, *, layer: int = 0, n_layers: int = 1, dtype: Any = jnp.float32) -> GAB:
  """Type-check `tree` (DesignError on the first problem) and return its GAB module."""
  return GAB(registry.check_types(tree), layer=layer, n_layers=n_layers, dtype=dtype)


def initial_z(tokens_BxL) -> dict[str, jax.Array]:
  """The Z every LM starts its first block with."""
  b, l = tokens_BxL.shape
  return {"positions": jnp.broadcast_to(jnp.arange(l, dtype=jnp.int32), (b, l))}


REMAT_POLICIES = {
    "full": None,  # save only each block's input; recompute the rest in the backward pass
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,  # keep projections' outputs
    "dots_all": jax.checkpoint_policies.dots_saveable,  # ... and attention's batched matmuls too
}


def remat_policy(remat: bool | str):
  """(use remat, jax.checkpoint policy) for LM.remat: False/"none", True/"full", "dots", "dots_all"."""
  if remat in (False, None, "", "none"):
    return False, None
  key = "full" if remat is True else remat
  if key not in REMAT_POLICIES:
    raise ValueError(f"train.remat_policy {remat!r}: expected one of {sorted(REMAT_POLICIES)}")
  return True, REMAT_POLICIES[key]


class LM(nn.Module):
  """Token embedding -> n_blocks x GAB -> final RMSNorm -> head tied to the embedding.

  `remat`: False, True (= "full") or a policy name of REMAT_POLICIES; `attention`: the softmax
  attention implementation of gab/units/attention_impl.py ("auto", "xla", "cudnn", "pallas").
  """
  block: Unit
  vocab_size: int
  d_model: int
  n_blocks: int
  dtype: Any = jnp.float32
  remat: bool | str = False
  attention: str = "auto"

  def setup(self):
    tree = registry.check_types(self.block)
    self.embed = nn.Embed(self.vocab_size, self.d_model, embedding_init=dense_init(),
                          param_dtype=jnp.float32, dtype=self.dtype)
    use_remat, policy = remat_policy(self.remat)
    gab_cls = nn.remat(GAB, policy=policy) if use_remat else GAB
    self.blocks = [gab_cls(tree, layer=i, n_layers=self.n_blocks, dtype=self.dtype)
                   for i in range(self.n_blocks)]
    self.norm_scale = self.param("final_norm", nn.initializers.ones, (self.d_model,), jnp.float32)

  def __call__(self, tokens_BxL):
    """Float32 logits [batch, length, vocab]."""
    logits, _ = self.with_z(tokens_BxL)
    return logits

  def with_z(self, tokens_BxL):
    """Logits and the final Z (for the checker, which looks for leaks carried through Z)."""
    x_BxLxD, z = self.features(tokens_BxL)
    return self.head(x_BxLxD), z

  def features(self, tokens_BxL):
    """The final normed hidden state [batch, length, d_model] (compute dtype) and the final Z:
    what the head reads, so a loss can apply the head to a few positions at a time."""
    x_BxLxD, z = self.stack(embed_tokens(self.embed.embedding, tokens_BxL, self.dtype))
    return rms_norm(x_BxLxD, self.norm_scale), z

  def stack(self, x_BxLxD):
    """The blocks on given token embeddings (compute dtype): their output, before the final norm,
    and the final Z. The only part of the LM that runs the design's units (`gab.programs`)."""
    z = initial_z(jnp.zeros(x_BxLxD.shape[:2], jnp.int32))
    with attention_impl.use(self.attention):
      for block in self.blocks:
        x_BxLxD, z = block(x_BxLxD, z)
    return x_BxLxD, z

  def head(self, x_BxLxD):
    """Float32 logits [..., vocab] of hidden states (the head tied to the embedding)."""
    return loss_lib.head_logits(x_BxLxD, self.head_matrix(), self.dtype)

  def head_matrix(self):
    """The head's weights [vocab, d_model]: the token embedding (tied), float32."""
    return self.embed.embedding


def embed_tokens(embedding_VxD, tokens_BxL, dtype):
  """The token embeddings in the compute dtype (what `nn.Embed(dtype=dtype)` computes)."""
  return jnp.take(embedding_VxD.astype(dtype), tokens_BxL, axis=0)


def count_params(params) -> int:
  return int(sum(x.size for x in jax.tree.leaves(params)))
