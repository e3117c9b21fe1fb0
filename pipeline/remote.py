"""``make push`` / ``make pull``: the workspace's DVC outputs and run-cache to and from a remote.

``.dvc/config`` names a default remote that works on one machine with no setup: the directory
``~/.cache/psr-fer/dvc-remote``, shared by every clone of this user (outside the repository,
so deleting a clone or ``git clean -fdx`` keeps it). ``dvc remote add -d`` points it elsewhere
(S3, SSH, GCS: docs/pipeline.md, "Sharing outputs").

- push: ``dvc push --run-cache``: the outputs named by ``dvc.lock`` and every run-cache entry.
- pull: ``dvc pull --run-cache``: the outputs ``dvc.lock`` names, checked out, and the
  run-cache. A clone without ``dvc.lock`` (this repository never commits one; ``make save``
  does in yours) has no output to name, so pull refuses and says what restores instead
  (``dvc repro --pull``: every stage the run-cache holds, the others run).

The line each prints names the remote and its URL with any credentials masked
(:func:`redact`): a URL with a password stays out of logs.

    python -m pipeline.remote push [-r REMOTE] [DVC OPTIONS]    # make push
    python -m pipeline.remote pull [-r REMOTE] [DVC OPTIONS]    # make pull
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

LOCK = Path("dvc.lock")
CONFIG = Path(".dvc/config")
NO_LOCK = (
    "dvc.lock: none, so no output is named to pull (this repository never commits one; "
    "`make save` commits it in your clone). `dvc repro --pull` restores every stage the "
    "remote's run-cache holds and runs the others (register always runs: it writes to the "
    "MLflow registry)"
)


class RemoteError(RuntimeError):
    """Why the remote cannot be used as asked."""


def redact(url: str) -> str:
    """``url`` with its user and password replaced by ``***`` (``ssh://***@host/path``);
    a URL without them, or a plain path, unchanged."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"***@{host}"))


def remote(root: Path, name: str | None = None) -> tuple[str, str]:
    """(name, URL) of remote ``name``, default: the one ``core.remote`` names (with
    ``.dvc/config.local`` and the user's DVC config applied, as DVC does)."""
    from dvc.config import Config

    config = Config(dvc_dir=str(root / ".dvc"))
    remotes = config.get("remote", {})
    chosen = name or config.get("core", {}).get("remote")
    if not chosen:
        raise RemoteError(
            f"{CONFIG}: no default remote (core.remote): `dvc remote add -d NAME URL` sets one"
        )
    if chosen not in remotes:
        known = ", ".join(sorted(remotes)) or "none"
        raise RemoteError(f"{CONFIG}: no remote {chosen!r} (configured: {known})")
    return chosen, str(remotes[chosen]["url"])


def command(verb: str, root: Path, options: list[str]) -> list[str]:
    """The DVC command of ``verb`` ("push" or "pull") with ``options`` passed on."""
    if verb == "pull" and not (root / LOCK).is_file():
        raise RemoteError(NO_LOCK)
    return [sys.executable, "-m", "dvc", verb, "--run-cache", *options]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("verb", choices=("push", "pull"))
    parser.add_argument("-r", "--remote", help="a remote of .dvc/config (default: core.remote)")
    args, options = parser.parse_known_args(argv)
    root = Path.cwd()
    try:
        name, url = remote(root, args.remote)
        dvc = command(args.verb, root, options + (["-r", name] if args.remote else []))
    except RemoteError as error:
        print(f"make {args.verb}: {error}", file=sys.stderr)
        return 1
    where = "to" if args.verb == "push" else "from"
    print(f"dvc {args.verb} --run-cache {where} remote {name!r} ({redact(url)})", flush=True)
    return subprocess.run(dvc, cwd=root).returncode


if __name__ == "__main__":
    sys.exit(main())
