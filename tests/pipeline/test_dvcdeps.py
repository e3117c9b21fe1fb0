"""pipeline.dvcdeps: the code deps of dvc.yaml generated from the stage modules' imports."""

from pathlib import Path
from textwrap import dedent

import pytest
import yaml

from pipeline import dvcdeps

REPO = Path(__file__).resolve().parents[2]

DVC_YAML = """\
# a comment that must survive
stages:
  one:
    cmd: python -m pipeline.stages.one
    deps:
      - data/raw
      - pipeline/stages/one.py
      - models/x.pt
    params:
      - one
    outs:
      - reports/one

  other:
    cmd: echo hello   # not a stage module: left alone
    deps:
      - psr/whatever.py
"""


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dedent(text))
    return root


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A tiny psr/pipeline tree; pipeline.stages.one imports psr lazily inside a function."""
    return _tree(
        tmp_path,
        {
            "pipeline/__init__.py": "",
            "pipeline/stages/__init__.py": "",
            "pipeline/stages/one.py": """\
                import os
                from pipeline import helpers

                def run():
                    from psr.data import prepared
                    import psr.models.net
                """,
            "pipeline/helpers.py": "from .unused_name import *\n",
            "pipeline/other.py": "",
            "psr/__init__.py": "",
            "psr/data/__init__.py": "",
            "psr/data/prepared.py": "from psr.data.labels import LABELS\n",
            "psr/data/labels.py": "LABELS = []\n",
            "psr/data/unused.py": "",
            "psr/models/__init__.py": "from . import layers\n",
            "psr/models/net.py": "",
            "psr/models/layers.py": "",
            "psr/unused.py": "",
            "dvc.yaml": DVC_YAML,
        },
    )


def test_lazy_and_submodule_imports_are_followed(project: Path):
    files = {p.as_posix() for p in dvcdeps.module_files(project, "pipeline.stages.one")}
    assert "psr/data/prepared.py" in files  # `from psr.data import prepared`, in a function
    assert "psr/data/labels.py" in files  # transitively
    assert "pipeline/helpers.py" in files  # `from pipeline import helpers`
    assert {"psr/__init__.py", "psr/data/__init__.py", "pipeline/stages/__init__.py"} <= files
    assert "psr/models/layers.py" in files  # relative `from . import layers` in __init__.py
    assert not {"psr/data/unused.py", "psr/unused.py", "pipeline/other.py"} & files


def test_whole_package_collapses_to_its_folder(project: Path):
    files = dvcdeps.module_files(project, "pipeline.stages.one")
    assert dvcdeps.collapse(project, files) == [
        "pipeline/__init__.py",
        "pipeline/helpers.py",
        "pipeline/stages",
        "psr/__init__.py",
        "psr/data/__init__.py",
        "psr/data/labels.py",
        "psr/data/prepared.py",
        "psr/models",
    ]


def test_write_keeps_non_code_deps_and_the_rest_of_the_file(project: Path):
    dvc_yaml = project / "dvc.yaml"
    assert dvcdeps.main([str(dvc_yaml)]) == 0
    text = dvc_yaml.read_text()
    deps = text.split("deps:\n")[1].split("    params:")[0].split()
    assert deps[-4:] == ["-", "data/raw", "-", "models/x.pt"]  # after the code, in their order
    assert "      - psr/models\n" in text  # the file's list indentation
    assert text.startswith("# a comment that must survive\n")
    assert "      - reports/one\n\n  other:\n" in text  # the blank line between stages
    assert "echo hello   # not a stage module" in text
    assert "      - psr/whatever.py\n" in text  # a stage not run as a module is left alone
    assert dvcdeps.check(dvc_yaml) == []
    assert not list(project.glob(".dvc.yaml.*"))  # no temporary left behind


def test_check_names_the_stage_and_the_missing_file(project: Path, capsys):
    dvc_yaml = project / "dvc.yaml"
    dvcdeps.write(dvc_yaml)
    dvc_yaml.write_text(dvc_yaml.read_text().replace("      - psr/data/labels.py\n", ""))
    before = dvc_yaml.read_text()
    assert dvcdeps.main(["--check", str(dvc_yaml)]) == 1
    err = capsys.readouterr().err
    assert "one: missing psr/data/labels.py" in err
    assert dvc_yaml.read_text() == before  # --check writes nothing


def test_check_names_an_extra_file(project: Path):
    dvc_yaml = project / "dvc.yaml"
    dvcdeps.write(dvc_yaml)
    dvc_yaml.write_text(
        dvc_yaml.read_text().replace(
            "      - data/raw\n", "      - data/raw\n      - psr/unused.py\n"
        )
    )
    assert dvcdeps.check(dvc_yaml) == ["one: extra psr/unused.py"]


def test_a_stage_without_deps_gets_them_after_its_cmd(project: Path):
    dvc_yaml = project / "dvc.yaml"
    dvc_yaml.write_text("stages:\n  one:\n    cmd: python -m pipeline.stages.one\n\n# end\n")
    dvcdeps.write(dvc_yaml)
    text = dvc_yaml.read_text()
    assert text.startswith("stages:\n  one:\n    cmd: python -m pipeline.stages.one\n    deps:\n")
    assert text.endswith("      - psr/models\n\n# end\n")


@pytest.mark.parametrize(
    "dvc_yaml", dvcdeps.DVC_FILES, ids=lambda p: p.relative_to(REPO).as_posix()
)
def test_repository_dvc_yaml_is_up_to_date(dvc_yaml):
    """Fails when a stage's imports changed: run `make deps` (python -m pipeline.dvcdeps)."""
    assert dvcdeps.check(dvc_yaml) == []


def test_paths_are_relative_to_the_stage_wdir_and_commands_may_take_arguments(project: Path):
    (project / "sub").mkdir()
    dvc_yaml = project / "sub" / "dvc.yaml"
    dvc_yaml.write_text(
        "stages:\n  one:\n    wdir: ..\n    cmd: python -m pipeline.stages.one ${item.x} 3\n"
        "    deps:\n      - data/in\n"
    )
    dvcdeps.write(dvc_yaml)
    deps = yaml.safe_load(dvc_yaml.read_text())["stages"]["one"]["deps"]
    assert deps[-1] == "data/in" and "pipeline/helpers.py" in deps, deps
