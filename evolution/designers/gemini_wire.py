"""The Gemini REST API's wire format, as `google-genai` sends and reads it (../shared/GEMINI.md):
the one place both servers of this package parse requests and write replies (the local endpoint,
`endpoint.py`, and the test double, `fake_gemini.py`), and the HTTP server both run on 127.0.0.1.

Requests: `POST /{v1,v1beta}/models/{model}:generateContent` with `contents`, `systemInstruction`
and `generationConfig` (key casing mixed: never checked). Replies: `candidates[0].content.parts`
(text parts, `"thought": true` for thinking), `finishReason`, `promptFeedback.blockReason` for a
blocked prompt, `usageMetadata`; errors `{"error": {"code", "message", "status"}}`.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

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


# (model, API version, request body, headers) -> (HTTP status, reply body)
Answer = Callable[[str, str, dict, dict], tuple[int, bytes]]


class Server:
  """`generateContent` served on 127.0.0.1 (a free port unless `port`), each request by `answer`
  in its own thread; `with Server(answer) as s:` ... `s.url`."""

  def __init__(self, answer: Answer, port: int = 0):
    self.server = ThreadingHTTPServer(("127.0.0.1", port), _handler(answer))
    self.server.daemon_threads = True
    self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
    self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
    self.thread.start()

  def __enter__(self):
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def close(self) -> None:
    self.server.shutdown()
    self.server.server_close()

  def serve_until_interrupted(self, line: str) -> None:
    """Print `line` and serve until Ctrl-C (the modules' command lines)."""
    print(line, flush=True)
    try:
      while True:
        time.sleep(3600)
    except KeyboardInterrupt:
      pass


def _handler(answer: Answer):
  class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # quiet
      pass

    def do_POST(self):
      raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
      m = PATH.match(self.path.split("?")[0])
      if not m:
        code, payload = 404, error_body(404, f"no such method: {self.path}")
      else:
        try:
          body = json.loads(raw or b"{}")
        except json.JSONDecodeError as e:
          code, payload = 400, error_body(400, f"the request body is not JSON: {e}")
        else:
          code, payload = answer(m.group(2), m.group(1), body, dict(self.headers))
      try:
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
      except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
        pass

  return Handler
