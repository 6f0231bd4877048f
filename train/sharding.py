"""Meshes and parameter shardings by ordered rules, so any evolved design trains sharded.

Nobody knows an evolved design's parameter names in advance, so shardings come from an ordered list
of rules — (regex on the parameter path, PartitionSpec) — where the first rule that matches *and*
whose spec divides the array's shape wins, and replication is always the last resort.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from gab import fields

AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")  # the batch dimension is split over both

# (regex on "path/to/param", spec). Dense kernels are [in, out]; embeddings [vocab, d_model].
DEFAULT_RULES: tuple[tuple[str, P], ...] = (
    (r"embed/embedding$", P("tensor", "fsdp")),
    (r"kernel$", P("fsdp", "tensor")),      # any Dense/Conv kernel: shard input dim over fsdp
    (r"kernel$", P(None, "fsdp")),          # ... or, if that does not divide, the last dim
    (r".*", P("fsdp")),                     # vectors and other arrays: first dim over fsdp
    (r".*", P()),                           # replicate
)


_AXIS = fields.integer(1, also=(-1,))


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """Axis sizes of the device mesh; one of them may be -1 to take all remaining devices."""
  data: int = fields.field(-1, "data-parallel axis size", _AXIS, results=False)
  fsdp: int = fields.field(1, "parameter-sharding axis size", _AXIS, results=False)
  tensor: int = fields.field(1, "tensor-parallel axis size", _AXIS, results=False)


def mesh_config(data: int = -1, fsdp: int = 1, tensor: int = 1) -> ml_collections.ConfigDict:
  cfg = fields.defaults(MeshConfig)
  cfg.update(dict(data=data, fsdp=fsdp, tensor=tensor))
  return cfg


def make_mesh(cfg: ml_collections.ConfigDict | None = None, devices: Sequence[Any] | None = None) -> Mesh:
  cfg = cfg or mesh_config()
  devices = list(devices if devices is not None else jax.devices())
  sizes = [int(cfg[a]) for a in AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f"mesh: at most one axis may be -1, got {dict(zip(AXES, sizes))}")
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if len(devices) % known:
      raise ValueError(f"mesh: {len(devices)} devices do not divide by {known} ({dict(zip(AXES, sizes))})")
    sizes[sizes.index(-1)] = len(devices) // known
  if int(np.prod(sizes)) > len(devices):
    raise ValueError(f"mesh {dict(zip(AXES, sizes))} needs {int(np.prod(sizes))} devices, "
                     f"but {len(devices)} are available")
  devices = devices[:int(np.prod(sizes))]  # a smaller mesh uses the first devices
  # Auto axes: XLA propagates shardings through the model (explicit-sharding mode would make
  # every evolved unit annotate its own ops).
  return jax.make_mesh(tuple(sizes), AXES, axis_types=(AxisType.Auto,) * len(AXES), devices=devices)


def _path_str(path) -> str:
  parts = []
  for k in path:
    parts.append(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))))
  return "/".join(parts)


def _fits(spec: P, shape: tuple[int, ...], mesh: Mesh) -> bool:
  if len(spec) > len(shape):
    return False
  for dim, axes in zip(shape, spec):
    if axes is None:
      continue
    names = axes if isinstance(axes, tuple) else (axes,)
    if dim % int(np.prod([mesh.shape[a] for a in names])):
      return False
  return True


def spec_for(path: str, shape: tuple[int, ...], mesh: Mesh, rules=DEFAULT_RULES) -> P:
  for pattern, spec in rules:
    if re.search(pattern, path) and _fits(spec, shape, mesh):
      return spec
  return P()


def param_shardings(params_shape: Any, mesh: Mesh, rules=DEFAULT_RULES) -> Any:
  """A NamedSharding for every leaf of a (possibly abstract) parameter pytree."""
  return jax.tree_util.tree_map_with_path(
      lambda path, x: NamedSharding(mesh, spec_for(_path_str(path), tuple(x.shape), mesh, rules)),
      params_shape)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def global_batch(local_BxL: np.ndarray, mesh: Mesh) -> jax.Array:
  """Assemble the global batch from each process's rows (`BatchIterator` gives each its slice)."""
  return jax.make_array_from_process_local_data(batch_sharding(mesh), local_BxL)
