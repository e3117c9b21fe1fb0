import dataclasses
import json
import os

import numpy as np
import pytest
from pydantic import ValidationError

import psr.data.prepare as prepare_module
from psr.cli import main
from psr.data.labels import EXPRESSIONS
from psr.data.prepare import PrepareConfig, prepare
from psr.data.prepared import load_split, read_manifest


def _fer(tmp_path, raw, **kwargs):
    usages, votes, names = raw.small_fer_votes()
    _, _, images = raw.write_fer_pair(tmp_path / "raw", usages, votes, names)
    cfg = PrepareConfig(dataset="ferplus", source=tmp_path / "raw", progress=False, **kwargs)
    return cfg, images, votes


def test_ferplus_end_to_end(tmp_path, raw):
    cfg, images, votes = _fer(tmp_path, raw, workers=0, vote_mode="majority")
    root = prepare(cfg, tmp_path / "prepared")
    assert root == tmp_path / "prepared" / "ferplus"
    manifest = read_manifest(root)
    assert manifest["class_names"] == list(EXPRESSIONS)
    assert manifest["image_size"] == [48, 48] and manifest["channels"] == 1
    assert manifest["protocol"]["vote_mode"] == "majority"
    assert {s: v["count"] for s, v in manifest["splits"].items()} == {
        "train": 4,
        "valid": 2,
        "test": 3,
    }
    assert manifest["splits"]["test"]["per_class"]["disgust"] == 1
    assert set(manifest["checksums"]) == {
        f"{s}.{e}" for s in ("train", "valid", "test") for e in ("npy", "csv")
    }
    raw.verify_checksums(root)
    train = load_split(root, "train")
    rows = [0, 1, 4, 5]
    np.testing.assert_array_equal(train.images[..., 0], images[rows])
    assert [EXPRESSIONS[i] for i in train.labels] == ["neutral", "happiness", "sadness", "contempt"]
    np.testing.assert_array_equal(train.votes, np.array(votes, np.float32)[rows, :8])
    np.testing.assert_array_equal(train.soft_targets, np.eye(8, dtype=np.float32)[train.labels])
    assert train.sources.tolist() == [f"fer2013.csv:{r}" for r in rows]


def test_parallel_workers_give_identical_files(tmp_path, raw):
    cfg, _, _ = _fer(tmp_path, raw, workers=0)
    serial = prepare(cfg.model_copy(update={"name": "serial"}), tmp_path / "out")
    parallel = prepare(
        cfg.model_copy(update={"name": "parallel", "workers": 2, "chunk_size": 2}), tmp_path / "out"
    )
    a, b = read_manifest(serial)["checksums"], read_manifest(parallel)["checksums"]
    assert a == b


def test_resize_and_seven_classes(tmp_path, raw):
    cfg, _, _ = _fer(tmp_path, raw, workers=0, image_size=24, num_classes=7)
    root = prepare(cfg, tmp_path / "out")
    train = load_split(root, "train")
    assert train.images.shape[1:] == (24, 24, 1) and "contempt" not in train.class_names
    assert train.soft_targets.shape[1] == 7


def test_rafdb_affectnet_folder_prepare(tmp_path, raw):
    raw.write_rafdb(tmp_path / "raf", raw.rafdb_entries(5, 1))
    raf = prepare(
        PrepareConfig(dataset="rafdb", source=tmp_path / "raf", workers=0, progress=False),
        tmp_path / "p",
    )
    manifest = read_manifest(raf)
    assert manifest["image_size"] == [100, 100] and manifest["channels"] == 3
    assert {s: v["count"] for s, v in manifest["splits"].items()} == {
        "train": 28,
        "valid": 7,
        "test": 7,
    }
    assert load_split(raf, "valid").class_names == (
        "surprise",
        "fear",
        "disgust",
        "happiness",
        "sadness",
        "anger",
        "neutral",
    )

    rows = [(f"0/a{i}.jpg", (4, 4, 30, 30), i % 8) for i in range(40)]
    raw.write_affectnet(tmp_path / "an", rows, rows[:8])
    cfg = PrepareConfig(
        dataset="affectnet", source=tmp_path / "an", workers=0, image_size=32, progress=False
    )
    aff = load_split(prepare(cfg, tmp_path / "p"), "test")
    assert aff.images.shape == (8, 32, 32, 3) and aff.votes is None

    raw.write_affectnet_compact(
        tmp_path / "ac", {"train_set": list(range(8)) * 5, "val_set": [0, 1]}
    )
    cfg = PrepareConfig(
        dataset="affectnet_compact", source=tmp_path / "ac", workers=0, progress=False
    )
    assert read_manifest(prepare(cfg, tmp_path / "p"))["splits"]["test"]["count"] == 2

    raw.write_folder(tmp_path / "f", {"train": {"fear": 5, "anger": 5}})
    cfg = PrepareConfig(
        dataset="folder", source=tmp_path / "f", workers=0, image_size=16, progress=False
    )
    manifest = read_manifest(prepare(cfg, tmp_path / "p"))
    assert set(manifest["splits"]) == {"train", "valid"}


def test_corrupt_and_missing_images_are_skipped_and_reported(tmp_path, raw):
    raw.write_rafdb(tmp_path / "raf", raw.rafdb_entries(20, 2))  # 154 images
    aligned = tmp_path / "raf" / "Image" / "aligned"
    (aligned / "train_00003_aligned.jpg").write_bytes(b"not a jpeg")
    (aligned / "test_0002_aligned.jpg").unlink()
    half = aligned / "train_00005_aligned.jpg"  # truncated: decodes half grey if lenient
    half.write_bytes(half.read_bytes()[: half.stat().st_size // 2])
    cfg = PrepareConfig(
        dataset="rafdb", source=tmp_path / "raf", workers=0, progress=False, max_bad_fraction=0.02
    )
    root = prepare(cfg, tmp_path / "p")
    manifest = read_manifest(root)
    reasons = {s["source"].rsplit("/", 1)[1]: s["reason"] for s in manifest["skipped"]}
    assert set(reasons) == {
        "train_00003_aligned.jpg",
        "test_0002_aligned.jpg",
        "train_00005_aligned.jpg",
    }
    assert "not a readable image (truncated" in reasons["train_00003_aligned.jpg"]
    assert "not a readable image (truncated" in reasons["train_00005_aligned.jpg"]
    assert "image file is missing" in reasons["test_0002_aligned.jpg"]
    assert sum(v["count"] for v in manifest["splits"].values()) == 151
    test = load_split(root, "test")
    assert len(test) == 13 and "test_0002" not in test.ids.tolist()
    assert len(test.images) == 13


def test_too_many_bad_images_fail_and_name_them(tmp_path, raw):
    raw.write_rafdb(tmp_path / "raf", raw.rafdb_entries(2, 1))
    (tmp_path / "raf" / "Image" / "aligned" / "train_00001_aligned.jpg").unlink()
    cfg = PrepareConfig(dataset="rafdb", source=tmp_path / "raf", workers=0, progress=False)
    with pytest.raises(
        ValueError, match=r"(?s)1 of 21 images are unusable .*train_00001_aligned\.jpg"
    ):
        prepare(cfg, tmp_path / "p")
    assert not (tmp_path / "p" / "rafdb").exists()
    assert os.listdir(tmp_path / "p") == []


def test_reader_errors_surface_before_anything_is_written(tmp_path, raw):
    cfg, _, _ = _fer(tmp_path, raw, workers=0)
    pixels = tmp_path / "raw" / "fer2013.csv"
    pixels.write_text("\n".join(pixels.read_text().splitlines()[:-1]) + "\n")
    with pytest.raises(ValueError, match="has 11 rows but"):
        prepare(cfg, tmp_path / "p")
    assert not (tmp_path / "p").exists() or os.listdir(tmp_path / "p") == []


def test_interrupted_prepare_keeps_the_previous_dataset(tmp_path, raw, monkeypatch):
    cfg, _, _ = _fer(tmp_path, raw, workers=0, chunk_size=2)
    root = prepare(cfg, tmp_path / "p")
    before = read_manifest(root)["checksums"]
    calls = {"n": 0}
    real = prepare_module.load_images

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # Ctrl-C half way through decoding
        return real(*args, **kwargs)

    monkeypatch.setattr(prepare_module, "load_images", failing)
    with pytest.raises(KeyboardInterrupt):
        prepare(cfg.model_copy(update={"vote_mode": "majority"}), tmp_path / "p")
    assert calls["n"] == 3
    assert read_manifest(root)["checksums"] == before
    raw.verify_checksums(root)
    assert os.listdir(tmp_path / "p") == ["ferplus"]  # no half-written temporary folder


@pytest.mark.parametrize("workers", [0, 2])
def test_failing_worker_leaves_nothing(tmp_path, raw, monkeypatch, workers):
    cfg, _, _ = _fer(tmp_path, raw, workers=workers, chunk_size=2)
    collect = prepare_module._collect

    def pixels_gone(stream, progress):  # the pixel file vanishes after indexing
        records, skipped = collect(stream, progress)
        gone = str(tmp_path / "gone.csv")
        moved = {
            split: [
                dataclasses.replace(r, image=dataclasses.replace(r.image, path=gone)) for r in recs
            ]
            for split, recs in records.items()
        }
        return moved, skipped

    monkeypatch.setattr(prepare_module, "_collect", pixels_gone)
    with pytest.raises(FileNotFoundError, match=r"gone\.csv"):
        prepare(cfg, tmp_path / "p")
    assert os.listdir(tmp_path / "p") == []


def test_missing_source_says_where_to_get_it(tmp_path):
    cfg = PrepareConfig(dataset="ferplus", source=tmp_path, progress=False)
    with pytest.raises(FileNotFoundError, match="Kaggle"):
        prepare(cfg, tmp_path / "p")


def test_config_rejects_unknown_keys_and_bad_values(tmp_path):
    with pytest.raises(ValidationError):
        PrepareConfig(dataset="ferplus", source=tmp_path, colour=True)
    with pytest.raises(ValidationError):
        PrepareConfig(dataset="fer", source=tmp_path)
    with pytest.raises(ValidationError):
        PrepareConfig(dataset="ferplus", source=tmp_path, vote_mode="soft")
    defaults = PrepareConfig(dataset="rafdb", source=tmp_path)
    assert (defaults.n_folds, defaults.fold, defaults.max_bad_fraction) == (5, 0, 0.01)


def test_cli_prepare(tmp_path, raw, capsys):
    _fer(tmp_path, raw)
    argv = ["prepare", "--dataset", "ferplus", "--source", str(tmp_path / "raw")]
    argv += ["--out", str(tmp_path / "p"), "--name", "fp", "--workers", "0", "--no-progress"]
    assert main(argv) == 0
    assert "train 5, valid 2, test 3" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "p" / "fp" / "manifest.json").read_text())
    assert manifest["config"]["vote_mode"] == "crossentropy"
    assert main(["prepare", "--dataset", "rafdb", "--source", str(tmp_path / "none")]) == 2
    assert "list_patition_label.txt" in capsys.readouterr().err


def test_align_faces_detects_and_aligns_whole_photos(tmp_path):
    """A folder of whole photos (the generator's, faces tilted): ``align_faces`` stores each
    largest face aligned by its MTCNN landmarks; the photo without a face is skipped, named."""
    import cv2

    from psr.align import align_largest_face
    from psr.data.decode import read_image
    from psr.data.synthetic.config import NuisanceConfig, SynthConfig
    from psr.data.synthetic.generator import PhotoView, generate_samples

    clean = NuisanceConfig(
        rotation_deg=20, clutter=0, occlusion_rate=0, glasses_rate=0, blur_rate=0, noise_rate=0
    ).model_copy(update={"lighting": 0})
    cfg = SynthConfig(test=8, face_size=(80.0, 160.0), nuisance=clean)
    samples = generate_samples(cfg, "test", PhotoView(), allow_not_a_face=False)
    for i, sample in enumerate(samples):
        folder = tmp_path / "photos" / "train" / ("fear" if i % 2 else "anger")
        folder.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(folder / f"{i}.png"), sample.image)
    noise = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    assert cv2.imwrite(str(tmp_path / "photos" / "train" / "fear" / "noise.png"), noise)

    options = {"dataset": "folder", "source": tmp_path / "photos", "image_size": 64}
    options |= {"workers": 0, "progress": False, "valid_fraction": 0.25, "max_bad_fraction": 0.3}
    root = prepare(PrepareConfig(**options, align_faces=True), tmp_path / "p")
    manifest = read_manifest(root)
    assert manifest["config"]["align_faces"] is True
    skipped = {s["source"].rsplit("/", 1)[1]: s["reason"] for s in manifest["skipped"]}
    assert "no face found to align" in skipped["noise.png"]
    assert len(skipped) <= 2  # the noise, at most one missed cartoon face
    assert sum(v["count"] for v in manifest["splits"].values()) == 9 - len(skipped)
    train = load_split(root, "train")
    assert train.images.shape[1:] == (64, 64, 3)
    first = tmp_path / "photos" / train.ids[0]
    np.testing.assert_array_equal(train.images[0], align_largest_face(read_image(first), 64))

    plain = prepare(PrepareConfig(**options, name="plain"), tmp_path / "p")
    assert "align_faces" not in read_manifest(plain)["config"]  # off: manifests as before
    assert read_manifest(plain)["skipped"] == []


def test_cli_prepare_align_faces(tmp_path, monkeypatch):
    import cv2

    from psr.data.synthetic.frontal import frontal_face

    for name in ("fear", "anger"):
        folder = tmp_path / "photos" / "train" / name
        folder.mkdir(parents=True)
        for i in range(3):
            canvas = np.full((240, 320), 128, np.uint8)
            canvas[40 + 10 * i : 180 + 10 * i, 60:200] = frontal_face(140)
            assert cv2.imwrite(str(folder / f"{i}.png"), canvas)
    args = ["prepare", "--dataset", "folder", "--source", str(tmp_path / "photos")]
    args += ["--out", str(tmp_path / "p"), "--image-size", "48", "--valid-fraction", "0.34"]
    assert main([*args, "--align-faces", "--workers", "0", "--no-progress"]) == 0
    manifest = read_manifest(tmp_path / "p" / "folder")
    assert manifest["config"]["align_faces"] is True and manifest["skipped"] == []
    import psr.detect_mtcnn

    def missing():
        raise FileNotFoundError("no MTCNN files")

    monkeypatch.setattr(psr.detect_mtcnn, "mtcnn_model_dir", missing)
    assert main([*args, "--align-faces", "--name", "again"]) != 0  # fails before any work
    assert not (tmp_path / "p" / "again").exists()
