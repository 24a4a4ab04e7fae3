"""Links and images of an HTML page, with the standard library's tolerant HTML parser.

Relative URLs are resolved against the page (or its <base href>), fragments dropped, and only http(s) URLs
kept. An image keeps its alt text and title; a repeated image keeps the first of each that is not empty.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import urldefrag, urljoin, urlsplit

MAX_TEXT = 1000  # longer alt texts and titles are cut


@dataclass
class ImageRef:
    url: str
    alt: str = ""
    title: str = ""


@dataclass
class Page:
    links: list[str] = field(default_factory=list)
    images: list[ImageRef] = field(default_factory=list)


def _clean(text: str | None) -> str:
    return " ".join((text or "").split())[:MAX_TEXT]


def absolute(base: str, reference: str) -> str | None:
    """The absolute http(s) URL ``reference`` points to from ``base``, without fragment; None otherwise."""
    reference = (reference or "").strip()
    if not reference or reference.startswith(("javascript:", "mailto:", "data:", "tel:")):
        return None
    url = urldefrag(urljoin(base, reference)).url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return url


class _Collector(HTMLParser):
    def __init__(self, url: str) -> None:
        super().__init__(convert_charrefs=True)
        self.base = url
        self.page = Page()
        self._images: dict[str, ImageRef] = {}
        self._links: dict[str, None] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "base" and values.get("href"):
            self.base = absolute(self.base, values["href"]) or self.base
        elif tag == "a" and values.get("href"):
            url = absolute(self.base, values["href"])
            if url is not None:
                self._links.setdefault(url, None)
        elif tag == "img" and values.get("src"):
            url = absolute(self.base, values["src"])
            if url is None:
                return
            known = self._images.setdefault(url, ImageRef(url=url))
            known.alt = known.alt or _clean(values.get("alt"))
            known.title = known.title or _clean(values.get("title"))


def parse_page(html: str, url: str) -> Page:
    collector = _Collector(url)
    collector.feed(html)
    collector.close()
    return Page(links=list(collector._links), images=list(collector._images.values()))


def decode_html(body: bytes, content_type_header: str = "") -> str:
    """Text of an HTML body: the charset the server named, else UTF-8, replacing what does not decode."""
    charset = "utf-8"
    for part in content_type_header.split(";")[1:]:
        name, _, value = part.partition("=")
        if name.strip().lower() == "charset" and value.strip():
            charset = value.strip().strip('"')
    try:
        return body.decode(charset, errors="replace")
    except LookupError:
        return body.decode("utf-8", errors="replace")
