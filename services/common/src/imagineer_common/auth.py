"""Who is calling: an admin (valid bearer token) or an anonymous caller.

The interceptor resolves the caller once per call and stores it in a context
variable, so domain-facing code can ask ``current_caller()`` without gRPC types.
"""

from __future__ import annotations

import contextvars
import hmac
from dataclasses import dataclass


@dataclass(frozen=True)
class Caller:
    is_admin: bool


ANONYMOUS = Caller(is_admin=False)
ADMIN = Caller(is_admin=True)

_current: contextvars.ContextVar[Caller] = contextvars.ContextVar("imagineer_caller", default=ANONYMOUS)


def current_caller() -> Caller:
    return _current.get()


def set_caller(caller: Caller) -> contextvars.Token:
    return _current.set(caller)


def reset_caller(token: contextvars.Token) -> None:
    _current.reset(token)


def bearer_token(metadata: tuple[tuple[str, str | bytes], ...] | None) -> str | None:
    """Extracts the token of an ``authorization: Bearer <token>`` metadata entry."""
    for key, value in metadata or ():
        if key.lower() == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


def token_is_valid(token: str, accepted: frozenset[str]) -> bool:
    # Compare against every token in constant time so timing reveals nothing.
    matched = False
    for candidate in accepted:
        matched |= hmac.compare_digest(token.encode(), candidate.encode())
    return matched
