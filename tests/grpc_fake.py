"""What the in-process fakes of Google's gRPC APIs share: a server on 127.0.0.1:<free port>
that answers with the client library's own message types, started and stopped as a context
manager. Each fake (cloudrun_fake, secretmanager_fake, logging_fake) gives its handlers."""

from __future__ import annotations

import os
from concurrent import futures
from typing import Any, Self

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # no GOAWAY lines when a server stops

import grpc  # noqa: E402


def unary(fn: Any, request: Any, response: Any) -> grpc.RpcMethodHandler:
    """A unary method: `request` deserializes what the client sent, `response` serializes
    what `fn` returns."""
    return grpc.unary_unary_rpc_method_handler(
        fn, request_deserializer=request, response_serializer=response
    )


class GrpcFake:
    address = ""
    _server: grpc.Server | None = None

    def handlers(self) -> tuple[grpc.GenericRpcHandler, ...]:
        raise NotImplementedError

    def start(self) -> Self:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        server.add_generic_rpc_handlers(self.handlers())
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._server = server
        self.address = f"127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait(5)
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
