"""What a worker does after cloning the repository: the last pull step of the ``team``
deployments (``prefect.yaml``), run in the clone.

1. The worker's Python gets the clone's requirements (``[project].dependencies`` of its
   ``pyproject.toml``): the unmet ones are installed with pip, nothing when all are met. The
   project itself is not installed: the flow run imports the clone's code from its working
   directory (Prefect puts it first on ``sys.path``), so runs of different commits on one worker
   never share one installed copy.
2. ``dvc pull`` from the default DVC remote brings the outputs of the stages the commit's
   ``dvc.lock`` files record (the stages then find them up to date; the others have never run and
   compute theirs). With no default remote nothing is pulled (the embedded default computes every
   output itself) and the step says so. A recorded output the remote lacks, or a remote that
   fails, is an error: the run would otherwise recompute hours of GPU stages.

    python -m pipeline.team prepare      # in the clone (the pull step's command)
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

NO_REMOTE = (
    "psr: no default DVC remote in this clone's .dvc/config: nothing pulled, the stages compute "
    "their outputs (a shared remote: dvc remote add -d <name> <url>, committed)"
)


def requirements(pyproject: Path) -> list[Requirement]:
    """``[project].dependencies`` of ``pyproject``, parsed; errors name the file and entry."""
    try:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
        listed = project["dependencies"]
    except (OSError, tomllib.TOMLDecodeError, KeyError) as error:
        raise ValueError(f"{pyproject}: no readable [project].dependencies ({error!r})") from None
    parsed = []
    for entry in listed:
        try:
            parsed.append(Requirement(entry))
        except InvalidRequirement as error:
            raise ValueError(f"{pyproject}: [project].dependencies: {entry!r}: {error}") from None
    return parsed


def unmet(required: list[Requirement]) -> list[Requirement]:
    """The requirements this interpreter does not satisfy (missing, or another version)."""
    missing = []
    for requirement in required:
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        try:
            installed = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            missing.append(requirement)
            continue
        if not requirement.specifier.contains(installed, prereleases=True):
            missing.append(requirement)
    return missing


def install(root: Path) -> list[str]:
    """Install the clone's unmet requirements into this interpreter; returns what was installed."""
    needed = [str(r) for r in unmet(requirements(root / "pyproject.toml"))]
    if needed:
        print(f"psr: installing the clone's unmet requirements: {' '.join(needed)}", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", *needed], check=True)
        importlib.invalidate_caches()  # the DVC pull below imports what pip just installed
    else:
        print("psr: this Python has every requirement of the clone's pyproject.toml", flush=True)
    return needed


def default_remote(root: Path) -> str | None:
    """The default DVC remote's name, from every level of DVC's config (the clone's, this
    user's, this machine's): the worker may keep its remote and credentials outside the repo."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return repo.config["core"].get("remote")


def locked_stages(root: Path) -> list[str]:
    """The stages the commit's ``dvc.lock`` files record, as ``dvc pull`` targets."""
    import yaml

    listed = subprocess.run(
        ["git", "ls-files", "--", "dvc.lock", "*/dvc.lock"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    targets = []
    for name in listed:
        lock = yaml.safe_load((root / name).read_text(encoding="utf-8")) or {}
        folder = str(Path(name).parent)
        prefix = "" if folder == "." else f"{folder}/dvc.yaml:"
        targets += [f"{prefix}{stage}" for stage in lock.get("stages", {})]
    return targets


def pull(root: Path) -> bool:
    """``dvc pull`` of :func:`locked_stages` from the default remote (its name is printed, never
    its URL or credentials); False when there is none or nothing to pull."""
    remote = default_remote(root)
    if remote is None:
        print(NO_REMOTE, flush=True)
        return False
    targets = locked_stages(root)
    if not targets:
        print("psr: no dvc.lock in this commit: nothing to pull", flush=True)
        return False
    print(f"psr: dvc pull from the default DVC remote {remote!r}: {' '.join(targets)}", flush=True)
    dvc = Path(sys.executable).with_name("dvc")
    command = [str(dvc) if dvc.exists() else "dvc", "pull", *targets]
    done = subprocess.run(command, cwd=root)
    if done.returncode != 0:
        raise RuntimeError(
            f"dvc pull from remote {remote!r} failed (status {done.returncode}): is the remote "
            "reachable from this worker with its credentials, and were the commit's outputs "
            "pushed (dvc push)?"
        )
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.team", description=__doc__)
    parser.add_argument("command", choices=["prepare"], help="requirements, then dvc pull")
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="the clone (default: .)")
    args = parser.parse_args(argv)
    try:
        install(args.root)
        pull(args.root)
    except (ValueError, RuntimeError, subprocess.CalledProcessError) as error:
        print(f"psr: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
