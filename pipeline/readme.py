"""Copy generated result tables into the README between their markers, never by hand.

    python -m pipeline.readme            # after `make ablate` (the Makefile runs it)
    python -m pipeline.readme --check    # exit 1 when the README is out of date

Each block is ``<!-- <name>:start -->`` ... ``<!-- <name>:end -->`` and receives the file of
:data:`BLOCKS`. The images it links to live in ``reports/`` (DVC outputs, not in git): they are
copied to :data:`ASSETS` (tracked) as ``<name>-<file>`` and the links point there.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from pipeline.ablation import RESULTS_FILE

README = Path("README.md")
ASSETS = Path("docs/generated")
#: Marker name -> the generated Markdown file it receives.
BLOCKS: dict[str, Path] = {"ablation": RESULTS_FILE}
LINK = re.compile(r"(!?)(\[[^\]]*\])\(([^)\s]+)\)")
EXTERNAL = re.compile(r"^([a-zA-Z][\w+.-]*:|/|#)")


def relinked(
    markdown: str, source: Path, readme: Path, name: str, assets: Path
) -> tuple[str, dict[Path, bytes]]:
    """``source``'s Markdown with local links made relative to ``readme``'s folder and local
    images moved to ``assets`` (returned as path -> bytes, to be written)."""
    files: dict[Path, bytes] = {}

    def fix(match: re.Match) -> str:
        bang, label, target = match.groups()
        if EXTERNAL.match(target):
            return match.group(0)
        path = source.parent / target
        if bang:
            copy = assets / f"{name}-{path.name}"
            files[copy] = path.read_bytes()
            path = copy
        return f"{bang}{label}({Path(os.path.relpath(path, readme.parent)).as_posix()})"

    return LINK.sub(fix, markdown), files


def embed(text: str, name: str, content: str) -> str:
    """``text`` with block ``name`` replaced by ``content``; a missing marker is an error."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if not pattern.search(text):
        raise ValueError(f"no {start} ... {end} block in the README")
    return pattern.sub(lambda _: f"{start}\n{content.strip()}\n{end}", text, count=1)


def updated(readme: Path = README, assets: Path = ASSETS) -> tuple[str, dict[Path, bytes]]:
    """The README with every block filled from its generated file (which must exist), and the
    image files the blocks link to."""
    text = readme.read_text(encoding="utf-8")
    files: dict[Path, bytes] = {}
    for name, source in BLOCKS.items():
        if not source.is_file():
            raise FileNotFoundError(f"{source} does not exist: generate it first (make ablate)")
        content, images = relinked(source.read_text(encoding="utf-8"), source, readme, name, assets)
        text = embed(text, name, content)
        files.update(images)
    return text, files


def main(argv: list[str] | None = None) -> int:
    from psr.fileio import atomic_write, write_text

    parser = argparse.ArgumentParser(prog="python -m pipeline.readme", description=__doc__)
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--assets", type=Path, default=ASSETS, help="where linked images go")
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 on a change")
    args = parser.parse_args(argv)
    try:
        text, files = updated(args.readme, args.assets)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    stale = [p for p, data in files.items() if not p.is_file() or p.read_bytes() != data]
    if text == args.readme.read_text(encoding="utf-8") and not stale:
        print(f"{args.readme}: up to date")
        return 0
    if args.check:
        print(f"{args.readme}: generated blocks out of date: run python -m pipeline.readme")
        return 1
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, files[path])
    write_text(args.readme, text)
    print(f"{args.readme}: updated {', '.join(BLOCKS)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
