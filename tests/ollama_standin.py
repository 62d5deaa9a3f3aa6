"""OllamaStandInServer: a STAND-IN for Ollama, not Ollama.

No Ollama binary can be installed on these machines, so the ``ollama`` provider is tested
against this small server, which implements the documented ``POST /api/chat`` endpoint
(streamed NDJSON chunks, a final chunk with ``done``, ``done_reason``,
``prompt_eval_count`` and ``eval_count``; HTTP 404 with ``{"error": ...}`` for an unknown
model). It "generates" by echoing words of the last user message. Everything else about
prefix caching is tested against the real vLLM engine.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        if self.path != "/api/chat":
            self.send_error(404)
            return
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(body)
        if body.get("model") not in self.server.models:
            payload = json.dumps(
                {"error": f'model "{body.get("model")}" not found, try pulling it first'}
            )
            self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(payload.encode())
            return
        messages = body["messages"]
        words = messages[-1]["content"].split()[: body.get("options", {}).get("num_predict", 8)]
        prompt_count = sum(len(m["content"].split()) for m in messages)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.end_headers()
        for word in words:
            chunk = {
                "model": body["model"],
                "message": {"role": "assistant", "content": word + " "},
                "done": False,
            }
            self.wfile.write((json.dumps(chunk) + "\n").encode())
            self.wfile.flush()
        final = {
            "model": body["model"],
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": "length" if words else "stop",
            "prompt_eval_count": prompt_count,
            "eval_count": len(words),
        }
        self.wfile.write((json.dumps(final) + "\n").encode())


class _Server(ThreadingHTTPServer):
    requests: list[dict[str, Any]]
    models: set[str]


class OllamaStandInServer:
    """Runs the stand-in on 127.0.0.1 in a thread; ``with OllamaStandInServer() as s: s.url``."""

    def __init__(self, models: set[str] | None = None) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.requests = []
        self._server.models = models or {"llama3.2"}
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def requests(self) -> list[dict[str, Any]]:
        return self._server.requests

    def __enter__(self) -> OllamaStandInServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
