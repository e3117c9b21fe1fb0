"""Serve a registered model over HTTP: MLflow's scoring server with a request body limit.

    python -m pipeline.serve [--model-uri models:/psr-fer@champion] [--port 5001]
                             [--runtime torch|onnx] [--max-body-mb 16]

The same app as ``mlflow models serve`` (``/invocations``, ``/ping``, ``/version``), with one
addition: a request body above ``--max-body-mb`` is answered 413 before it is read. MLflow parses
the whole JSON body before the model sees it, and a 100 MB body costs GBs of memory however
the model checks its input. Binds 127.0.0.1 unless told otherwise (no authentication).

``--runtime onnx`` serves the registered version's ONNX twin instead (the logged model its tag
``psr.onnx_model_uri`` names, ``pipeline/onnx_pyfunc.py``): same requests, same answers, on
onnxruntime.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

DEFAULT_MODEL = "models:/psr-fer@champion"
DEFAULT_MAX_BODY_MB = 16.0
RUNTIMES = ("torch", "onnx")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class BodyLimit:
    """ASGI middleware: 413 for a request body over ``max_bytes``, declared (Content-Length)
    or streamed (chunked: buffered up to the limit, then replayed to the app)."""

    def __init__(self, app: Callable, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            if not declared.isdigit() or int(declared) > self.max_bytes:
                await self._refuse(send)
                return
            await self.app(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                await self._refuse(send)
                return

        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if replayed:  # then as the server would: wait for the disconnect
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        message = (
            f"request body over {self.max_bytes / 2**20:g} MB: send fewer or smaller photos "
            "or face crops per request (the server's --max-body-mb)"
        )
        content = json.dumps({"error_code": "REQUEST_TOO_LARGE", "message": message}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": content})


def onnx_model_uri(model_uri: str) -> str:
    """The ONNX twin of a registered version (``models:/name@alias`` or ``models:/name/N``)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from mlflow.store.artifact.utils.models import get_model_name_and_version

    from pipeline.onnx_pyfunc import TAG_ONNX

    client = MlflowClient()
    found = get_model_name_and_version(client, model_uri)
    if len(found) != 2:
        raise MlflowException(f"--runtime onnx needs a registered version, got {model_uri}")
    version = client.get_model_version(*found)
    if TAG_ONNX not in version.tags:
        raise MlflowException(
            f"{found[0]} v{found[1]} has no ONNX twin (tag {TAG_ONNX}): it was registered "
            "before the register stage logged one; run the pipeline again, or use --runtime torch"
        )
    return version.tags[TAG_ONNX]


def create_app(
    model_uri: str, max_body_mb: float = DEFAULT_MAX_BODY_MB, runtime: str = "torch"
) -> Callable:
    """MLflow's scoring app for ``model_uri`` (or its ONNX twin) behind :class:`BodyLimit`."""
    import mlflow
    from mlflow.pyfunc import scoring_server

    from pipeline import tracking

    if runtime not in RUNTIMES:
        raise ValueError(f"runtime {runtime!r}: choose one of {RUNTIMES}")
    tracking.connect()
    if runtime == "onnx":
        model_uri = onnx_model_uri(model_uri)
    app = scoring_server.init(mlflow.pyfunc.load_model(model_uri))
    return BodyLimit(app, int(max_body_mb * 2**20))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.serve", description=__doc__)
    parser.add_argument("--model-uri", default=DEFAULT_MODEL)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5001)
    parser.add_argument("--runtime", choices=RUNTIMES, default="torch")
    parser.add_argument("--max-body-mb", type=float, default=DEFAULT_MAX_BODY_MB)
    args = parser.parse_args(argv)
    if args.max_body_mb <= 0:
        parser.error("--max-body-mb must be positive")
    import uvicorn
    from mlflow.exceptions import MlflowException

    try:
        app = create_app(args.model_uri, args.max_body_mb, args.runtime)
    except MlflowException as err:
        print(f"serve: error: cannot load {args.model_uri}: {err.message}", file=sys.stderr)
        return 2
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
