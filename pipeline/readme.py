"""Copy generated result tables into the README between their markers, never by hand.

    python -m pipeline.readme            # after `make ablate` (the Makefile runs it)
    python -m pipeline.readme --check    # exit 1 when the README is out of date

Each block is ``<!-- <name>:start -->`` ... ``<!-- <name>:end -->`` and receives the file of
:data:`BLOCKS`; relative image links are rewritten to point from the README to the file.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from pipeline.ablation import SUMMARY_DIR

README = Path("README.md")
#: Marker name -> the generated Markdown file it receives.
BLOCKS: dict[str, Path] = {"ablation": SUMMARY_DIR / "results.md"}


def _relinked(markdown: str, source: Path, readme: Path) -> str:
    """Image and link targets of ``source`` made relative to ``readme``'s folder."""
    base = Path(os.path.relpath(source.parent, readme.parent))

    def fix(match: re.Match) -> str:
        target = match.group(2)
        if re.match(r"^[a-z]+://|^/|^#", target):
            return match.group(0)
        return f"{match.group(1)}({(base / target).as_posix()})"

    return re.sub(r"(!?\[[^\]]*\])\(([^)\s]+)\)", fix, markdown)


def embed(text: str, name: str, content: str) -> str:
    """``text`` with block ``name`` replaced by ``content``; a missing marker is an error."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if not pattern.search(text):
        raise ValueError(f"no {start} ... {end} block in the README")
    return pattern.sub(lambda _: f"{start}\n{content.strip()}\n{end}", text, count=1)


def updated(readme: Path = README) -> str:
    """The README with every block filled from its generated file (which must exist)."""
    text = readme.read_text(encoding="utf-8")
    for name, source in BLOCKS.items():
        if not source.is_file():
            raise FileNotFoundError(f"{source} does not exist: generate it first (make ablate)")
        text = embed(text, name, _relinked(source.read_text(encoding="utf-8"), source, readme))
    return text


def main(argv: list[str] | None = None) -> int:
    from psr.fileio import write_text

    parser = argparse.ArgumentParser(prog="python -m pipeline.readme", description=__doc__)
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 on a change")
    args = parser.parse_args(argv)
    try:
        text = updated(args.readme)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if text == args.readme.read_text(encoding="utf-8"):
        print(f"{args.readme}: up to date")
        return 0
    if args.check:
        print(f"{args.readme}: generated blocks out of date: run python -m pipeline.readme")
        return 1
    write_text(args.readme, text)
    print(f"{args.readme}: updated {', '.join(BLOCKS)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
