"""A local stand-in for the Anthropic Messages API (stdlib http.server in a thread on a free port).

Each POST /v1/messages is recorded (headers and JSON body) and answered by, in order: the next canned reply in
``queue``; the canned reply (or list of replies, consumed in turn) registered for the request's image bytes in
``by_image``; else ``default`` (a good answer). Helpers build the canned replies: good answers, malformed JSON,
refusals, prose, HTTP errors with Retry-After.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: str = ""
    headers: tuple[tuple[str, str], ...] = ()


def message_reply(text: str, stop_reason: str = "end_turn") -> Reply:
    return Reply(body=json.dumps({
        "id": "msg_fake", "type": "message", "role": "assistant", "model": "fake",
        "content": [{"type": "text", "text": text}], "stop_reason": stop_reason,
        "usage": {"input_tokens": 10, "output_tokens": 10}}))


def good(caption: str = "a red fox sitting in tall grass, golden hour", tags=("red fox", "tall grass", "golden hour"),
         nsfw: str = "safe", *, fenced: bool = False) -> Reply:
    text = json.dumps({"caption": caption, "tags": list(tags), "nsfw": nsfw})
    return message_reply(f"```json\n{text}\n```" if fenced else text)


def malformed() -> Reply:
    return message_reply('{"caption": "a fox", "tags": ["fox", "nsfw": "safe"}')


def refusal() -> Reply:
    return message_reply("I can't help with describing this image.", stop_reason="refusal")


def prose() -> Reply:
    return message_reply("I'm sorry, but I won't describe this image.")


def error(status: int, retry_after: str | None = None, kind: str = "api_error") -> Reply:
    headers = (("retry-after", retry_after),) if retry_after is not None else ()
    return Reply(status=status, headers=headers,
                 body=json.dumps({"type": "error", "error": {"type": kind, "message": f"fake {status}"}}))


def image_key(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: dict

    def image_bytes(self) -> bytes:
        block = self.body["messages"][0]["content"][0]
        return base64.b64decode(block["source"]["data"])


@dataclass
class FakeAnthropic:
    default: Reply = field(default_factory=good)
    queue: deque = field(default_factory=deque)
    by_image: dict[str, Reply | list[Reply]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    delay_seconds: float = 0.0  # before each answer, to make a job slow enough to cancel
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def answer_image(self, data: bytes, reply: Reply | list[Reply]) -> None:
        with self._lock:
            self.by_image[image_key(data)] = reply

    def reset(self) -> None:
        with self._lock:
            self.queue.clear()
            self.by_image.clear()
            self.requests.clear()
            self.default = good()
            self.delay_seconds = 0.0

    def _reply_for(self, recorded: Recorded) -> Reply:
        with self._lock:
            self.requests.append(recorded)
            if self.queue:
                return self.queue.popleft()
            try:
                key = image_key(recorded.image_bytes())
            except (KeyError, IndexError, TypeError, ValueError):
                return error(400, kind="invalid_request_error")
            canned = self.by_image.get(key)
            if isinstance(canned, list):
                return canned.pop(0) if len(canned) > 1 else canned[0]
            return canned or self.default

    def start(self) -> FakeAnthropic:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {}
                headers = {name.lower(): value for name, value in self.headers.items()}
                reply = fake._reply_for(Recorded(path=self.path, headers=headers, body=body))
                time.sleep(fake.delay_seconds)
                payload = reply.body.encode()
                self.send_response(reply.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                for name, value in reply.headers:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="fake-anthropic", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
