"""Requests that do not parse are refused as INVALID_ARGUMENT, naming the method.

gRPC parses a request before any handler runs; a parse failure (protobuf garbage, invalid UTF-8
in a string field) otherwise reaches the client as UNKNOWN with the parser's exception text.
This interceptor gives every handler a lenient parser that turns a failure into a marker, and
a handler that answers the marker with the refusal, so no request ever fails as our error.
Handlers keep their kind: a synchronous handler stays synchronous (it runs on the server's
thread pool, never on the event loop).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc


@dataclass(frozen=True, slots=True)
class Malformed:
    """Stands in for a request message that did not parse."""

    method: str


def _message(method: str) -> str:
    name = method.rsplit("/", 1)[-1]
    return f"request: not a valid {name} request message (protobuf or UTF-8)"


class RejectMalformedRequests(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        return _lenient(handler, handler_call_details.method)


def _lenient(handler: Any, method: str) -> Any:
    parse = handler.request_deserializer

    def lenient_parse(data: bytes) -> Any:
        try:
            return parse(data)
        except Exception:  # every parse failure is the client's: refused below, not raised
            return Malformed(method)

    options = {
        "request_deserializer": lenient_parse,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(_unary(handler.unary_unary, method), **options)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(_unary(handler.unary_stream, method), **options)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(
            _streaming(handler.stream_unary, method), **options
        )
    return grpc.stream_stream_rpc_method_handler(
        _streaming(handler.stream_stream, method), **options
    )


def _unary(behaviour: Any, method: str) -> Any:
    if inspect.iscoroutinefunction(behaviour):

        async def checked_async(request: Any, context: Any) -> Any:
            if isinstance(request, Malformed):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _message(method))
            return await behaviour(request, context)

        return checked_async
    if inspect.isasyncgenfunction(behaviour):

        async def checked_stream(request: Any, context: Any) -> AsyncIterator[Any]:
            if isinstance(request, Malformed):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _message(method))
            async for reply in behaviour(request, context):
                yield reply

        return checked_stream

    def checked(request: Any, context: Any) -> Any:
        if isinstance(request, Malformed):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, _message(method))
        return behaviour(request, context)

    return checked


def _streaming(behaviour: Any, method: str) -> Any:
    """A request stream whose first malformed message aborts the call."""

    async def requests(source: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        async for request in source:
            if isinstance(request, Malformed):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _message(method))
            yield request

    if inspect.isasyncgenfunction(behaviour):

        async def checked_stream(source: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
            async for reply in behaviour(requests(source, context), context):
                yield reply

        return checked_stream
    if inspect.iscoroutinefunction(behaviour):

        async def checked_async(source: AsyncIterator[Any], context: Any) -> Any:
            return await behaviour(requests(source, context), context)

        return checked_async

    def sync_requests(source: Iterator[Any], context: Any) -> Iterator[Any]:
        for request in source:
            if isinstance(request, Malformed):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, _message(method))
            yield request

    def checked(source: Iterator[Any], context: Any) -> Any:
        return behaviour(sync_requests(source, context), context)

    return checked
