"""The Gemini REST API's wire format, as `google-genai` sends and reads it (../shared/GEMINI.md):
the one place both servers of this package parse requests and write replies (the local endpoint,
`endpoint.py`, and the test double, `fake_gemini.py`).

Requests: `POST /{v1,v1beta}/models/{model}:generateContent` with `contents`, `systemInstruction`
and `generationConfig` (key casing mixed: never checked). Replies: `candidates[0].content.parts`
(text parts, `"thought": true` for thinking), `finishReason`, `promptFeedback.blockReason` for a
blocked prompt, `usageMetadata`; errors `{"error": {"code", "message", "status"}}`.
"""

from __future__ import annotations

import json
import re
from typing import Any

PATH = re.compile(r"^/(v1|v1beta)/models/([^/:]+):generateContent$")
STATUS = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 408: "DEADLINE_EXCEEDED", 429: "RESOURCE_EXHAUSTED",
          500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


def _get(d: dict, camel: str, snake: str, default: Any = None) -> Any:
  return d.get(camel, d.get(snake, default))


def _text_of(part_holder: Any) -> str:
  if not isinstance(part_holder, dict):
    return ""
  return "\n".join(p.get("text", "") for p in part_holder.get("parts", []) if isinstance(p, dict))


def request_text(body: dict) -> tuple[str, str]:
  """(system instruction, user prompt) of a request body, whatever the key casing."""
  system = _get(body, "systemInstruction", "system_instruction", {})
  prompt = "\n".join(_text_of(c) for c in body.get("contents", []))
  return _text_of(system), prompt


def generation_config(body: dict) -> dict[str, Any]:
  """max_tokens, temperature, seed, frequency_penalty, schema (a JSON schema, or None for free
  text) of a request."""
  g = _get(body, "generationConfig", "generation_config", {}) or {}
  schema = _get(g, "responseSchema", "response_schema")
  if schema is None:
    schema = _get(g, "responseJsonSchema", "response_json_schema")
  return {"max_tokens": _get(g, "maxOutputTokens", "max_output_tokens"),
          "temperature": g.get("temperature"), "seed": g.get("seed"),
          "frequency_penalty": _get(g, "frequencyPenalty", "frequency_penalty"),
          "schema": None if schema is None else json_schema(schema)}


_CAMEL = {"max_length": "maxLength", "min_length": "minLength", "max_items": "maxItems",
          "min_items": "minItems", "any_of": "anyOf"}   # google-genai sends some keys snake_case
_DROP = {"title", "property_ordering", "propertyOrdering", "format", "example", "default", "nullable"}


def json_schema(schema: Any) -> Any:
  """Gemini's OpenAPI-style schema (upper-case types, `property_ordering`) as a plain JSON schema
  (what grammar-constrained decoders and OpenAI-compatible servers take)."""
  if isinstance(schema, list):
    return [json_schema(s) for s in schema]
  if not isinstance(schema, dict):
    return schema
  out = {}
  for key, value in schema.items():
    key = _CAMEL.get(key, key)
    if key in _DROP:
      continue
    if key == "type" and isinstance(value, str):
      out[key] = value.lower()
    elif key == "properties":
      out[key] = {name: json_schema(v) for name, v in value.items()}
    else:
      out[key] = json_schema(value)
  return out


def error_body(code: int, message: str) -> bytes:
  return json.dumps({"error": {"code": code, "message": message,
                               "status": STATUS.get(code, "UNKNOWN")}}).encode()


def reply_body(model: str, parts: list[dict[str, Any]] | None, finish: str | None,
               usage: dict[str, int], block_reason: str | None = None,
               grounding: dict[str, Any] | None = None) -> bytes:
  """A `generateContent` reply. `parts` None: no candidate at all (an empty or blocked reply);
  `parts` []: a candidate with no content parts (e.g. thinking used the whole output cap)."""
  prompt, out, thoughts = usage.get("prompt", 0), usage.get("candidates", 0), usage.get("thoughts", 0)
  reply: dict[str, Any] = {
      "usageMetadata": {"promptTokenCount": prompt, "candidatesTokenCount": out,
                        "thoughtsTokenCount": thoughts, "totalTokenCount": prompt + out + thoughts},
      "modelVersion": model, "responseId": "local"}
  if parts is not None:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
      candidate["finishReason"] = finish
    if grounding is not None:
      candidate["groundingMetadata"] = {
          "webSearchQueries": grounding["queries"],
          "groundingChunks": [{"web": {"uri": u, "title": t}} for u, t in grounding["urls"]]}
    reply["candidates"] = [candidate]
  if block_reason:
    reply["promptFeedback"] = {"blockReason": block_reason}
  return json.dumps(reply).encode()
