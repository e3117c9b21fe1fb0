"""The ablation family: arm configurations, the params section, the report and the README."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from pipeline import ablation, readme
from pipeline.params import parse_params
from pipeline.stages import ablation_report

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def params():
    return parse_params(yaml.safe_load((REPO / "params.yaml").read_text()), "params.yaml")


def with_changes(params, section: str, **changes):
    return params.model_copy(update={section: getattr(params, section).model_copy(update=changes)})


def test_arms_change_only_what_their_row_adds(params):
    models = {arm: ablation.model_config(params, arm) for arm in ablation.ARMS if arm != "psr_deep"}
    assert {arm: (m.name, m.multiples, m.stn) for arm, m in models.items()}["small_cnn"] == (
        "small_cnn",
        [1],
        False,
    )
    del models["small_cnn"]
    assert {arm: (m.multiples, m.stn, m.sr) for arm, m in models.items()} == {
        "vgg16_ce": ([1], False, "edsr"),
        "vgg16_ls": ([1], False, "edsr"),
        "vgg16_pdls": ([1], False, "edsr"),
        "pyramid_bicubic": ([1, 2, 1], False, "bicubic"),
        "pyramid_sr": ([1, 2, 1], False, "edsr"),
        "psr": ([1, 2, 1], True, "edsr"),
    }
    for m in models.values():  # the shared knobs are params.yaml's
        assert (m.width, m.image_size, m.sr_features) == (
            params.model.width,
            params.model.image_size,
            params.model.sr_features,
        )
    losses = {arm: ablation.train_config(params, arm, 0).loss for arm in ablation.ARMS}
    assert [losses[a].name for a in ("small_cnn", "vgg16_ce", "vgg16_ls", "vgg16_pdls", "psr")] == [
        "ce",
        "ce",
        "uniform_ls",
        "pdls",
        "pdls",
    ]
    assert {loss.targets for loss in losses.values()} == {"labels"}
    assert losses["vgg16_ls"].alpha == 0.9  # the official uniform LabelSmoothingLoss default
    assert {losses[a].alpha for a in losses if a != "vgg16_ls"} == {params.train.loss.alpha}


def test_every_arm_gets_the_same_budget_and_its_seed(params):
    params = with_changes(params, "ablate", phase1_epochs=3, phase2_epochs=0)
    configs = [ablation.train_config(params, arm, 7) for arm in ablation.ARMS]
    assert {(c.phase1.epochs, c.phase2.epochs, c.seed) for c in configs} == {(3, 0, 7)}
    assert {c.phase1.lrs == params.train.phase1.lrs for c in configs} == {True}
    default = ablation.train_config(with_changes(params, "ablate", phase1_epochs=None), "psr", 0)
    assert default.phase1.epochs == params.train.phase1.epochs


def test_the_deeper_pyramid_needs_a_larger_input(params):
    assert "image_size >= 128" in ablation.skip_reason(params, "psr_deep")
    big = with_changes(params, "model", image_size=128)
    assert ablation.skip_reason(big, "psr_deep") is None
    assert ablation.model_config(big, "psr_deep").multiples == [1, 2, 4, 1]


def test_planned_runs_are_arms_by_seeds(params):
    params = with_changes(params, "ablate", arms=["psr", "vgg16_ce"], seeds=[1, 0])
    assert ablation.planned_runs(params) == [
        ("psr", 1),
        ("psr", 0),
        ("vgg16_ce", 1),
        ("vgg16_ce", 0),
    ]
    assert ablation.run_dir("psr", 1) == Path("reports/ablation/runs/psr-seed1")


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"seeds": [0, 0]}, "lists a value twice"),
        ({"seeds": [-1]}, "greater than or equal to 0"),
        ({"seeds": []}, "at least 1"),
        ({"arms": []}, "at least 1"),
    ],
)
def test_bad_ablate_section_is_a_clear_error(section, message):
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    data["ablate"].update(section)
    with pytest.raises(ValueError, match=message):
        parse_params(data, "params.yaml")


def test_unknown_arm_or_missing_section_is_named_by_the_ablation(params):
    with pytest.raises(
        ValueError, match=r"ablate.arms: unknown \['resnet'\]; valid: \['small_cnn', 'vgg16_ce'"
    ):
        ablation.planned_runs(with_changes(params, "ablate", arms=["psr", "resnet"]))
    with pytest.raises(ValueError, match="no ablate section"):
        ablation.check_arms(params.model_copy(update={"ablate": None}))


def test_a_bad_shared_config_is_an_error_not_a_skip(params):
    """Only the input size may skip an arm; a broken model section must fail loudly."""
    broken = with_changes(params, "model", image_size=40)  # too small for any pyramid
    assert "image_size" in ablation.skip_reason(broken, "psr_deep")
    assert ablation.skip_reason(broken, "psr") is None  # psr's pyramid is the member's
    with pytest.raises(ValueError):
        ablation.model_config(broken, "psr")


def _runs() -> tuple[pd.DataFrame, pd.DataFrame]:
    rows, groups = [], []
    for arm, accs in {"vgg16_ce": [0.5, 0.6, 0.7], "psr": [0.8, 0.8, 0.8]}.items():
        for seed, acc in enumerate(accs):
            rows.append(
                {
                    "arm": arm,
                    "seed": seed,
                    "accuracy": acc,
                    "macro_f1": acc - 0.1,
                    "uar": acc,
                    "ece": 0.05,
                    "best_valid_acc": acc,
                    "train_seconds": 120.0,
                    "parameters": 1000 if arm == "psr" else 500,
                    "parent_run_id": "p",
                }
            )
            for order, (group, count) in enumerate([("16-24", 10), ("24-48", 12)]):
                groups.append(
                    {
                        "arm": arm,
                        "seed": seed,
                        "group": group,
                        "count": count,
                        "order": order,
                        "accuracy": acc - 0.1 * (1 - order),
                        "truth_accuracy": acc - 0.2 * (1 - order),
                    }
                )
    return pd.DataFrame(rows), pd.DataFrame(groups)


def test_summary_is_mean_and_sample_std_over_seeds():
    runs, groups = _runs()
    summary = ablation_report.summarize(runs).set_index("arm")
    assert summary.loc["vgg16_ce", "accuracy_mean"] == pytest.approx(0.6)
    assert summary.loc["vgg16_ce", "accuracy_std"] == pytest.approx(0.1)  # ddof=1
    assert summary.loc["psr", "accuracy_std"] == pytest.approx(0.0)
    by_group = ablation_report.summarize_groups(groups)
    assert by_group["arm"].tolist() == ["vgg16_ce", "vgg16_ce", "psr", "psr"]  # run order
    assert by_group["group"].tolist() == ["16-24", "24-48"] * 2  # smallest first
    low = by_group[(by_group.arm == "vgg16_ce") & (by_group.group == "16-24")]
    assert low["mean"].item() == pytest.approx(0.5)
    assert low["truth_mean"].item() == pytest.approx(0.4)
    assert low["truth_std"].item() == pytest.approx(0.1)
    plain = ablation_report.summarize_groups(groups.drop(columns="truth_accuracy"))
    assert "truth_mean" not in plain  # real datasets have no rendered expression


def test_results_markdown_is_the_runs_numbers(params):
    runs, groups = _runs()
    summary = ablation_report.summarize(runs)
    params = with_changes(params, "ablate", arms=["vgg16_ce", "psr_deep", "psr"])
    text = ablation_report.markdown(
        summary, ablation_report.summarize_groups(groups), {"psr_deep": "too small"}, params
    )
    assert "| `vgg16_ce` | single-scale vgg16, cross-entropy | 0.6000 ± 0.1000 |" in text
    rows = [line.split(" | ")[0] for line in text.splitlines() if line.startswith("| `")]
    assert rows[:3] == ["| `vgg16_ce`", "| `psr_deep`", "| `psr`"]  # params order, skips in place
    assert "skipped: too small" in text
    assert "16-24 (n=10)" in text and "0.7000 ± 0.0000" in text
    assert "make ablate" in text and "![accuracy by face_size](accuracy_by_resolution.png)" in text
    truth = text[text.index("rendered with") :]  # the second table: against true_label
    assert "| `vgg16_ce` | 0.4000 ± 0.1000 | 0.6000 ± 0.1000 |" in truth
    assert "(accuracy_by_resolution_vs_true_label.png)" in truth


def test_readme_block_is_replaced_and_images_move_to_tracked_assets(tmp_path):
    source = tmp_path / "reports" / "ablation" / "summary" / "results.md"
    source.parent.mkdir(parents=True)
    (source.parent / "plot.png").write_bytes(b"png bytes")
    source.write_text("| a |\n\n![plot](plot.png) [csv](runs.csv) ![web](HTTPS://x.org/a.png)\n")
    page = tmp_path / "README.md"
    page.write_text("intro\n<!-- ablation:start -->\nold\n<!-- ablation:end -->\nrest\n")
    content, files = readme.relinked(
        source.read_text(), source, page, "ablation", tmp_path / "docs" / "generated"
    )
    text = readme.embed(page.read_text(), "ablation", content)
    assert "old" not in text and text.startswith("intro\n") and text.endswith("rest\n")
    assert "![plot](docs/generated/ablation-plot.png)" in text  # a tracked copy, not reports/
    assert files == {tmp_path / "docs" / "generated" / "ablation-plot.png": b"png bytes"}
    assert "[csv](reports/ablation/summary/runs.csv)" in text
    assert "(HTTPS://x.org/a.png)" in text
    with pytest.raises(ValueError, match="no <!-- other:start -->"):
        readme.embed(text, "other", "x")


def test_readme_check_and_write(tmp_path, monkeypatch):
    source = tmp_path / "results.md"
    source.write_text("new table ![p](p.png)\n")
    (tmp_path / "p.png").write_bytes(b"one")
    monkeypatch.setitem(readme.BLOCKS, "ablation", source)
    page, assets = tmp_path / "README.md", tmp_path / "assets"
    page.write_text("<!-- ablation:start -->\nold\n<!-- ablation:end -->\n")
    where = ["--readme", str(page), "--assets", str(assets)]
    assert readme.main([*where, "--check"]) == 1
    assert readme.main(where) == 0
    assert "new table" in page.read_text() and (assets / "ablation-p.png").read_bytes() == b"one"
    assert readme.main([*where, "--check"]) == 0
    (tmp_path / "p.png").write_bytes(b"two")  # a regenerated plot makes the README stale
    assert readme.main([*where, "--check"]) == 1
    source.unlink()
    assert readme.main(where) == 2


def test_targets_train_keeps_the_registered_models_targets(params):
    params = with_changes(
        params, "train", loss=params.train.loss.model_copy(update={"targets": "distribution"})
    )
    assert ablation.train_config(params, "psr", 0).loss.targets == "labels"  # the default rule
    params = with_changes(params, "ablate", targets="train")
    losses = {arm: ablation.train_config(params, arm, 0).loss for arm in ("small_cnn", "psr")}
    assert {loss.targets for loss in losses.values()} == {"distribution"}
    # each arm's own loss; plain cross-entropy as soft_ce, which takes vote distributions
    assert [loss.name for loss in losses.values()] == ["soft_ce", "pdls"]


def test_every_ablate_knob_but_arms_and_seeds_reruns_the_arms():
    """A run's DVC stage depends on every ablate field that changes what it trains (arms and
    seeds only pick which runs exist)."""
    from pipeline.params import AblateParams

    stage = yaml.safe_load((REPO / "ablation/dvc.yaml").read_text())["stages"]["arm"]
    declared = {p.removeprefix("ablate.") for p in stage["params"] if p.startswith("ablate.")}
    assert declared == set(AblateParams.model_fields) - {"arms", "seeds"}


def test_the_small_cnn_arm_keeps_no_dropout_under_a_paper_head(params):
    """A recipe sets the paper's head dropout for every VGG arm; the small CNN has no dropout
    to set, so its arm still builds."""
    params = params.model_copy(
        update={"model": params.model.model_copy(update={"head_dropout": (0.25, 0.5)})}
    )
    assert ablation.model_config(params, "small_cnn").head_dropout == (0.0, 0.0)
    assert ablation.model_config(params, "vgg16_ce").head_dropout == (0.25, 0.5)
    assert ablation.model_config(params, "psr").head_dropout == (0.25, 0.5)
