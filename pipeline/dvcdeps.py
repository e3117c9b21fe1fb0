"""Generate the code ``deps:`` of the DVC stages from what each stage module imports.

Hand-kept dependency lists drift: a stage that starts importing another module keeps being
restored from DVC's cache after that module changes. For each stage whose ``cmd`` is
``python -m pipeline.stages.<name>``, this follows every ``import`` statically (``ast``, lazy
imports inside functions included) through the project's packages (``psr``, ``pipeline``) and
writes the files reached into dvc.yaml: a package folder when all of its ``.py`` files are
needed, else the files, sorted, then the stage's other deps (data, models, reports) as they were.

    python -m pipeline.dvcdeps           # rewrite dvc.yaml's and ablation/dvc.yaml's (make deps)
    python -m pipeline.dvcdeps --check   # write nothing; exit 1 naming each stage that differs

Not seen: imports by computed name (``importlib.import_module(f"...")``); no stage uses one.
A non-``.py`` file listed under ``psr/`` or ``pipeline/`` (package data) is kept as listed.
"""

from __future__ import annotations

import argparse
import ast
import copy
import io
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path, PurePosixPath

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from psr.fileio import write_text

PACKAGES = ("psr", "pipeline")
REPO = Path(__file__).resolve().parents[1]
STAGE_CMD = re.compile(r"python[\d.]*\s+-m\s+(pipeline\.stages\.[\w.]+)(\s.*)?")
#: Every pipeline file whose stages the generator keeps (``make deps``).
DVC_FILES = (REPO / "dvc.yaml", REPO / "ablation" / "dvc.yaml")


# ---- imports -> files ----


def module_path(root: Path, name: str) -> Path | None:
    """The file that defines module ``name`` under ``root`` (a package's ``__init__.py``)."""
    base = root.joinpath(*name.split("."))
    for path in (base / "__init__.py", base.with_name(base.name + ".py")):
        if path.is_file():
            return path
    return None


def _from_base(node: ast.ImportFrom, package: str) -> str:
    """The absolute module of ``from <base> import ...``, relative levels resolved."""
    if not node.level:
        return node.module or ""
    parts = package.split(".")
    if node.level - 1 >= len(parts):
        return ""  # beyond the top-level package: not importable
    base = ".".join(parts[: len(parts) - node.level + 1])
    return f"{base}.{node.module}" if node.module else base


def imported_names(path: Path, module: str) -> set[str]:
    """Every module ``path`` may import, anywhere in it; ``from m import x`` gives m and m.x
    (x may be a submodule; names that are not modules resolve to no file later)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (base := _from_base(node, package)):
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names if a.name != "*")
    return names


def _with_parents(name: str) -> Iterator[str]:
    """``a.b.c`` -> a, a.b, a.b.c: importing a module runs its packages' ``__init__`` first."""
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        yield ".".join(parts[:i])


def module_files(root: Path, module: str) -> set[Path]:
    """The project files (relative to ``root``) that importing ``module`` can load."""
    if module_path(root, module) is None:
        raise FileNotFoundError(f"no module {module} under {root}")
    files: set[Path] = set()
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen or name.partition(".")[0] not in PACKAGES:
            continue
        seen.add(name)
        if (path := module_path(root, name)) is None:
            continue
        files.add(path.relative_to(root))
        todo.extend(_with_parents(name))
        todo.extend(imported_names(path, name))
    return files


# ---- files -> the shortest readable list ----


def _collapse(root: Path, folder: Path, files: set[Path]) -> list[str]:
    sources = {p.relative_to(root) for p in (root / folder).rglob("*.py")}
    needed = sources & files
    if not needed:
        return []
    if needed == sources:
        return [folder.as_posix()]
    entries = [f.as_posix() for f in needed if f.parent == folder]
    for sub in sorted(p for p in (root / folder).iterdir() if p.is_dir()):
        entries += _collapse(root, sub.relative_to(root), files)
    return entries


def collapse(root: Path, files: set[Path]) -> list[str]:
    """``files`` as folders (every ``.py`` under them needed) and single files, sorted."""
    return sorted(e for pkg in PACKAGES for e in _collapse(root, Path(pkg), files))


# ---- dvc.yaml ----


def is_code(dep: object) -> bool:
    """A generated dep: a ``.py`` file or a folder under one of the project's packages."""
    if not isinstance(dep, str):
        return False
    path = PurePosixPath(dep)
    return bool(path.parts) and path.parts[0] in PACKAGES and path.suffix in ("", ".py")


def stage_deps(root: Path, module: str, deps: Iterable[object]) -> list[object]:
    """The generated code deps of ``module``, then the other ``deps`` in their order."""
    return [*collapse(root, module_files(root, module)), *(d for d in deps if not is_code(d))]


def stage_modules(doc: dict) -> dict[str, str]:
    """Stage name -> its ``pipeline.stages`` module, for the stages run as one."""
    modules = {}
    for name, stage in (doc.get("stages") or {}).items():
        cmd = stage.get("cmd")
        if isinstance(cmd, str) and (m := STAGE_CMD.fullmatch(cmd.strip())):
            modules[name] = m.group(1)
    return modules


def _yaml() -> YAML:
    yaml = YAML()  # round-trip: comments, order and quoting survive
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 4096  # never re-wrap long lines
    return yaml


def generate(dvc_yaml: Path, doc: dict) -> dict[str, list[object]]:
    """Stage name -> its deps as they should be, for every stage run as a stage module."""
    stages = doc.get("stages") or {}
    return {  # a stage's paths are relative to its wdir (default: the dvc.yaml's folder)
        name: stage_deps(
            (dvc_yaml.parent / stages[name].get("wdir", ".")).resolve(),
            module,
            stages[name].get("deps") or [],
        )
        for name, module in stage_modules(doc).items()
    }


def difference(current: Sequence[object], wanted: Sequence[object]) -> str | None:
    """What is wrong with ``current`` (missing, extra, order), or None when it is ``wanted``."""
    missing = [str(d) for d in wanted if d not in current]
    extra = [str(d) for d in current if d not in wanted]
    problems = [f"missing {', '.join(missing)}"] * bool(missing)
    problems += [f"extra {', '.join(extra)}"] * bool(extra)
    if not problems and list(current) != list(wanted):
        problems = ["order differs"]
    return "; ".join(problems) or None


def check(dvc_yaml: Path = REPO / "dvc.yaml") -> list[str]:
    """One line per stage whose deps differ from the generated ones; empty when all agree."""
    doc = _yaml().load(dvc_yaml)
    problems = []
    for name, wanted in generate(dvc_yaml, doc).items():
        if why := difference(list(doc["stages"][name].get("deps") or []), wanted):
            problems.append(f"{name}: {why}")
    return problems


def _replace_deps(stage: CommentedMap, wanted: list[object]) -> None:
    """Set ``stage``'s deps in place, keeping comments on kept items and the list's tail."""
    seq = stage.get("deps")
    if isinstance(seq, CommentedSeq):
        tail = seq.ca.items.pop(len(seq) - 1, None)  # blank line / comment before the next key
    else:
        seq, tail = _new_deps(stage)
    kept = {seq[i]: c for i, c in seq.ca.items.items() if isinstance(seq[i], str)}
    seq.ca.items.clear()
    del seq[:]
    seq.extend(wanted)
    seq.ca.items.update({i: kept[d] for i, d in enumerate(wanted) if d in kept})
    if tail is not None and wanted:
        seq.ca.items[len(wanted) - 1] = tail


def _new_deps(stage: CommentedMap) -> tuple[CommentedSeq, list | None]:
    """An empty deps list after ``cmd``; the lines that followed the stage move below it."""
    keys = list(stage)
    at = keys.index("cmd") + 1 if "cmd" in keys else 0
    stage.insert(at, "deps", seq := CommentedSeq())
    last = stage.ca.items.get(keys[-1]) if at == len(keys) else None
    token = last[2] if last and len(last) > 2 else None
    if token is None or not token.value.partition("\n")[2]:
        return seq, None
    head, _, rest = token.value.partition("\n")  # the end-of-line comment stays with its key
    tail = copy.copy(token)
    tail.value = "\n" + rest
    if head:
        token.value = head + "\n"
    else:
        last[2] = None
    return seq, [tail, None]


def write(dvc_yaml: Path = REPO / "dvc.yaml") -> list[str]:
    """Rewrite the deps of ``dvc_yaml`` in place; return the stages that changed."""
    yaml = _yaml()
    doc = yaml.load(dvc_yaml)
    changed = []
    for name, wanted in generate(dvc_yaml, doc).items():
        stage = doc["stages"][name]
        if list(stage.get("deps") or []) != wanted:
            _replace_deps(stage, wanted)
            changed.append(name)
    if changed:
        out = io.StringIO()
        yaml.dump(doc, out)
        write_text(dvc_yaml, out.getvalue())
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.dvcdeps",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 on a difference")
    parser.add_argument("dvc_yaml", nargs="*", type=Path, default=list(DVC_FILES))
    args = parser.parse_args(argv)
    if args.check:
        problems = [f"{path}: {line}" for path in args.dvc_yaml for line in check(path)]
        for line in problems:
            print(line, file=sys.stderr)
        if problems:
            print("code deps out of date: run `make deps`", file=sys.stderr)
        return 1 if problems else 0
    for path in args.dvc_yaml:
        changed = write(path)
        print(f"{path}: " + (f"updated {', '.join(changed)}" if changed else "up to date"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
