"""One interceptor per server: resolves the caller, enforces admin-only methods,
and turns domain errors into canonical statuses (never UNKNOWN or a stack trace)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

import grpc

from imagineer_common import auth, errors, grpc_errors

log = logging.getLogger("imagineer.rpc")

# Standard services that must work without credentials (probes, grpcurl).
_OPEN_SERVICE_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")


class ServiceInterceptor(grpc.ServerInterceptor):
    """Wraps every handler of the server.

    ``public_methods`` are full method names (``/pkg.Service/Method``) that anonymous
    callers may use; every other method of our services needs an admin token.
    """

    def __init__(self, *, admin_tokens: Iterable[str], public_methods: Iterable[str],
                 error_domain: str) -> None:
        self._tokens = frozenset(t for t in admin_tokens if t)
        self._public = frozenset(public_methods)
        self._domain = error_domain

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(_OPEN_SERVICE_PREFIXES):
            return handler
        metadata = handler_call_details.invocation_metadata
        wrap = self._wrap_stream if handler.response_streaming else self._wrap_unary
        behavior_name = _behavior_name(handler)
        behavior = getattr(handler, behavior_name)
        return handler._replace(**{behavior_name: wrap(method, metadata, behavior)})

    def _resolve_caller(self, method: str, metadata) -> auth.Caller:
        token = auth.bearer_token(metadata)
        if token is not None:
            if not auth.token_is_valid(token, self._tokens):
                raise errors.Unauthenticated("the bearer token is not a valid admin token",
                                             reason="INVALID_TOKEN")
            return auth.ADMIN
        if method not in self._public:
            raise errors.Unauthenticated(
                f"{method.rsplit('/', 1)[-1]} needs an admin token "
                "(metadata 'authorization: Bearer <token>')", reason="ADMIN_TOKEN_REQUIRED")
        return auth.ANONYMOUS

    def _fail(self, context: grpc.ServicerContext, method: str, error: Exception) -> None:
        if isinstance(error, errors.DomainError):
            log.info("rpc %s failed: %s %s", method, type(error).__name__, error.message)
            context.abort_with_status(grpc_errors.to_status(error, domain=self._domain))
        log.exception("rpc %s crashed", method)
        context.abort_with_status(grpc_errors.internal_status())

    def _wrap_unary(self, method: str, metadata, behavior: Callable):
        def wrapped(request, context):
            started = time.perf_counter()
            token = None
            try:
                token = auth.set_caller(self._resolve_caller(method, metadata))
                return behavior(request, context)
            except Exception as error:  # mapped to a status below
                if _already_aborted(context):
                    raise
                self._fail(context, method, error)
            finally:
                if token is not None:
                    auth.reset_caller(token)
                log.debug("rpc %s took %.1f ms", method, (time.perf_counter() - started) * 1000)
        return wrapped

    def _wrap_stream(self, method: str, metadata, behavior: Callable):
        def wrapped(request, context):
            token = None
            try:
                token = auth.set_caller(self._resolve_caller(method, metadata))
                yield from behavior(request, context)
            except Exception as error:  # mapped to a status below
                if _already_aborted(context):
                    raise
                self._fail(context, method, error)
            finally:
                if token is not None:
                    auth.reset_caller(token)
        return wrapped


def _behavior_name(handler: grpc.RpcMethodHandler) -> str:
    if handler.request_streaming and handler.response_streaming:
        return "stream_stream"
    if handler.request_streaming:
        return "stream_unary"
    if handler.response_streaming:
        return "unary_stream"
    return "unary_unary"


def _already_aborted(context: grpc.ServicerContext) -> bool:
    # context.abort() raises a bare Exception after recording the status; let it through.
    code = getattr(context, "code", None)
    return callable(code) and code() not in (None, grpc.StatusCode.OK)
