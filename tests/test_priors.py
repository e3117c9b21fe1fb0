from pathlib import Path

import numpy as np
import pytest

from psr.cli import main
from psr.data.labels import EXPRESSIONS, class_names
from psr.priors import (
    load_priors,
    paper_prior,
    plot_priors,
    prior_for_dataset,
    prior_from_vote_file,
    prior_from_votes,
    reindex,
    save_priors,
    uniform,
)

REAL_VOTES = Path(__file__).resolve().parents[1].parent / "shared/data/ferplus/fer2013new.csv"
needs_real = pytest.mark.skipif(not REAL_VOTES.is_file(), reason=f"{REAL_VOTES} absent")


def test_prior_is_the_mean_normalised_vote_vector_per_label():
    votes = np.array([[8, 2, 0], [5, 5, 0], [0, 10, 0], [1, 1, 8]])
    labels = np.array([0, 0, 1, 2])
    prior = prior_from_votes(votes, labels)
    np.testing.assert_allclose(prior, [[0.65, 0.35, 0], [0, 1, 0], [0.1, 0.1, 0.8]])


def test_empty_class_is_an_error_or_uniform():
    votes, labels = np.array([[3, 1, 0], [0, 4, 0]]), np.array([0, 1])
    with pytest.raises(ValueError, match=r"no images labelled \['c'\]"):
        prior_from_votes(votes, labels, ["a", "b", "c"])
    prior = prior_from_votes(votes, labels, missing="uniform")
    np.testing.assert_allclose(prior[2], [1 / 3] * 3)
    with pytest.raises(ValueError, match="no \\(or negative\\) votes"):
        prior_from_votes(np.array([[0, 0, 0]]), np.array([0]))


def test_paper_prior_groups_by_microsofts_majority():
    votes = np.zeros((3, 10))
    votes[0, :2] = [6, 4]  # majority neutral
    votes[1, :2] = [5, 5]  # no majority: left out
    votes[2, 1] = 10  # happiness
    prior = paper_prior(votes, missing="uniform")
    np.testing.assert_allclose(prior[0, :2], [0.6, 0.4])
    np.testing.assert_allclose(prior[1, :2], [0.0, 1.0])


@needs_real
def test_real_prior_is_row_stochastic_with_the_papers_structure():
    prior = prior_from_vote_file(REAL_VOTES)
    assert prior.shape == (8, 8)
    np.testing.assert_allclose(prior.sum(axis=1), 1.0)
    assert np.all(np.diag(prior) == prior.max(axis=1))  # every class mostly votes for itself
    off = prior.copy()
    np.fill_diagonal(off, 0)
    confused = {EXPRESSIONS[i]: EXPRESSIONS[int(off[i].argmax())] for i in range(8)}
    assert confused["fear"] == "surprise"
    assert confused["sadness"] == "neutral"
    assert confused["disgust"] == "anger"


@needs_real
def test_real_prior_reindexed_to_rafdb_drops_contempt_without_renormalising():
    prior = prior_from_vote_file(REAL_VOTES)
    raf = reindex(prior, EXPRESSIONS, class_names("rafdb", 7))
    assert raf.shape == (7, 7)
    f, s = EXPRESSIONS.index("fear"), EXPRESSIONS.index("surprise")
    assert raf[1, 0] == prior[f, s]  # rafdb order: surprise 0, fear 1
    assert np.all(raf.sum(axis=1) < 1.0)
    assert np.all(raf.sum(axis=1) > 0.95)


def test_reindex_permutes_rows_and_columns():
    prior = np.arange(9.0).reshape(3, 3)
    out = reindex(prior, ["neutral", "happiness", "sadness"], ["sadness", "neutral"])
    np.testing.assert_array_equal(out, [[8, 6], [2, 0]])
    with pytest.raises(ValueError, match="not in the source order"):
        reindex(prior, ["neutral", "happiness", "sadness"], ["fear"])


def test_uniform():
    np.testing.assert_allclose(uniform(4), np.full((4, 4), 0.25))
    with pytest.raises(ValueError):
        uniform(0)


def test_save_load_round_trip_and_errors(tmp_path):
    names = ("neutral", "happiness")
    matrix = np.array([[0.9, 0.1], [0.2, 0.8]])
    save_priors(tmp_path / "p" / "priors.json", names, matrix, source="test")
    loaded_names, loaded = load_priors(tmp_path / "p" / "priors.json")
    assert loaded_names == names
    np.testing.assert_array_equal(loaded, matrix)
    with pytest.raises(ValueError, match="does not match 3 class names"):
        save_priors(tmp_path / "x.json", (*names, "fear"), matrix, source="test")
    (tmp_path / "bad.json").write_text('{"class_names": ["a"]}')
    with pytest.raises(ValueError, match="not a prior file"):
        load_priors(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError):
        load_priors(tmp_path / "absent.json")


def test_heatmap_png(tmp_path):
    plot_priors(tmp_path / "prior.png", EXPRESSIONS, uniform(8))
    assert (tmp_path / "prior.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _prepared_ferplus(tmp_path):
    """A prepared FER+-like dataset whose train split carries all ten vote columns."""
    from psr.data.prepared import create_images, write_index, write_manifest

    rng = np.random.default_rng(0)
    root = tmp_path / "prepared"
    root.mkdir()
    votes = np.zeros((80, 10))
    labels = np.repeat(np.arange(8), 10)
    votes[np.arange(80), labels] = 7
    votes[np.arange(80), rng.integers(0, 10, 80)] += 3
    create_images(root / "train.npy", 80, (4, 4), 1)
    names = (*EXPRESSIONS, "unknown", "NF")
    write_index(
        root / "train.csv",
        [str(i) for i in range(80)],
        ["s"] * 80,
        labels,
        EXPRESSIONS,
        votes,
        names,
    )
    write_manifest(
        root,
        {
            "dataset": "ferplus",
            "protocol": {},
            "class_names": list(EXPRESSIONS),
            "image_size": [4, 4],
            "channels": 1,
            "splits": {"train": {"count": 80, "per_class": {}}},
        },
    )
    return root, votes


def test_prior_for_dataset_from_prepared_votes(tmp_path):
    root, votes = _prepared_ferplus(tmp_path)
    names, matrix, source = prior_for_dataset(root)
    assert names == EXPRESSIONS and "train.csv" in source
    np.testing.assert_allclose(matrix, paper_prior(votes))
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0)


@needs_real
def test_cli_priors(tmp_path, capsys):
    root, _ = _prepared_ferplus(tmp_path)
    out, png = tmp_path / "r" / "priors.json", tmp_path / "r" / "priors.png"
    argv = ["priors", "--data", str(root), "--out", str(out), "--png", str(png)]
    assert main([*argv, "--votes", str(REAL_VOTES)]) == 0
    _, matrix = load_priors(out)
    np.testing.assert_allclose(matrix, prior_from_vote_file(REAL_VOTES))
    assert png.is_file() and "8x8 prior" in capsys.readouterr().out


def test_dataset_without_votes_asks_for_the_vote_file(tmp_path, capsys):
    from psr.data.prepared import write_index

    root, _ = _prepared_ferplus(tmp_path)
    labels = np.repeat(np.arange(8), 10)
    write_index(root / "train.csv", [str(i) for i in range(80)], ["s"] * 80, labels, EXPRESSIONS)
    assert main(["priors", "--data", str(root), "--out", str(tmp_path / "p.json")]) == 2
    assert "pass the FER+ vote file" in capsys.readouterr().err


@needs_real
def test_prior_for_a_dataset_without_votes_is_the_reindexed_fer_plus_prior(tmp_path):
    from psr.data.prepared import write_index, write_manifest

    raf_names = class_names("rafdb", 7)
    root = tmp_path / "raf"
    root.mkdir()
    write_index(root / "train.csv", ["a"], ["s"], [0], raf_names)
    write_manifest(
        root,
        {
            "dataset": "rafdb",
            "protocol": {},
            "class_names": list(raf_names),
            "image_size": [4, 4],
            "channels": 3,
            "splits": {"train": {"count": 1, "per_class": {}}},
        },
    )
    names, matrix, source = prior_for_dataset(root, REAL_VOTES)
    assert names == raf_names and str(REAL_VOTES) in source
    np.testing.assert_array_equal(
        matrix, reindex(prior_from_vote_file(REAL_VOTES), EXPRESSIONS, raf_names)
    )


def _as_seven_class(root: Path, votes: np.ndarray, drop: str = "contempt") -> np.ndarray:
    """Rewrite the prepared train split as 7-class FER+: images labelled ``drop`` leave it."""
    import json

    from psr.data.prepared import write_index

    seven = class_names("ferplus", 7)
    keep = votes[:, :8].argmax(axis=1) != EXPRESSIONS.index(drop)
    labels8 = votes[keep, :8].argmax(axis=1)
    labels = [seven.index(EXPRESSIONS[y]) if EXPRESSIONS[y] in seven else 0 for y in labels8]
    ids = [str(i) for i in range(int(keep.sum()))]
    names = (*EXPRESSIONS, "unknown", "NF")
    write_index(root / "train.csv", ids, ["s"] * len(ids), labels, seven, votes[keep], names)
    manifest = json.loads((root / "manifest.json").read_text())
    (root / "manifest.json").write_text(json.dumps({**manifest, "class_names": list(seven)}))
    return votes[keep]


def test_prior_for_a_seven_class_fer_plus_split_without_contempt_images(tmp_path):
    """A 7-class FER+ train split has no contempt images (the protocol drops them): its prior
    is the 8x8 paper prior re-indexed, not an error about the missing contempt row."""
    root, votes = _prepared_ferplus(tmp_path)
    kept = _as_seven_class(root, votes)
    seven = class_names("ferplus", 7)
    names, matrix, _ = prior_for_dataset(root)
    assert names == seven
    expected = reindex(paper_prior(kept, missing="uniform"), EXPRESSIONS, seven)
    np.testing.assert_allclose(matrix, expected)


def test_prior_for_a_seven_class_split_still_needs_its_own_classes(tmp_path):
    root, votes = _prepared_ferplus(tmp_path)
    kept = _as_seven_class(root, votes)
    no_fear = kept[kept[:, :8].argmax(axis=1) != EXPRESSIONS.index("fear")]
    with pytest.raises(ValueError, match=r"no images labelled \['fear'\]"):
        paper_prior(no_fear, required=class_names("ferplus", 7))


def test_official_prior_is_the_authors_constant_reindexed_by_name():
    from psr.priors import OFFICIAL_PRIOR, official_prior

    matrix = official_prior()
    np.testing.assert_array_equal(matrix, np.array(OFFICIAL_PRIOR))
    assert matrix[0, 0] == 0.777334 and matrix[7, 5] == 0.059924  # neutral, contempt->disgust
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=3e-6)
    rafdb = class_names("rafdb")
    raf = official_prior(rafdb)  # 7 classes: contempt dropped, rows not renormalised
    i, j = rafdb.index("anger"), rafdb.index("surprise")
    assert raf[i, j] == OFFICIAL_PRIOR[EXPRESSIONS.index("anger")][EXPRESSIONS.index("surprise")]
    assert raf.sum(axis=1).min() < 0.97  # disgust's row lost contempt's 0.034


@needs_real
def test_official_prior_is_close_to_but_not_the_recomputed_one():
    from psr.priors import official_prior

    gap = np.abs(official_prior() - prior_from_vote_file(REAL_VOTES))
    assert 0.01 < gap.max() < 0.03, gap.max()
