"""``make push`` / ``make pull``: the workspace's DVC outputs and run-cache to and from a remote.

``.dvc/config`` names a default remote that works on one machine with no setup: the directory
``~/.cache/psr-fer/dvc-remote``, shared by every clone of this user (outside the repository,
so deleting a clone or ``git clean -fdx`` keeps it). ``dvc remote add -d`` points it elsewhere
(S3, SSH, GCS: docs/pipeline.md, "Sharing outputs").

- push: ``dvc push --run-cache``: the outputs named by ``dvc.lock`` and every run-cache entry.
- pull: ``dvc pull --run-cache`` of each pipeline (``dvc.yaml``, ``ablation/dvc.yaml``) that
  has its ``dvc.lock``: the outputs the lock names, checked out, and the run-cache. A pipeline
  without a lock names no output (DVC's plain ``dvc pull`` fails on it: "Checkout failed"), so
  it is left out; with no lock at all (a clone of this repository, which never commits one;
  ``make save`` does in yours) pull refuses and says what restores instead (``dvc repro
  --pull``: every stage the run-cache holds, the others run).

The line each prints names the remote and its URL with any credentials masked
(``psr.uris.redact``): a URL with a password stays out of logs.

    python -m pipeline.remote push [-r REMOTE] [DVC OPTIONS]    # make push
    python -m pipeline.remote pull [-r REMOTE] [DVC OPTIONS]    # make pull
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from pipeline.dvcdeps import DVC_FILES
from pipeline.dvcdeps import REPO as _SOURCE
from psr.uris import redact

LOCK = "dvc.lock"
#: The pipelines, relative to a workspace root.
PIPELINES = tuple(path.relative_to(_SOURCE) for path in DVC_FILES)
CONFIG = Path(".dvc/config")
NO_LOCK = (
    "dvc.lock: none, so no output is named to pull (this repository never commits one; "
    "`make save` commits it in your clone). `dvc repro --pull` restores every stage the "
    "remote's run-cache holds and runs the others (register always runs: it writes to the "
    "MLflow registry)"
)


class RemoteError(RuntimeError):
    """Why the remote cannot be used as asked."""


def remote(root: Path, name: str | None = None) -> tuple[str, str]:
    """(name, URL) of remote ``name``, default: the one ``core.remote`` names (with
    ``.dvc/config.local`` and the user's DVC config applied, as DVC does)."""
    from dvc.config import Config, ConfigError

    try:
        config = Config(dvc_dir=str(root / ".dvc"))
    except ConfigError as error:  # DVC's message names the key, not the file
        raise RemoteError(f"{CONFIG} (or {CONFIG}.local, or your DVC config): {error}") from error
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


def locked_pipelines(root: Path) -> list[str]:
    """The pipelines of ``root`` that have a ``dvc.lock`` beside them (as DVC targets)."""
    return [p.as_posix() for p in PIPELINES if (root / p).with_name(LOCK).is_file()]


def command(verb: str, root: Path, options: list[str]) -> list[str]:
    """The DVC command of ``verb`` ("push" or "pull") with ``options`` passed on."""
    targets: list[str] = []
    if verb == "pull":
        targets = locked_pipelines(root)
        if not targets:
            raise RemoteError(NO_LOCK)
    return [sys.executable, "-m", "dvc", verb, "--run-cache", *options, *targets]


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
