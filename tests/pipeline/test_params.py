"""params.yaml validation: the repository's file, typos, wrong types, edits like ``dvc exp -S``."""

from pathlib import Path

import pytest
import yaml

from pipeline.params import Params, load_params, parse_params, set_params
from pipeline.resolve import apply_overrides, check_space

REPO = Path(__file__).resolve().parents[2]
PARAMS = REPO / "params.yaml"
RECIPES = sorted((REPO / "configs").glob("*.yaml"))


@pytest.fixture
def data() -> dict:
    return yaml.safe_load(PARAMS.read_text())


def test_repository_params_validate():
    params = load_params(PARAMS)
    assert isinstance(params, Params)
    assert params.dataset_name == "synthetic"
    check_space(params)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipes_validate_on_top_of_the_defaults(recipe: Path, data: dict):
    """Each recipe is a partial params file: merged over params.yaml it must validate."""
    overlay = yaml.safe_load(recipe.read_text())

    def merge(base: dict, top: dict) -> dict:
        out = dict(base)
        for key, value in top.items():
            both = isinstance(value, dict) and isinstance(base.get(key), dict)
            out[key] = merge(base[key], value) if both else value
        return out

    params = parse_params(merge(data, overlay), str(recipe))
    check_space(params)
    assert params.model.pretrained == "imagenet"
    assert params.model.width == 1.0


@pytest.mark.parametrize("dvc_file", ["dvc.yaml", "ablation/dvc.yaml"])
def test_every_param_a_stage_tracks_is_spelled_out_in_params_yaml(dvc_file: str, data: dict):
    """DVC refuses to run a stage whose tracked parameter is missing from params.yaml (a
    pydantic default is not enough)."""
    stages = yaml.safe_load((REPO / dvc_file).read_text())["stages"]
    missing = []
    for name, stage in stages.items():
        for entry in stage.get("params", []):
            for key in entry if isinstance(entry, dict) else [entry]:
                node = data
                for part in str(key).split("."):
                    if not isinstance(node, dict) or part not in node:
                        missing.append(f"{name}: {key}")
                        break
                    node = node[part]
    assert not missing


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_the_readmes_recipe_command_applies_every_recipe(recipe: Path, tmp_path):
    """``python -m pipeline.recipe configs/<x>.yaml`` writes values back as ``dvc exp run -S``
    does, e.g. ``lrs=[1e-05, ...]``: YAML 1.2 floats, not strings."""
    from pipeline.recipe import apply_recipe

    (tmp_path / "params.yaml").write_text(PARAMS.read_text())
    params = apply_recipe(recipe, tmp_path / "params.yaml")
    assert params.train.phase1.lrs[0] == 1e-5
    assert load_params(tmp_path / "params.yaml") == params


@pytest.mark.parametrize(
    ("section", "path", "value", "message"),
    [
        ("train", ["phase1", "lr"], 0.1, "train.phase1.lr: Extra inputs are not permitted"),
        ("register", ["metrik"], "accuracy", "register.metrik: Extra inputs are not permitted"),
        ("tune", ["pruner", "patience"], 3, "tune.pruner.patience: Extra inputs"),
        ("model", ["width"], "wide", "model.width: Input should be a valid number"),
        ("train", ["batch_size"], "big", "train.batch_size: Input should be a valid integer"),
        ("download", ["synth", "train"], -5, "download.synth.train: Input should be greater"),
        ("evaluate", ["tta"], "maybe", "evaluate.tta: Input should be a valid boolean"),
        ("tune", ["baseline_trial"], False, "tune: Value error, tune.seed_repeats repeats"),
        ("tune", ["n_trials"], 2, "tune.n_trials=2 cannot hold the baseline and its 2 seed"),
        ("ablate", ["targets"], "votes", "ablate.targets: Input should be 'labels' or 'train'"),
    ],
)
def test_errors_name_the_key(data, section, path, value, message):
    node = data[section]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ValueError, match=r"invalid parameters") as err:
        parse_params(data)
    assert message in str(err.value)
    assert "params.yaml" in str(err.value)


def test_unknown_section_is_an_error(data):
    data["trian"] = {"batch_size": 3}
    with pytest.raises(ValueError, match=r"trian: Extra inputs are not permitted"):
        parse_params(data)


def test_synthetic_download_needs_the_raw_folder_as_source(data):
    data["prepare"]["source"] = "/somewhere/else"
    with pytest.raises(ValueError, match=r"set prepare.source to data/raw"):
        parse_params(data)


def test_search_space_paths_are_checked(data):
    data["tune"]["space"] = {"train.phase1.lrz": {"type": "float", "low": 0.1, "high": 1.0}}
    with pytest.raises(ValueError, match=r"tune.space: train.phase1.lrz: no parameter"):
        check_space(parse_params(data))
    data["tune"]["space"] = {"optimizer.lr": {"type": "float", "low": 0.1, "high": 1.0}}
    with pytest.raises(ValueError, match=r"paths start with 'train.' or 'model.'"):
        parse_params(data)
    data["tune"]["space"] = {"train.batch_size": {"type": "int", "low": 4, "high": 2}}
    with pytest.raises(ValueError, match=r"needs low <= high"):
        parse_params(data)


def test_overrides_write_into_lists_and_revalidate(data):
    params = parse_params(data)
    tuned = apply_overrides(params, {"train.phase1.lrs.1": 0.02, "model.sr_res_blocks": 3})
    assert tuned.train.phase1.lrs[1] == 0.02
    assert tuned.train.phase1.lrs[0] == params.train.phase1.lrs[0]
    assert tuned.model.sr_res_blocks == 3
    assert params.train.phase1.lrs[1] != 0.02  # the original is untouched
    with pytest.raises(ValueError, match=r"train.phase1.lrs.7.*not an index"):
        apply_overrides(params, {"train.phase1.lrs.7": 0.1})
    with pytest.raises(ValueError, match=r"tuned parameters: train.batch_size"):
        apply_overrides(params, {"train.batch_size": 0})


def test_set_params_keeps_comments_and_refuses_invalid_edits(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(PARAMS.read_text())
    params = set_params(path, ["train.phase1.epochs=1", "evaluate.tta=false"])
    assert params.train.phase1.epochs == 1
    assert params.evaluate.tta is False
    text = path.read_text()
    assert "# Every knob of the pipeline" in text  # comments survive the round trip
    assert load_params(path).train.phase1.epochs == 1
    with pytest.raises(ValueError, match=r"train.phase1.epochs"):
        set_params(path, ["train.phase1.epochs=-3"])
    assert path.read_text() == text  # unchanged after a refused edit
    with pytest.raises(ValueError, match=r"expected section.key=value"):
        set_params(path, ["train.phase1.epochs"])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"parameter file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ValueError, match=r"not valid YAML"):
        load_params(bad)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (["train", "phase1", "epochs"], True, "train.phase1.epochs: Input should be a valid int"),
        (["train", "batch_size"], "32", "train.batch_size: Input should be a valid integer"),
        (["evaluate", "tta"], 1, "evaluate.tta: Input should be a valid boolean"),
        (["model", "width"], "0.5", "model.width: Input should be a valid number"),
    ],
)
def test_types_are_strict(data, path, value, message):
    """YAML's ``true`` is not 1 epoch, nor a quoted number a number."""
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ValueError, match=message):
        parse_params(data, "params.yaml")


def test_exponent_floats_are_numbers(tmp_path):
    text = PARAMS.read_text().replace("lrs: [0.0003,", "lrs: [3e-4,", 1)
    assert "3e-4" in text
    (tmp_path / "params.yaml").write_text(text)
    assert load_params(tmp_path / "params.yaml").train.phase1.lrs[0] == 3e-4


def test_breakdown_auto_works_on_any_data_a_named_column_needs_the_generator(data):
    synthetic = parse_params(data)
    assert synthetic.evaluate.breakdown_by == "auto" and synthetic.breakdown_sidecar
    data["evaluate"]["breakdown_by"] = None
    assert not parse_params(data).breakdown_sidecar
    data["download"]["synthetic"] = False
    data["prepare"]["source"] = "data/external/ferplus"
    for value in ("auto", None):
        data["evaluate"]["breakdown_by"] = value
        assert not parse_params(data).breakdown_sidecar  # real data: no generation.csv
    data["evaluate"]["breakdown_by"] = "face_size"
    with pytest.raises(ValueError, match=r"breakdown_by: face_size needs the synthetic"):
        parse_params(data)
