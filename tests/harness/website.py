"""A small website for scraping tests: the standard library's HTTP server in a thread on a free loopback port,
serving pages, images, redirects and robots.txt from a dict, with optional delays, and recording every
request it receives."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Resource:
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    status: int = 200
    location: str = ""  # for redirects
    delay: float = 0.0  # seconds before answering


@dataclass
class Website:
    """Serves ``resources`` by path; anything else is 404. ``requests`` lists the paths asked for, in order."""

    resources: dict[str, Resource] = field(default_factory=dict)
    host: str = "127.0.0.1"
    requests: list[str] = field(default_factory=list)
    user_agents: set[str] = field(default_factory=set)

    def start(self) -> Website:
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                site.requests.append(self.path)
                site.user_agents.add(self.headers.get("User-Agent", ""))
                resource = site.resources.get(self.path)
                if resource is None:
                    self.send_error(404)
                    return
                if resource.delay:
                    time.sleep(resource.delay)
                self.send_response(resource.status)
                if resource.location:
                    self.send_header("Location", resource.location)
                self.send_header("Content-Type", resource.content_type)
                self.send_header("Content-Length", str(len(resource.body)))
                self.end_headers()
                self.wfile.write(resource.body)

            def log_message(self, *args) -> None:
                pass

        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET

        class Server(ThreadingHTTPServer):
            address_family = family
            daemon_threads = True

        self._server = Server((self.host, 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="test-website")
        self._thread.start()
        return self

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def url(self, path: str) -> str:
        return self.base + path

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def page(*, links: list[str] = (), images: list[tuple[str, str, str]] = (), title: str = "page") -> Resource:
    """An HTML page with links (hrefs) and images (src, alt, title; empty alt/title are left out)."""
    parts = [f"<!doctype html><html><head><title>{title}</title></head><body><h1>{title}</h1>"]
    parts += [f'<p><a href="{href}">{href}</a></p>' for href in links]
    for src, alt, image_title in images:
        attributes = f' src="{src}"' + (f' alt="{alt}"' if alt else "") + (f' title="{image_title}"'
                                                                          if image_title else "")
        parts.append(f"<img{attributes}>")
    parts.append("</body></html>")
    return Resource(body="\n".join(parts).encode())
