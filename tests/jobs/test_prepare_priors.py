import json

import numpy as np
import pytest

from psr.data.labels import EXPRESSIONS
from psr.jobs import priors
from psr.priors import prior_for_classes, save_priors


def test_prepare_job_result_matches_its_manifest(prepared):
    from psr.jobs.prepare import PrepareResult

    manifest = json.loads((prepared / "manifest.json").read_text())
    result = PrepareResult(root=prepared, manifest=manifest)
    assert manifest["class_names"] == list(EXPRESSIONS)
    # crowd votes without a majority leave a few faces out (Microsoft's rule)
    generated = {"train": 64, "valid": 24, "test": 24}
    assert set(result.counts) == set(generated)
    assert all(0.8 * generated[s] <= n <= generated[s] for s, n in result.counts.items())
    assert result.skipped == 0


def test_priors_job_writes_a_row_stochastic_prior_and_figure(prepared, tmp_path):
    result = priors.run(
        priors.PriorsConfig(missing="uniform"),
        prepared,
        tmp_path / "p.json",
        figure=tmp_path / "p.png",
    )
    assert result.class_names == EXPRESSIONS
    np.testing.assert_allclose(result.matrix.sum(axis=1), 1.0, atol=1e-9)
    assert 0 < result.diagonal_mean <= 1
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "p.json").read_text())["source"] == result.source


def test_uniform_prior(prepared, tmp_path):
    result = priors.run(priors.PriorsConfig(kind="uniform"), prepared, tmp_path / "u.json")
    np.testing.assert_allclose(result.matrix, 1 / 8)
    assert result.source == "uniform"


def test_prior_in_another_class_order_is_reindexed_by_name(tmp_path):
    names = ("a", "b", "c")
    matrix = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.0, 0.3, 0.7]])
    save_priors(tmp_path / "p.json", names, matrix, "test")
    got = prior_for_classes(tmp_path / "p.json", ("c", "a"))
    np.testing.assert_array_equal(got, [[0.7, 0.0], [0.1, 0.8]])
    with pytest.raises(ValueError, match=r"no rows for classes \['d'\]"):
        prior_for_classes(tmp_path / "p.json", ("a", "d"))


def test_priors_config_forbids_unknown_keys():
    with pytest.raises(ValueError, match="kindd"):
        priors.PriorsConfig(kindd="votes")


def test_priors_job_official_kind_is_the_constant_in_the_datasets_order(prepared):
    from psr.data.prepared import read_manifest
    from psr.priors import official_prior

    names, matrix, source = priors.compute(priors.PriorsConfig(kind="official"), prepared)
    assert names == tuple(read_manifest(prepared)["class_names"])
    np.testing.assert_array_equal(matrix, official_prior(names))
    assert "fer_emo_dis" in source
