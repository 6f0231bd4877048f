"""A small Chrome DevTools Protocol client for the report tests: headless Chromium on 127.0.0.1.

`Browser()` starts Debian's `chromium` with a fresh profile and no network services, and
`browser.visit(url)` opens a page, waits for it to load and settle, and returns what the page did:
every request it made, console messages, uncaught exceptions and log entries, and a PNG of it.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from typing import Any

from websockets.sync.client import connect

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
         "--allow-file-access-from-files", "--window-size=1280,1000")


def available() -> bool:
  return os.path.exists(CHROMIUM)


class Browser:
  def __init__(self, timeout_s: float = 60.0):
    self.profile = tempfile.mkdtemp(prefix="chromium-profile-")
    self.proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url, deadline = None, time.time() + timeout_s
    while url is None and time.time() < deadline:
      line = self.proc.stderr.readline()
      if not line and self.proc.poll() is not None:
        raise RuntimeError(f"chromium exited with {self.proc.returncode}")
      m = re.search(r"DevTools listening on (ws://\S+)", line)
      url = m.group(1) if m else None
    if url is None:
      self.close()
      raise RuntimeError("chromium did not announce its DevTools endpoint")
    self.ws = connect(url, max_size=64 << 20, open_timeout=timeout_s)
    self.ids = itertools.count(1)
    self.events: list[dict[str, Any]] = []

  def call(self, method: str, session: str | None = None, timeout_s: float = 60.0, **params) -> dict:
    msg_id = next(self.ids)
    msg = {"id": msg_id, "method": method, "params": params}
    if session:
      msg["sessionId"] = session
    self.ws.send(json.dumps(msg))
    deadline = time.time() + timeout_s
    while time.time() < deadline:
      reply = json.loads(self.ws.recv(timeout=max(deadline - time.time(), 0.01)))
      if reply.get("id") == msg_id:
        if "error" in reply:
          raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})
      self.events.append(reply)
    raise TimeoutError(method)

  def pump(self, seconds: float) -> None:
    """Collect events for `seconds`."""
    end = time.time() + seconds
    while time.time() < end:
      try:
        self.events.append(json.loads(self.ws.recv(timeout=max(end - time.time(), 0.01))))
      except TimeoutError:
        break

  def visit(self, url: str, png_path: str | None = None, settle_s: float = 1.5) -> dict[str, Any]:
    target = self.call("Target.createTarget", url="about:blank")["targetId"]
    session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
    for domain in ("Page", "Network", "Runtime", "Log"):
      self.call(f"{domain}.enable", session)
    self.events = []
    self.call("Page.navigate", session, url=url)
    deadline = time.time() + 60
    while not any(e.get("method") == "Page.loadEventFired" and e.get("sessionId") == session
                  for e in self.events) and time.time() < deadline:
      self.pump(0.2)
    self.pump(settle_s)  # plots draw after load
    mine = [e for e in self.events if e.get("sessionId") == session]
    result = {
        "loaded": any(e["method"] == "Page.loadEventFired" for e in mine),
        "requests": [e["params"]["request"]["url"] for e in mine if e["method"] == "Network.requestWillBeSent"],
        "console_errors": [e["params"] for e in mine if e["method"] == "Runtime.consoleAPICalled"
                           and e["params"]["type"] in ("error", "assert")],
        "exceptions": [e["params"]["exceptionDetails"] for e in mine if e["method"] == "Runtime.exceptionThrown"],
        "log_errors": [e["params"]["entry"] for e in mine if e["method"] == "Log.entryAdded"
                       and e["params"]["entry"]["level"] == "error"],
        "failed": [e["params"] for e in mine if e["method"] == "Network.loadingFailed"],
    }
    result["eval"] = lambda js: self.call("Runtime.evaluate", session, expression=js,
                                          returnByValue=True)["result"].get("value")
    if png_path:
      shot = self.call("Page.captureScreenshot", session, format="png", captureBeyondViewport=True)
      with open(png_path, "wb") as f:
        f.write(base64.b64decode(shot["data"]))
    return result

  def close(self) -> None:
    try:
      if getattr(self, "ws", None):
        self.ws.close()
    finally:
      self.proc.terminate()
      try:
        self.proc.wait(timeout=10)
      except subprocess.TimeoutExpired:
        self.proc.kill()
      shutil.rmtree(self.profile, ignore_errors=True)
