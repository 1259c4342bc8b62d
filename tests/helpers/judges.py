"""Judges for tests: a local chat-completions server (an OpenAI-compatible judge) and a reward judge."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

SECRET = "sk-test-DO-NOT-LEAK-1234567890"
STALL = object()  # a ChatServer reply that never comes


def chat_response(text: str, top_logprobs: list[dict] | None = None) -> dict:
    choice = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
    if top_logprobs is not None:
        choice["logprobs"] = {"content": [{"token": text, "logprob": top_logprobs[0]["logprob"],
                                           "top_logprobs": top_logprobs}]}
    return {"id": "x", "object": "chat.completion", "choices": [choice], "usage": {"total_tokens": 10}}


class ChatServer:
    """A chat-completions server on 127.0.0.1 (random port) for tests. ``respond(body, n)`` returns
    ``(status, headers, json_payload)`` for the n-th request (1-based). It serves at most
    ``max_requests`` requests, polls with a short timeout and stops by itself (or on exit)."""

    def __init__(self, respond, max_requests: int = 50) -> None:
        self.requests: list[tuple[dict, dict]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802  (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append((dict(self.headers), body))
                status, headers, payload = respond(body, len(server.requests))
                if payload is STALL:  # a stalled endpoint: no answer until the server stops
                    server._stop.wait(60)
                    return
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                for key, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:  # keep the test output quiet
                pass

        self.httpd = HTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.timeout = 0.2
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(max_requests,), daemon=True)

    def _serve(self, max_requests: int) -> None:
        while not self._stop.is_set() and len(self.requests) < max_requests:
            self.httpd.handle_request()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> ChatServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.httpd.server_close()

    def wait_for(self, n: int, timeout: float = 60.0) -> None:
        """Until the server has received ``n`` requests (an event), bounded for a broken client."""
        import time

        deadline = time.monotonic() + timeout
        while len(self.requests) < n:
            assert time.monotonic() < deadline, f"{len(self.requests)} of {n} requests arrived"
            time.sleep(0.01)


class Bang:
    """A test reward: the number of "!" in a response."""

    name = "bang"

    def score(self, prompts, responses, finished):
        return [[float(r.count("!")) for r in rs] for rs in responses]
