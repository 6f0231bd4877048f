"""The Gemini client of the designer agents: one structured call, with retries, timeouts and usage.

`GeminiTransport(cfg, api_key)` wraps `google.genai.Client` with `HttpOptions(base_url, api_version
pinned, timeout)` and `HttpRetryOptions` (408/429/5xx and client timeouts are retried with
exponential backoff; other 4xx are not). Every outcome becomes a `Reply`: the text, the usage
(prompt, candidates, thoughts and search-tool tokens), the finish reason, the latency and, for a
search call, the grounding queries and cited URLs; a call that fails after its retries (an API
error, a client timeout, which httpx/httpx2 raises rather than `errors.APIError`, or a blocked prompt)
is a Reply with `error` set, so the failure is recorded and replayed like any answer.

The API key is passed in by the caller (read from the environment by `api_key_from_env`) and lives
only inside the genai client object: it is never part of a `Call`, a `Reply` or a log line.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any



def _http_libs() -> list[Any]:
  """The HTTP libraries google-genai may use (httpx, or its fork httpx2 in newer releases)."""
  libs = []
  for name in ("httpx", "httpx2"):
    try:
      libs.append(__import__(name))
    except ImportError:
      pass
  return libs


_TIMEOUTS = tuple(lib.TimeoutException for lib in _http_libs())
_HTTP_ERRORS = tuple(lib.HTTPError for lib in _http_libs())

KEY_VARS = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
# Finish reasons of an answer the API withheld (the prompt or the answer was judged unsafe).
BLOCK_FINISHES = ("SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "RECITATION", "IMAGE_SAFETY")


def api_key_from_env() -> str | None:
  for var in KEY_VARS:
    if os.environ.get(var):
      return os.environ[var]
  return None


@dataclasses.dataclass(frozen=True)
class Call:
  """What is sent: never the key, never a local file; only prompts the designers wrote."""
  role: str
  model: str
  system: str
  prompt: str
  schema: str = ""               # the pydantic response schema's name ("" = free text)
  search: bool = False           # Google Search grounding tool (free text only)
  settings: tuple[tuple[str, Any], ...] = ()   # temperature, max_output_tokens, seed, thinking_budget

  def to_dict(self) -> dict[str, Any]:
    out = dataclasses.asdict(self)
    out["settings"] = dict(self.settings)
    return out


@dataclasses.dataclass
class Reply:
  text: str | None               # the answer's text parts (thought parts are not part of it)
  usage: dict[str, int]
  finish_reason: str | None = None   # STOP, MAX_TOKENS, SAFETY, ...
  latency_s: float = 0.0
  grounding: dict[str, Any] | None = None
  error: str | None = None       # set when the call failed after every retry
  blocked: str | None = None     # why the prompt or the answer was blocked (SAFETY, OTHER, ...)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> "Reply":
    return cls(**{f.name: d.get(f.name) for f in dataclasses.fields(cls)})


def _usage(meta: Any) -> dict[str, int]:
  get = lambda name: int(getattr(meta, name, None) or 0) if meta is not None else 0  # noqa: E731
  return {"prompt": get("prompt_token_count"), "candidates": get("candidates_token_count"),
          "thoughts": get("thoughts_token_count"), "tool_prompt": get("tool_use_prompt_token_count"),
          "total": get("total_token_count")}


def _grounding(response: Any) -> dict[str, Any] | None:
  cands = getattr(response, "candidates", None) or []
  meta = getattr(cands[0], "grounding_metadata", None) if cands else None
  if meta is None:
    return None
  chunks = [c.web for c in (meta.grounding_chunks or []) if getattr(c, "web", None) is not None]
  return {"queries": list(meta.web_search_queries or []),
          "urls": [{"uri": w.uri, "title": w.title} for w in chunks]}


class GeminiTransport:
  """Sends a `Call` to Gemini (or any endpoint speaking its REST API) and returns a `Reply`."""

  def __init__(self, cfg: Any, api_key: str):
    from google import genai  # pylint: disable=g-import-not-at-top
    from google.genai import types  # pylint: disable=g-import-not-at-top
    self._types = types
    retry = types.HttpRetryOptions(attempts=int(cfg.retry_attempts), initial_delay=float(cfg.retry_initial_s),
                                   max_delay=float(cfg.retry_max_s), jitter=float(cfg.retry_initial_s),
                                   http_status_codes=[408, 429, 500, 502, 503, 504])
    options = types.HttpOptions(api_version=cfg.api_version, timeout=int(cfg.timeout_s * 1000),
                                retry_options=retry, base_url=cfg.base_url or None)
    self._client = genai.Client(api_key=api_key, http_options=options)
    self._timeout_s = float(cfg.timeout_s)

  def __call__(self, call: Call, schema: type | None = None) -> Reply:
    from google.genai import errors  # pylint: disable=g-import-not-at-top
    types = self._types
    settings = dict(call.settings)
    config: dict[str, Any] = {"system_instruction": call.system,
                              "temperature": settings.get("temperature"),
                              "max_output_tokens": settings.get("max_output_tokens"),
                              "seed": settings.get("seed"),
                              "frequency_penalty": settings.get("frequency_penalty")}
    if settings.get("thinking_budget") is not None:
      config["thinking_config"] = types.ThinkingConfig(thinking_budget=int(settings["thinking_budget"]))
    if call.search:
      config["tools"] = [types.Tool(google_search=types.GoogleSearch())]
    elif schema is not None:
      config["response_mime_type"] = "application/json"
      config["response_schema"] = schema
    start = time.monotonic()
    try:
      response = self._client.models.generate_content(
          model=call.model, contents=call.prompt,
          config=types.GenerateContentConfig(**{k: v for k, v in config.items() if v is not None}))
    except errors.APIError as e:
      return Reply(None, _usage(None), None, time.monotonic() - start,
                   error=f"API error {e.code} {e.status}: {str(e.message or '')[:300]}")
    except _TIMEOUTS as e:
      return Reply(None, _usage(None), None, time.monotonic() - start,
                   error=f"timeout after {self._timeout_s:g} s (each of the retries): {type(e).__name__}")
    except ValueError as e:  # a body that is not JSON (json.JSONDecodeError) or not a response
      return Reply(None, _usage(None), None, time.monotonic() - start,
                   error=f"malformed response body: {type(e).__name__}: {str(e)[:200]}")
    except _HTTP_ERRORS as e:
      return Reply(None, _usage(None), None, time.monotonic() - start,
                   error=f"connection error: {type(e).__name__}: {str(e)[:200]}")
    latency = time.monotonic() - start
    cands = response.candidates or []
    finish = getattr(cands[0].finish_reason, "value", str(cands[0].finish_reason)) if cands and \
        cands[0].finish_reason is not None else None
    usage = _usage(response.usage_metadata)
    text = response.text
    feedback = getattr(response, "prompt_feedback", None)
    block = getattr(getattr(feedback, "block_reason", None), "value", None) or (
        finish if finish in BLOCK_FINISHES else None)
    if text is None or block:
      reason = block or finish or ("no candidates" if not cands else "no text")
      return Reply(None, usage, finish, latency, _grounding(response), error=f"empty reply ({reason})",
                   blocked=block)
    return Reply(text, usage, finish, latency, _grounding(response))

