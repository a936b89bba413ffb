"""A served model on 127.0.0.1 that speaks the OpenAI-compatible API vLLM and SGLang serve.

vLLM and SGLang cannot run here (no GPU, no wheels), but what the gate talks to is their HTTP
API: `POST /v1/chat/completions` and `GET /v1/models`, reached through Inspect's `vllm/` and
`sglang/` providers with a `base_url`. This server answers that API for real over HTTP, so the
path under test (manifest → runner → Inspect provider → HTTP → rows) is the one a lab's serving
stack uses; only the weights behind it are a stand-in.

Fixture
-------
`served_model` (session scope) -> ServedModel: `.base_url` ("http://127.0.0.1:<port>/v1"),
`.requests` (every chat request body received, in order), `.answer` (a callable from the
prompt text to the reply text; tests replace it), `.reset()`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


def _default_answer(prompt: str) -> str:
    return "ANSWER: A"


@dataclass
class ServedModel:
    base_url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    answer: Callable[[str], str] = _default_answer

    def reset(self) -> None:
        self.requests.clear()
        self.answer = _default_answer


def _prompt_text(body: dict[str, Any]) -> str:
    parts: list[str] = []
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(str(c.get("text", "")) for c in content if isinstance(c, dict))
    return "\n\n".join(parts)


def _handler(model: ServedModel) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": "served-model", "object": "model"}]})
            else:
                self._send(404, {"error": {"message": "not found"}})

        def do_POST(self) -> None:
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            model.requests.append(body)
            text = model.answer(_prompt_text(body))
            self._send(200, {
                "id": f"chatcmpl-{len(model.requests)}", "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model", "served-model"),
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13},
            })

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture(scope="session")
def served_model() -> Iterator[ServedModel]:
    model = ServedModel()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(model))
    model.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, name="served-model", daemon=True)
    thread.start()
    try:
        yield model
    finally:
        server.shutdown()
        server.server_close()
