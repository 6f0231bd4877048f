"""The PyTorch baseline of the GPU check: `python -m train.torch_gpt --shape=14m` (needs torch and CUDA).

The GPT of `train/reference_gpt.py` written in PyTorch (pre-norm RMSNorm, rotary attention through
`scaled_dot_product_attention`, SwiGLU, head tied to the embedding, the same parameter count),
trained as PyTorch users train for speed: `torch.compile` of the loss, bf16 autocast with float32
parameters, fused AdamW with clipping. Random tokens at a `train.bench` shape; one JSON line with
the median tokens/s of timed windows, as `train.bench` prints for the JAX models. Only the GPU
check runs it (the project does not depend on PyTorch).
"""

from __future__ import annotations

import json
import statistics
import time

import torch
import torch.nn.functional as F
from absl import app, flags
from torch import nn

from train.bench import SHAPES
from train.reference_gpt import mlp_hidden

flags.DEFINE_enum("shape", "14m", tuple(SHAPES), "A train.bench shape.")
flags.DEFINE_integer("windows", 5, "Timed windows; the median counts.")
flags.DEFINE_integer("steps", 0, "Steps per window (default: the shape's).")
FLAGS = flags.FLAGS


def rope(x_BxLxHxK, cos_LxK2, sin_LxK2):
  half = x_BxLxHxK.shape[-1] // 2
  x1, x2 = x_BxLxHxK[..., :half].float(), x_BxLxHxK[..., half:].float()
  cos, sin = cos_LxK2[None, :, None, :], sin_LxK2[None, :, None, :]
  return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x_BxLxHxK.dtype)


class Block(nn.Module):
  def __init__(self, d: int, n_heads: int, hidden: int):
    super().__init__()
    self.n_heads, self.hidden = n_heads, hidden
    self.attn_norm, self.mlp_norm = nn.RMSNorm(d, eps=1e-6), nn.RMSNorm(d, eps=1e-6)
    self.qkv, self.out = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d, bias=False)
    self.gate_up, self.down = nn.Linear(d, 2 * hidden, bias=False), nn.Linear(hidden, d, bias=False)

  def forward(self, x_BxLxD, cos, sin):
    b, l, d = x_BxLxD.shape
    q, k, v = self.qkv(self.attn_norm(x_BxLxD)).view(b, l, 3, self.n_heads, d // self.n_heads).unbind(2)
    q, k = rope(q, cos, sin), rope(k, cos, sin)
    y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                       is_causal=True)
    x_BxLxD = x_BxLxD + self.out(y.transpose(1, 2).reshape(b, l, d))
    gate, up = self.gate_up(self.mlp_norm(x_BxLxD)).split(self.hidden, dim=-1)
    return x_BxLxD + self.down(F.silu(gate) * up)


class GPT(nn.Module):
  def __init__(self, vocab: int, d: int, n_blocks: int, seq_len: int, n_heads: int = 4,
               expansion: float = 2.667):
    super().__init__()
    self.embed = nn.Embedding(vocab, d)
    self.blocks = nn.ModuleList(Block(d, n_heads, mlp_hidden(d, expansion)) for _ in range(n_blocks))
    self.final_norm = nn.RMSNorm(d, eps=1e-6)
    half = d // n_heads // 2
    angles_LxK2 = torch.arange(seq_len)[:, None].float() * 10000.0 ** (-torch.arange(half).float() / half)
    self.register_buffer("cos", angles_LxK2.cos(), persistent=False)
    self.register_buffer("sin", angles_LxK2.sin(), persistent=False)
    for name, p in self.named_parameters():  # the seed's init: normal(0.02), residual outputs scaled
      if p.dim() > 1:
        scale = (2 * n_blocks) ** -0.5 if name.endswith(("out.weight", "down.weight")) else 1.0
        nn.init.normal_(p, std=0.02 * scale)

  def forward(self, tokens_BxL1):
    x_BxLxD = self.embed(tokens_BxL1[:, :-1])
    for block in self.blocks:
      x_BxLxD = block(x_BxLxD, self.cos, self.sin)
    logits_BxLxV = self.final_norm(x_BxLxD) @ self.embed.weight.t()
    return F.cross_entropy(logits_BxLxV.float().flatten(0, 1), tokens_BxL1[:, 1:].flatten())


def main(argv):
  del argv
  shape = SHAPES[FLAGS.shape]
  steps = FLAGS.steps or shape.steps
  torch.manual_seed(0)
  model = GPT(shape.vocab, shape.d_model, shape.n_blocks, shape.seq_len).cuda()
  n_params = sum(p.numel() for p in model.parameters())
  decay = [p for p in model.parameters() if p.dim() > 1]
  rest = [p for p in model.parameters() if p.dim() <= 1]
  opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                          lr=1e-3, betas=(0.9, 0.95), fused=True)
  loss_fn = torch.compile(model)
  tokens = torch.randint(0, shape.vocab, (shape.batch, shape.seq_len + 1), device="cuda")

  def step():
    with torch.autocast("cuda", dtype=torch.bfloat16):
      loss = loss_fn(tokens)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss

  t0 = time.perf_counter()
  for _ in range(3):  # compile and warm up
    step()
  torch.cuda.synchronize()
  compile_s = time.perf_counter() - t0
  seconds = []
  for _ in range(FLAGS.windows):
    t0 = time.perf_counter()
    for _ in range(steps):
      loss = step()
    loss.item()
    seconds.append(time.perf_counter() - t0)
  tok_s = shape.batch * shape.seq_len * steps / statistics.median(seconds)
  print(json.dumps({"design": "torch_compile_gpt", "shape": FLAGS.shape, "params": n_params,
                    "tokens_per_s": tok_s, "step_s": statistics.median(seconds) / steps,
                    "compile_s": compile_s, "torch": torch.__version__,
                    "device": torch.cuda.get_device_name()}, sort_keys=True), flush=True)


if __name__ == "__main__":
  app.run(main)
