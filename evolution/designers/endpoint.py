"""A local Gemini-API endpoint: `generateContent` on 127.0.0.1, answered by a model on this machine,
so the designers keep talking through the real `google-genai` client (its base_url) with no key.

`designer.endpoint` picks the model behind it:
  local:NAME_OR_PATH   a GGUF model run in this process on the CPU by llama-cpp-python (a packaged
                       model name or a .gguf path, see `local_models`); `responseSchema` becomes a
                       JSON-schema grammar, so structured replies are valid JSON of that schema;
                       llama.cpp reuses the KV cache of the longest prompt prefix it has seen
                       (the designers' system instruction is one shared prefix), and an LRU RAM
                       cache keeps the states of recent prompts;
  openai:URL           any OpenAI-compatible server (vLLM, llama.cpp's server, Ollama) at URL
                       (e.g. http://127.0.0.1:11434/v1): `POST URL/chat/completions`, the schema as
                       `response_format: json_schema`, the Gemini model name passed through.

Replies: finish "stop" -> STOP, "length" -> MAX_TOKENS (the pipeline then raises the cap or asks
for less); usage in Gemini's fields. A prompt longer than the model's context is HTTP 400, as
Gemini answers one over its input limit. `python -m genesys_jax.cli.endpoint
--endpoint=local:smollm2-135m [--port=N]` serves one by hand.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import urllib.error
import urllib.request
from typing import Any, Protocol

from evolution.designers import gemini_wire, local_models

KINDS = ("local", "openai")


@dataclasses.dataclass
class Completion:
  text: str
  finish: str          # STOP | MAX_TOKENS
  prompt_tokens: int
  output_tokens: int


class EndpointError(Exception):
  """A request the backend refuses; `code` is the HTTP status the endpoint answers with."""

  def __init__(self, code: int, message: str):
    super().__init__(message)
    self.code = code


class Backend(Protocol):
  def complete(self, model: str, system: str, prompt: str, gen: dict[str, Any]) -> Completion: ...


_FINISH = {"stop": "STOP", "length": "MAX_TOKENS"}


class LlamaBackend:
  """A GGUF model in this process (llama-cpp-python), one request at a time."""

  def __init__(self, path: str, n_ctx: int, n_threads: int, cache_mb: int):
    # llama.cpp's OpenMP threads spin while they wait, by default: on shared cores (a sandboxed
    # check, other runs) that burns the CPU the other work needs. Read when OpenMP loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from llama_cpp import Llama, LlamaRAMCache  # pylint: disable=g-import-not-at-top
    meta = Llama(model_path=path, vocab_only=True, verbose=False).metadata
    trained = int(meta.get(f"{meta.get('general.architecture')}.context_length", n_ctx))
    self.llm = Llama(model_path=path, n_ctx=min(n_ctx, trained), n_threads=n_threads or os.cpu_count(),
                     n_batch=512, verbose=False)
    if cache_mb > 0:
      self.llm.set_cache(LlamaRAMCache(capacity_bytes=cache_mb << 20))
    self.lock = threading.Lock()

  def complete(self, model: str, system: str, prompt: str, gen: dict[str, Any]) -> Completion:
    del model  # one model behind this endpoint
    fmt = None if gen["schema"] is None else {"type": "json_object", "schema": gen["schema"]}
    with self.lock:
      try:
        out = self.llm.create_chat_completion(
            messages=[{"role": "system", "content": system}, {"role": "user", "content": prompt}],
            max_tokens=gen["max_tokens"], temperature=float(gen["temperature"] or 0.0),
            seed=gen["seed"], frequency_penalty=float(gen["frequency_penalty"] or 0.0),
            response_format=fmt)
      except ValueError as e:  # "Requested tokens (N) exceed context window of M"
        raise EndpointError(400, f"the request does not fit the local model: {e}") from None
    choice, usage = out["choices"][0], out["usage"]
    return Completion(choice["message"].get("content") or "", _FINISH.get(choice["finish_reason"], "STOP"),
                      usage["prompt_tokens"], usage["completion_tokens"])


class OpenAIBackend:
  """Any OpenAI-compatible chat-completions server, by URL.

  The schema goes as OpenAI's `response_format: {"type": "json_schema", ...}` (vLLM, Ollama,
  llama.cpp's server); a server that refuses that form (llama-cpp-python's own server takes
  `{"type": "json_object", "schema": ...}`) is asked again in the other, which is then kept."""

  FORMATS = ("json_schema", "json_object")

  def __init__(self, url: str, timeout_s: float):
    self.url = url.rstrip("/") + "/chat/completions"
    self.timeout_s = timeout_s
    self.formats = list(self.FORMATS)

  def _post(self, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(self.url, json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    try:
      with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
        return json.loads(response.read())
    except urllib.error.HTTPError as e:
      raise EndpointError(e.code if e.code in gemini_wire.STATUS else 502,
                          f"{self.url} answered {e.code}: {e.read()[:300].decode(errors='replace')}") from None
    except (urllib.error.URLError, OSError) as e:
      raise EndpointError(503, f"{self.url} is unreachable: {e}") from None

  def complete(self, model: str, system: str, prompt: str, gen: dict[str, Any]) -> Completion:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "system", "content": system},
                                                         {"role": "user", "content": prompt}]}
    for key in ("max_tokens", "temperature", "seed", "frequency_penalty"):
      if gen[key] is not None:
        body[key] = gen[key]
    schema = gen["schema"]
    while True:
      if schema is not None:
        body["response_format"] = (
            {"type": "json_schema", "json_schema": {"name": "reply", "schema": schema}}
            if self.formats[0] == "json_schema" else {"type": "json_object", "schema": schema})
      try:
        out = self._post(body)
        break
      except EndpointError as e:
        if schema is None or len(self.formats) < 2 or e.code == 503:   # refused, not unreachable
          raise
        self.formats.pop(0)         # the server does not take this form: use the other from now on
    choice, usage = out["choices"][0], out.get("usage") or {}
    return Completion(choice["message"].get("content") or "", _FINISH.get(choice.get("finish_reason"), "STOP"),
                      int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)))


def parse(spec: str) -> tuple[str, str]:
  """(kind, target) of `designer.endpoint`; a one-line ValueError for anything else."""
  kind, sep, target = spec.partition(":")
  if not sep or kind not in KINDS or not target:
    raise ValueError(f"designer.endpoint={spec!r}: expected '' (Gemini), 'local:MODEL' (a .gguf path "
                     f"or one of {sorted(local_models.PACKAGED)}) or 'openai:URL'")
  return kind, target


def backend(spec: str, cfg: Any) -> Backend:
  kind, target = parse(spec)
  if kind == "local":
    return LlamaBackend(local_models.resolve(target), int(cfg.local_ctx), int(cfg.local_threads),
                        int(cfg.local_cache_mb))
  return OpenAIBackend(target, float(cfg.timeout_s))


class Endpoint(gemini_wire.Server):
  """`with Endpoint(backend) as ep:` serves generateContent on `ep.url` (127.0.0.1, a free port)."""

  def __init__(self, backend_: Backend, port: int = 0):
    self.backend = backend_
    super().__init__(self.answer, port)

  def answer(self, model: str, version: str, body: dict, headers: dict) -> tuple[int, bytes]:
    del version, headers  # no key is needed or read
    system, prompt = gemini_wire.request_text(body)
    try:
      done = self.backend.complete(model, system, prompt, gemini_wire.generation_config(body))
    except EndpointError as e:
      return e.code, gemini_wire.error_body(e.code, str(e))
    return 200, gemini_wire.reply_body(model, [{"text": done.text}], done.finish,
                                       {"prompt": done.prompt_tokens, "candidates": done.output_tokens})
