"""An MLflow tracking server for runs and the registry shared by several machines.

    python -m pipeline.mlflow_server [--host 127.0.0.1] [--port 5000] [--workers N]
                                     [--backend URI] [--artifacts URI]     # make mlflow-server
    MLFLOW_BACKEND=URI python -m pipeline.mlflow_server     # a URI with a user: not in argv

``mlflow server`` with a database backend (default: SQLite ``mlflow-server/mlflow.db`` at the
repository root; ``postgresql+psycopg://user@host/db`` for a team) and proxied artifacts: the
server stores them under ``--artifacts`` (default ``mlflow-server/artifacts/``; ``s3://...``
for a team) and clients up- and download them through it (``mlflow-artifacts:/`` locations), so
a client needs the server's URL and nothing else.

Not the local ``mlflow.db``: its experiments' artifact locations are ``file://`` paths of this
machine, which other machines cannot read or write. The server binds 127.0.0.1 unless told
otherwise: it has no authentication. It runs in place of this process (``exec``), so that a
signal to it (Ctrl-C, ``kill``) stops the server.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pipeline.workspace import shared_root
from psr.uris import redact

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000
STORE_DIR = "mlflow-server"


def default_backend() -> str:
    return f"sqlite:///{shared_root() / STORE_DIR / 'mlflow.db'}"


def default_artifacts() -> str:
    return str(shared_root() / STORE_DIR / "artifacts")


def local_folder(uri: str) -> Path | None:
    """The folder a store on this machine lives in (a SQLite file's, a plain path); None for
    a database server or an object store."""
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///")).parent
    return Path(uri) if "://" not in uri else None


#: ``mlflow server`` reads its backend from here: a database URI may hold a user name or a
#: password, and a command line is public (``ps``), a process environment is not.
BACKEND_VARIABLE = "MLFLOW_BACKEND_STORE_URI"


def command(host: str, port: int, artifacts: str, workers: int | None = None) -> list[str]:
    """The ``mlflow server`` command line (the ``mlflow`` of this Python's environment); the
    backend goes in :data:`BACKEND_VARIABLE`, not here."""
    line = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", host]
    line += ["--port", str(port), "--artifacts-destination", artifacts]
    if workers is not None:
        line += ["--workers", str(workers)]
    return line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.mlflow_server", description=__doc__)
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--workers", type=int, help="server processes (MLflow's default: 4)")
    parser.add_argument(
        "--backend",
        help=f"database URI (default: $MLFLOW_BACKEND, else {STORE_DIR}/mlflow.db; a URI with a "
        "user or password belongs in $MLFLOW_BACKEND, which ps does not show)",
    )
    parser.add_argument(
        "--artifacts",
        help=f"artifact store (default: $MLFLOW_ARTIFACTS, else {STORE_DIR}/artifacts)",
    )
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error(f"--port {args.port}: expected 1 to 65535")
    if args.workers is not None and args.workers < 1:
        parser.error(f"--workers {args.workers}: expected 1 or more")
    backend = args.backend or os.environ.get("MLFLOW_BACKEND") or default_backend()
    artifacts = args.artifacts or os.environ.get("MLFLOW_ARTIFACTS") or default_artifacts()
    for folder in (local_folder(backend), local_folder(artifacts)):
        if folder is not None:  # MLflow does not create a SQLite file's folder
            folder.mkdir(parents=True, exist_ok=True)
    line = command(args.host, args.port, artifacts, args.workers)
    shown = "localhost" if args.host in ("0.0.0.0", "::") else args.host
    stores = f"runs and registry in {redact(backend)}, artifacts in {redact(artifacts)}"
    print(f"mlflow-server: {stores}")
    print("mlflow-server: point the pipeline, psr and mlflow at it in each shell with")
    print(f"  export MLFLOW_TRACKING_URI=http://{shown}:{args.port}", flush=True)
    os.execve(line[0], line, os.environ | {BACKEND_VARIABLE: backend})
    return 0  # not reached: the server replaced this process


if __name__ == "__main__":
    sys.exit(main())
