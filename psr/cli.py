"""The ``psr`` command. Each subcommand lives in ``psr/commands/<name>.py`` (``sr_pretrain.py``
is ``psr sr-pretrain``) and exposes ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``
(``_<name>.py`` is a helper that commands share); heavy imports stay inside ``run`` so that
``psr --help`` is instant."""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

import psr.commands

DESCRIPTION = (
    "PSR-FER: prepare FER datasets, train, evaluate and serve the Pyramid with Super "
    "Resolution network for facial expression recognition."
)
EXIT_BROKEN_PIPE = 128 + 13  # what a shell reports for a process killed by SIGPIPE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="psr", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(psr.commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"psr.commands.{info.name}")
        cmd = sub.add_parser(info.name.replace("_", "-"), help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except (ValueError, FileNotFoundError) as err:
        print(f"psr {args.command}: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader of our output left (`psr predict ... | head`). Point stdout at devnull so
        # the interpreter's final flush does not raise again (Python docs, "Note on SIGPIPE").
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
