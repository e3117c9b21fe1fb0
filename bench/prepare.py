"""Benchmark: prepare a full-size FER2013 + FER+ pair (35,887 rows), side by side with
Microsoft's own ``src/generate_training_data.py`` on the same files.

Targets: the whole ``psr prepare`` (decode, labels, index, checksums) under 10 s and under 1 GB
of peak memory (all its processes together).

Microsoft's script is not part of this project (microsoft/FERPlus, MIT): get it yourself and pass
its path, e.g.::

    git clone https://github.com/microsoft/FERPlus /tmp/FERPlus
    .venv/bin/python bench/prepare.py --ms-script /tmp/FERPlus/src/generate_training_data.py

It needs only numpy and Pillow (both in our venv). Without ``--ms-script`` only ours is measured.

Input: ``--source DIR`` with fer2013.csv + fer2013new.csv (e.g. written by
``psr synth --format ferplus --full-size``), or ``--synth`` to have the synthetic generator write
one first; by default the bench writes a random-pixel fer2013.csv matching the real vote file
(``../shared/data/ferplus/fer2013new.csv``, or random votes when that is absent). Each tool
runs in its own process tree, sampled with psutil.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
REAL_VOTES = REPO.parent / "shared" / "data" / "ferplus" / "fer2013new.csv"
SPLIT_SIZES = {"Training": 28_709, "PublicTest": 3_589, "PrivateTest": 3_589}
VOTES_HEADER = (
    "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"
)


def write_random_pair(root: Path, seed: int = 0) -> None:
    """fer2013.csv with random pixels in the vote file's row order (35,887 rows)."""
    rng = np.random.default_rng(seed)
    if REAL_VOTES.is_file():
        shutil.copy(REAL_VOTES, root / "fer2013new.csv")
        usages = [line.split(",", 1)[0] for line in REAL_VOTES.read_text().splitlines()[1:]]
    else:
        usages = [u for u, n in SPLIT_SIZES.items() for _ in range(n)]
        votes = rng.multinomial(
            10, [0.3, 0.25, 0.1, 0.1, 0.1, 0.03, 0.05, 0.02, 0.04, 0.01], len(usages)
        )
        lines = [VOTES_HEADER] + [
            f"{u},fer{i:07d}.png,{','.join(map(str, v))}"
            for i, (u, v) in enumerate(zip(usages, votes, strict=True))
        ]
        (root / "fer2013new.csv").write_text("\n".join(lines) + "\n")
    digits = [str(v).encode() for v in range(256)]
    with open(root / "fer2013.csv", "wb") as f:
        f.write(b"emotion,pixels,Usage\n")
        for i, usage in enumerate(usages):
            pixels = b" ".join([digits[v] for v in rng.integers(0, 256, 2304).tolist()])
            f.write(b"%d,%s,%s\n" % (i % 7, pixels, usage.encode()))


def measure(cmd: list[str], interval: float = 0.01) -> tuple[float, float, float, float]:
    """Run ``cmd``; return (wall seconds, CPU seconds of the whole tree, peak RSS of the process
    tree summed, peak RSS of one process), both in MiB."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = psutil.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak_sum = peak_one = 0
    while proc.poll() is None:
        try:
            tree = [proc, *proc.children(recursive=True)]
            rss = [p.memory_info().rss for p in tree]
        except psutil.Error:
            continue
        peak_sum, peak_one = max(peak_sum, sum(rss)), max(peak_one, max(rss))
        time.sleep(interval)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} failed:\n{proc.stderr.read().decode()}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wall, cpu, peak_sum / 2**20, peak_one / 2**20


def same_pixels(prepared: Path, ms_out: Path, votes: Path, sample: int = 500) -> int:
    """Compare a sample of our prepared images with Microsoft's PNGs; return how many matched
    (rows whose image name repeats are skipped: Microsoft's script overwrites them)."""
    from PIL import Image

    from psr.data.ferplus import SPLITS, read_votes
    from psr.data.prepared import load_split

    table = read_votes(votes)
    repeated = {
        n for n, c in zip(*np.unique(table.names, return_counts=True), strict=True) if c > 1
    }
    folders = {
        "Training": "FER2013Train",
        "PublicTest": "FER2013Valid",
        "PrivateTest": "FER2013Test",
    }
    checked = 0
    for split in SPLITS.values():
        data = load_split(prepared, split)
        picks = np.random.default_rng(0).choice(len(data), min(sample, len(data)), replace=False)
        for i in picks:
            row = int(data.ids[i][3:])
            name = table.names[row]
            if name in repeated:
                continue
            png = np.asarray(Image.open(ms_out / folders[table.usage[row]] / name))
            if not np.array_equal(png, data.images[i, :, :, 0]):
                raise AssertionError(f"row {row}: our image differs from Microsoft's {name}")
            checked += 1
    return checked


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--ms-script", type=Path, help="microsoft/FERPlus src/generate_training_data.py"
    )
    parser.add_argument("--source", type=Path, help="folder with fer2013.csv + fer2013new.csv")
    parser.add_argument(
        "--synth", action="store_true", help="write the input with the synthetic generator"
    )
    parser.add_argument("--workers", type=int, help="psr prepare --workers (default: all cores)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="psr-bench-") as tmp:
        work = Path(tmp)
        source = args.source
        if source is None:
            source = work / "raw"
            source.mkdir()
            t = time.perf_counter()
            if args.synth:
                from psr.data.synthetic.config import SynthConfig
                from psr.data.synthetic.writers import write_dataset

                cores = os.cpu_count() or 1
                write_dataset("ferplus", source, SynthConfig.full_size(), workers=cores)
            else:
                write_random_pair(source)
            print(f"wrote a full-size fer2013.csv in {time.perf_counter() - t:.1f} s")
        with open(source / "fer2013.csv", "rb") as f:
            rows = sum(1 for _ in f) - 1

        ours = [sys.executable, "-m", "psr.cli", "prepare", "--dataset", "ferplus"]
        ours += ["--source", str(source), "--out", str(work / "prepared"), "--no-progress"]
        if args.workers is not None:
            ours += ["--workers", str(args.workers)]
        results = {"psr prepare": measure(ours)}
        manifest = (work / "prepared" / "ferplus" / "manifest.json").read_text()
        produced = {"psr prepare": sum(s["count"] for s in json.loads(manifest)["splits"].values())}

        if args.ms_script is not None:
            out = work / "ms"
            cmd = [sys.executable, str(args.ms_script), "-d", str(out)]
            cmd += ["-fer", str(source / "fer2013.csv"), "-ferplus", str(source / "fer2013new.csv")]
            results["microsoft generate_training_data.py"] = measure(cmd)
            produced["microsoft generate_training_data.py"] = sum(1 for _ in out.rglob("*.png"))
            prepared = work / "prepared" / "ferplus"
            matched = same_pixels(prepared, out, source / "fer2013new.csv")
            print(f"{matched} sampled images identical in both outputs")

    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"\n{rows:,} rows, {psutil.cpu_count()} cores, load average {load}")
    header = ("tool", "wall s", "CPU s", "images", "img/s", "peak MiB (tree)", "(one proc)")
    print("{:<38} {:>7} {:>7} {:>7} {:>8} {:>16} {:>11}".format(*header))
    for name, (wall, cpu, peak_sum, peak_one) in results.items():
        n = produced[name]
        print(
            f"{name:<38} {wall:7.2f} {cpu:7.2f} {n:7d} {n / wall:8.0f}"
            f" {peak_sum:16.0f} {peak_one:11.0f}"
        )
    if len(results) == 2:
        (ours_wall, ours_cpu, *_), (ms_wall, ms_cpu, *_) = results.values()
        print(
            f"\nMicrosoft's script / psr prepare: wall time {ms_wall / ours_wall:.1f}x,"
            f" CPU time {ms_cpu / ours_cpu:.1f}x"
        )
    wall, _, peak_sum, _ = results["psr prepare"]
    print(
        f"targets: wall < 10 s: {'met' if wall < 10 else 'MISSED'};"
        f" peak < 1024 MiB: {'met' if peak_sum < 1024 else 'MISSED'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
