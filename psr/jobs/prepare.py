"""Job ``prepare``: a raw dataset in its published format -> the prepared format.

The work lives in :func:`psr.data.prepare.prepare`; this module gives it the jobs' shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psr.data.prepare import PrepareConfig

__all__ = ["PrepareConfig", "PrepareResult", "run"]


@dataclass(frozen=True)
class PrepareResult:
    root: Path  # <out>/<name>/
    manifest: dict[str, Any]

    @property
    def counts(self) -> dict[str, int]:
        """Images per split."""
        return {split: info["count"] for split, info in self.manifest["splits"].items()}

    @property
    def skipped(self) -> int:
        """Source images left out (unreadable, bad boxes), each named in the manifest."""
        return len(self.manifest.get("skipped") or [])


def run(cfg: PrepareConfig, out: str | Path) -> PrepareResult:
    """Prepare ``cfg.source`` into ``out/<name>/`` (written atomically, replaced as a whole)."""
    from psr.data.prepare import prepare
    from psr.data.prepared import read_manifest

    root = prepare(cfg, out)
    return PrepareResult(root=root, manifest=read_manifest(root))
