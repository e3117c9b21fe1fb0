"""The readers take the synthetic generator's files unchanged, in every format."""

from collections import Counter

import numpy as np
import pandas as pd
import pytest

from psr.data.labels import EXPRESSIONS
from psr.data.prepare import PrepareConfig, prepare
from psr.data.prepared import load_split, read_manifest
from psr.data.records import Record, Skipped

writers = pytest.importorskip("psr.data.synthetic.writers")
config = pytest.importorskip("psr.data.synthetic.config")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    cfg = config.SynthConfig(train=48, valid=16, test=16, affectnet_bad_rows=2)
    return {
        fmt: writers.write_dataset(fmt, root / fmt, cfg, progress=False) for fmt in writers.FORMATS
    }


def _prepare(tmp_path, dataset, source, **kwargs):
    cfg = PrepareConfig(dataset=dataset, source=source, workers=0, progress=False, **kwargs)
    return prepare(cfg, tmp_path)


def test_ferplus(tmp_path, synth):
    root = _prepare(tmp_path, "ferplus", synth["ferplus"], vote_mode="majority")
    votes = pd.read_csv(synth["ferplus"] / "fer2013new.csv")
    train = load_split(root, "train")
    rows = [int(i[3:]) for i in train.ids]
    np.testing.assert_array_equal(train.votes, votes.iloc[rows, 2:10].to_numpy(np.float32))
    majority = votes.iloc[rows, 2:12].to_numpy().argmax(axis=1)
    assert np.mean(train.labels == majority) == 1.0  # a majority label is the top vote
    assert read_manifest(root)["channels"] == 1


def test_ferplus_icml_variant(tmp_path):
    cfg = config.SynthConfig(train=16, valid=8, test=8, fer2013_file="icml_face_data.csv")
    source = writers.write_dataset("ferplus", tmp_path / "raw", cfg, progress=False)
    assert (source / "icml_face_data.csv").is_file()
    root = _prepare(tmp_path / "p", "ferplus", source)
    assert sum(v["count"] for v in read_manifest(root)["splits"].values()) > 0


def test_rafdb(tmp_path, synth):
    root = _prepare(tmp_path, "rafdb", synth["rafdb"])
    manifest = read_manifest(root)
    assert manifest["image_size"] == [100, 100]
    counts = {s: v["count"] for s, v in manifest["splits"].items()}
    assert counts["train"] + counts["valid"] == 64 and 12 <= counts["valid"] <= 14  # one fold of 5
    assert counts["test"] == 16
    original = _prepare(
        tmp_path, "rafdb", synth["rafdb"], name="raf_original", rafdb_images="original"
    )
    assert load_split(original, "test").images.shape == (16, 100, 100, 3)


def test_affectnet_reports_the_bad_boxes(tmp_path, synth):
    from psr.data.affectnet import open_affectnet

    items = list(open_affectnet(synth["affectnet"]).records)
    skipped = [i for i in items if isinstance(i, Skipped)]
    assert len(skipped) == 2 and all("non-positive size" in s.reason for s in skipped)
    assert all("training.csv line" in s.reason for s in skipped)
    records = [i for i in items if isinstance(i, Record)]
    assert Counter(r.split for r in records)["test"] <= 16
    root = _prepare(tmp_path, "affectnet", synth["affectnet"], max_bad_fraction=0.1)
    assert len(read_manifest(root)["skipped"]) == 2


def test_folder(tmp_path, synth):
    root = _prepare(tmp_path, "folder", synth["folder"], num_classes=8)
    manifest = read_manifest(root)
    assert manifest["class_names"] == list(EXPRESSIONS)
    assert {s: v["count"] for s, v in manifest["splits"].items()} == {
        "train": 48,
        "valid": 16,
        "test": 16,
    }


@pytest.mark.parametrize("fmt", ["ferplus", "rafdb", "affectnet", "folder"])
def test_generation_csv_joins_the_prepared_ids_on_its_id_column(tmp_path, synth, fmt):
    """generation.csv's ``id`` column holds exactly each format's prepared id: the breakdown by
    generation parameter joins on it, no guessing."""
    from psr.evaluate import load_sidecar, match_sidecar

    root = _prepare(tmp_path, fmt, synth[fmt], max_bad_fraction=0.1)  # AffectNet's bad rows
    sidecar = load_sidecar(synth[fmt] / writers.GENERATION_FILE)
    for split in ("train", "valid", "test"):
        prepared = load_split(root, split)
        rows = match_sidecar(prepared.ids, sidecar)
        assert rows["id"].tolist() == prepared.ids.tolist()
        if split == "test":  # every format keeps the generator's test pictures as its test split
            assert set(rows["split"]) == {"test"}
    if fmt == "affectnet":  # the generator's AffectNet label is one annotator's vote: no check
        return
    train = load_split(root, "train")
    truth = match_sidecar(train.ids, sidecar)["true_label"]
    predicted = np.array(train.class_names)[train.labels]
    assert np.mean(truth.to_numpy() == predicted) > 0.5  # crowd labels mostly agree with truth
