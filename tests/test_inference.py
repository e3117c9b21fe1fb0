import json

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from psr.cli import main
from psr.data.synthetic.frontal import frontal_face
from psr.data.transforms import eval_transform
from psr.detect import HaarDetector
from psr.detect_mtcnn import MTCNNDetector
from psr.inference import Predictor, annotate, find_checkpoint, iter_frames, read_image
from psr.models import create_model, fuse, save_model

NAMES = ("neutral", "happiness", "surprise")
SIZE = 64


def photo(face_size: int = 120, hw: tuple[int, int] = (360, 480), xy=(200, 100)) -> np.ndarray:
    """RGB uint8 photo with one drawn face at ``xy``."""
    canvas = np.full((*hw, 3), (110, 140, 170), np.uint8)
    x, y = xy
    canvas[y : y + face_size, x : x + face_size] = frontal_face(face_size)[:, :, None]
    return canvas


def noise(hw=(200, 300), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*hw, 3), dtype=np.uint8)


def write_rgb(path, image) -> None:
    assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    cfg = {"num_classes": 3, "image_size": SIZE, "width": 0.125, "sr_res_blocks": 1}
    cfg["sr_features"] = 8
    model = create_model("psr", **cfg)
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    save_model(path, model, config={"name": "psr", **cfg}, class_names=NAMES, image_size=SIZE)
    return path


@pytest.fixture(scope="module")
def crops_predictor(checkpoint):
    return Predictor.from_checkpoint(checkpoint, detect=False)


def test_predict_arrays_matches_the_model(crops_predictor):
    images = [noise((40, 50), seed=1), noise((64, 64), seed=2)[:, :, 0], noise((30, 30), seed=3)]
    records = crops_predictor.predict_arrays(images)
    assert [r.source for r in records] == ["array[0]", "array[1]", "array[2]"]
    assert [r.box for r in records] == [(0, 0, 50, 40), (0, 0, 64, 64), (0, 0, 30, 30)]
    transform = eval_transform(SIZE)
    batch = torch.stack([transform(images[0]), transform(images[1]), transform(images[2])])
    with torch.inference_mode():
        expected = fuse(crops_predictor.model(batch)).numpy()
    for record, probs in zip(records, expected, strict=True):
        got = np.array([record.probabilities[n] for n in NAMES])
        np.testing.assert_allclose(got, probs, atol=1e-5)
        assert record.expression == NAMES[probs.argmax()]
        assert record.probability == pytest.approx(probs.max(), abs=1e-5)
        assert record.status == "ok"


def test_the_predictor_threads_reach_its_detector(checkpoint):
    predictor = Predictor.from_checkpoint(checkpoint, detector="mtcnn", threads=1)
    assert predictor.detector.pnet.get_session_options().intra_op_num_threads == 1


def test_predict_arrays_accepts_rgba_and_reports_bad_arrays(crops_predictor):
    rgb = noise((48, 48))
    rgba = np.dstack([rgb, np.full((48, 48), 255, np.uint8)])
    records = crops_predictor.predict_arrays([rgba, np.zeros((8, 8), np.float32), rgb])
    assert [r.status for r in records] == ["ok", "error", "ok"]
    assert "array[1]: expected uint8" in records[1].message
    assert records[0].probabilities == pytest.approx(records[2].probabilities)


def test_batches_do_not_change_results(checkpoint):
    images = [noise((32, 32), seed=s) for s in range(5)]
    one = Predictor.from_checkpoint(checkpoint, detect=False, batch_size=2).predict_arrays(images)
    all_ = Predictor.from_checkpoint(checkpoint, detect=False, batch_size=32).predict_arrays(images)
    for a, b in zip(one, all_, strict=True):
        assert a.probabilities == pytest.approx(b.probabilities, abs=1e-5)


def test_grayscale_checkpoint_converts_crops(tmp_path, crops_predictor):
    path = tmp_path / "gray.pt"
    model = crops_predictor.model
    config = model.config.model_dump()
    save_model(
        path, model, config=config, class_names=NAMES, image_size=SIZE, extra={"channels": 1}
    )
    gray = Predictor.from_checkpoint(path, detect=False)
    assert gray.grayscale and not crops_predictor.grayscale
    color = noise((40, 40))
    as_gray = np.repeat(cv2.cvtColor(color, cv2.COLOR_RGB2GRAY)[:, :, None], 3, axis=2)
    a, b = gray.predict_arrays([color, as_gray])
    assert a.probabilities == pytest.approx(b.probabilities, abs=1e-6)


@pytest.fixture
def folder(tmp_path):
    """A folder with a face photo, a no-face image, a corrupt file, a text file, an RGBA PNG,
    a 16-bit grayscale PNG and a video, some in a subfolder."""
    root = tmp_path / "inputs"
    (root / "sub").mkdir(parents=True)
    write_rgb(root / "face.jpg", photo())
    write_rgb(root / "empty.png", noise())
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden.png").write_bytes(b"skipped")
    face = photo(hw=(300, 300), xy=(90, 90))
    rgba = np.dstack([face, np.full(face.shape[:2], 255, np.uint8)])
    assert cv2.imwrite(str(root / "sub" / "rgba.png"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    gray16 = face[:, :, 0].astype(np.uint16) * 257
    assert cv2.imwrite(str(root / "sub" / "gray16.png"), gray16)
    writer = cv2.VideoWriter(
        str(root / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (480, 360)
    )
    assert writer.isOpened()
    for i in range(7):
        frame = photo() if i % 2 == 0 else noise((360, 480), seed=i)
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return root


def test_read_image_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"bad\.png: not a readable image"):
        read_image(bad)
    empty = tmp_path / "empty.jpg"
    empty.touch()
    with pytest.raises(ValueError, match="empty file"):
        read_image(empty)
    with pytest.raises(ValueError, match="cannot read the file"):
        read_image(tmp_path)  # a directory is not an image


def test_iter_frames_walks_folders_and_samples_videos(folder):
    items = list(iter_frames([folder, folder / "missing.jpg"], every=3))
    sources = [(str(i.source).replace(str(folder), ""), getattr(i, "index", None)) for i in items]
    assert sources == [
        ("/broken.jpg", None),
        ("/clip.avi", 0),
        ("/clip.avi", 3),
        ("/clip.avi", 6),
        ("/empty.png", None),
        ("/face.jpg", None),
        ("/notes.txt", None),
        ("/sub/gray16.png", None),
        ("/sub/rgba.png", None),
        ("/missing.jpg", None),
    ]
    errors = {
        str(i.source).replace(str(folder), ""): i.message for i in items if hasattr(i, "status")
    }
    assert set(errors) == {"/broken.jpg", "/notes.txt", "/missing.jpg"}
    assert "no such file" in errors["/missing.jpg"]
    assert "not a readable image" in errors["/notes.txt"]


def test_predict_paths_with_detection(folder, checkpoint):
    # Haar: its boxes cover the whole drawn face, which the box check below measures.
    predictor = Predictor.from_checkpoint(checkpoint, detector="haar", batch_size=2)
    records = predictor.predict_paths([folder], every=2)
    by_file = {}
    for r in records:
        by_file.setdefault(r.source.replace(str(folder) + "/", ""), []).append(r)
    assert [r.status for r in by_file["broken.jpg"]] == ["error"]
    assert [r.status for r in by_file["empty.png"]] == ["no_face"]
    assert "no face found" in by_file["empty.png"][0].message
    face = by_file["face.jpg"]
    assert [r.status for r in face] == ["ok"]
    x, y, w, _ = face[0].box
    assert abs(x - 200) < 15 and abs(y - 100) < 15 and abs(w - 120) < 20
    assert sum(face[0].probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert [r.status for r in by_file["sub/rgba.png"]] == ["ok"]
    assert [r.status for r in by_file["sub/gray16.png"]] == ["ok"]
    video = [(r.frame, r.status) for r in by_file["clip.avi"]]
    assert video == [(0, "ok"), (2, "ok"), (4, "ok"), (6, "ok")]  # even frames show the face


def test_video_errors(tmp_path, crops_predictor):
    fake = tmp_path / "fake.mp4"
    fake.write_bytes(b"no video here")
    records = crops_predictor.predict_paths([fake])
    assert [r.status for r in records] == ["error"]
    assert "fake.mp4" in records[0].message
    with pytest.raises(ValueError, match="every"):
        list(iter_frames([fake], every=0))


def test_annotate_draws_inside_the_box(crops_predictor):
    image = photo()
    records = crops_predictor.predict_arrays([image])
    rec = records[0].__class__(**{**records[0].__dict__, "box": (200, 100, 120, 120)})
    drawn = annotate(image, [rec])
    assert drawn.shape == image.shape and not np.array_equal(drawn, image)
    assert np.array_equal(drawn[:50, :50], image[:50, :50])  # far from the box: untouched
    assert np.array_equal(image, photo())  # the input is not modified


def test_find_checkpoint(tmp_path):
    (tmp_path / "artifacts").mkdir()
    with pytest.raises(ValueError, match="found none"):
        find_checkpoint(tmp_path, "models:/x")
    (tmp_path / "artifacts" / "best.pt").write_bytes(b"")
    assert find_checkpoint(tmp_path, "u") == tmp_path / "artifacts" / "best.pt"
    (tmp_path / "artifacts" / "other.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="exactly one"):
        find_checkpoint(tmp_path, "u")


def test_from_uri_on_a_model_directory(tmp_path, checkpoint):
    model_dir = tmp_path / "pyfunc"
    (model_dir / "artifacts").mkdir(parents=True)
    (model_dir / "artifacts" / "psr.pt").write_bytes(checkpoint.read_bytes())
    (model_dir / "MLmodel").write_text("flavors: {}\n")
    predictor = Predictor.from_uri(model_dir.as_uri(), detect=False)
    assert predictor.class_names == NAMES and predictor.image_size == SIZE


@pytest.mark.slow
def test_from_uri_with_a_registered_mlflow_model(tmp_path, checkpoint, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)

    class Model(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input):
            return model_input

    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="model", python_model=Model(), artifacts={"checkpoint": str(checkpoint)}
        )
    version = mlflow.register_model(info.model_uri, "psr-fer-test")
    mlflow.MlflowClient().set_registered_model_alias("psr-fer-test", "champion", version.version)
    predictor = Predictor.from_uri("models:/psr-fer-test@champion", detect=False)
    assert predictor.class_names == NAMES
    assert predictor.predict_arrays([noise((40, 40))])[0].status == "ok"

    elsewhere = tmp_path / "elsewhere"  # another directory, MLflow not configured
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    _unset_tracking_uri(monkeypatch)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    predictor = Predictor.from_uri("models:/psr-fer-test/1", tracking_uri=uri, detect=False)
    assert predictor.class_names == NAMES
    with pytest.raises(ValueError, match=r"psr-fer-nope.*looked up in sqlite:///"):
        Predictor.from_uri("models:/psr-fer-nope@champion", tracking_uri=uri)
    assert list(elsewhere.iterdir()) == []


def _unset_tracking_uri(monkeypatch):
    """No MLFLOW_TRACKING_URI and no ``mlflow.set_tracking_uri`` (as in a fresh process)."""
    from mlflow.tracking._tracking_service import utils

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.setattr(utils, "_tracking_uri", None)


def test_a_registry_read_never_creates_a_database(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from psr.inference import tracking_uri_for

    monkeypatch.chdir(tmp_path)
    _unset_tracking_uri(monkeypatch)
    with pytest.raises(FileNotFoundError, match="set MLFLOW_TRACKING_URI") as err:
        Predictor.from_uri("models:/psr-fer@champion")
    assert f"{tmp_path} has no mlflow.db" in str(err.value)
    missing = tmp_path / "repo" / "mlflow.db"
    with pytest.raises(FileNotFoundError, match=f"tracking database {missing} .* does not exist"):
        Predictor.from_uri("models:/psr-fer@champion", tracking_uri=f"sqlite:///{missing}")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///relative.db")
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'relative.db'}"):
        tracking_uri_for("runs:/abc/model")
    assert list(tmp_path.iterdir()) == []  # nothing created
    assert tracking_uri_for((tmp_path / "model").as_uri()) is None  # a location: no store
    assert tracking_uri_for("models:/m/1", "http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def test_missing_checkpoint_and_detector_files(tmp_path, checkpoint):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        Predictor.from_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(FileNotFoundError, match="YuNet model file not found"):
        Predictor.from_checkpoint(checkpoint, detector="yunet", yunet_model=tmp_path / "y.onnx")
    assert isinstance(Predictor.from_checkpoint(checkpoint).detector, MTCNNDetector)
    assert isinstance(Predictor.from_checkpoint(checkpoint, detector="haar").detector, HaarDetector)


@pytest.mark.slow
def test_cli_predict_end_to_end(folder, checkpoint, tmp_path, capsys):
    out_csv, out_json, ann = tmp_path / "out.csv", tmp_path / "out.json", tmp_path / "ann"
    single = tmp_path / "single.jpg"
    write_rgb(single, photo())
    args = ["predict", str(folder), str(single), "--checkpoint", str(checkpoint)]
    args += ["--csv", str(out_csv), "--json", str(out_json), "--annotate", str(ann), "--every", "3"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "broken.jpg" in printed and "not a readable image" in printed
    assert "empty.png" in printed and "no face found" in printed
    table = pd.read_csv(out_csv)
    assert {"source", "frame", "x", "y", "w", "h", "expression", "probability"} <= set(table)
    assert [f"p_{n}" for n in NAMES] == [c for c in table.columns if c.startswith("p_")]
    status = dict(
        zip(table["source"].map(lambda s: s.split("/")[-1]), table["status"], strict=False)
    )
    assert status["face.jpg"] == "ok" and status["empty.png"] == "no_face"
    assert status["broken.jpg"] == "error" and status["notes.txt"] == "error"
    records = json.loads(out_json.read_text())
    assert len(records) == len(table)
    assert (ann / "inputs" / "face.jpg").is_file() and (ann / "single.jpg").is_file()
    assert (ann / "inputs" / "sub" / "rgba.png").is_file()
    assert (ann / "inputs" / "clip_f000003.jpg").is_file()
    assert not (ann / "inputs" / "broken.jpg").exists()
    drawn = cv2.imread(str(ann / "single.jpg"))
    assert drawn.shape == (360, 480, 3)


def test_cli_predict_no_detect_and_errors(folder, checkpoint, tmp_path, capsys):
    assert (
        main(["predict", str(folder / "empty.png"), "--checkpoint", str(checkpoint), "--no-detect"])
        == 0
    )
    assert "empty.png" in capsys.readouterr().out
    args = ["predict", str(folder / "broken.jpg"), "--checkpoint", str(checkpoint)]
    assert main(args) == 1  # nothing could be read
    args = ["predict", str(folder), "--checkpoint", str(checkpoint), "--detector", "yunet"]
    assert main(args) == 2
    assert "yunet detector needs its ONNX model file" in capsys.readouterr().err
    empty = tmp_path / "nothing"
    empty.mkdir()
    assert main(["predict", str(empty), "--checkpoint", str(checkpoint)]) == 2
    assert "no files found" in capsys.readouterr().err
    crops = ["predict", str(folder), "--checkpoint", str(checkpoint), "--no-detect"]
    assert main([*crops, "--runtime", "onnx-int8"]) == 2
    assert "--calibrate-on goes with --runtime onnx-int8, which needs it" in (
        capsys.readouterr().err
    )
    assert main([*crops, "--calibration-images", "8"]) == 2
    assert "--calibration-images goes with --runtime onnx-int8 and --calibrate-on" in (
        capsys.readouterr().err
    )


def test_huge_photo_box_is_in_original_pixels(checkpoint):
    big = np.full((4000, 6000, 3), 120, np.uint8)
    big[1500:2400, 3000:3900] = cv2.resize(frontal_face(100), (900, 900))[:, :, None]
    predictor = Predictor.from_checkpoint(checkpoint, detector="haar", max_side=800)
    (record,) = predictor.predict_arrays([big])
    x, y, w, h = record.box
    assert record.status == "ok"
    assert abs(x - 3000) < 60 and abs(y - 1500) < 60 and abs(w - 900) < 120 and abs(h - 900) < 120


def test_faces_with_landmarks_are_aligned_others_cropped(checkpoint):
    from psr.align import align_face
    from psr.detect import crop_face
    from psr.inference import Frame

    frame = Frame("photo", None, photo())
    boxes, crops = Predictor.from_checkpoint(checkpoint)._faces(frame)  # MTCNN, align on
    assert len(boxes) == 1 and boxes[0].landmarks is not None
    assert crops[0].shape == (SIZE, SIZE, 3)
    np.testing.assert_array_equal(crops[0], align_face(frame.image, boxes[0].landmarks, SIZE))
    _, crops = Predictor.from_checkpoint(checkpoint, align=False)._faces(frame)
    np.testing.assert_array_equal(crops[0], crop_face(frame.image, boxes[0], margin=0.2))
    haar_boxes, crops = Predictor.from_checkpoint(checkpoint, detector="haar")._faces(frame)
    assert haar_boxes[0].landmarks is None  # no landmarks: the margin crop, aligned or not
    np.testing.assert_array_equal(crops[0], crop_face(frame.image, haar_boxes[0], margin=0.2))


def test_cli_predict_no_align(folder, checkpoint, tmp_path):
    out = tmp_path / "out.json"
    face = folder / "face.jpg"
    args = ["predict", str(face), "--checkpoint", str(checkpoint), "--json", str(out)]
    assert main([*args, "--no-align"]) == 0
    plain = json.loads(out.read_text())
    assert main(args) == 0
    aligned = json.loads(out.read_text())
    assert plain[0]["box"] == aligned[0]["box"]  # same MTCNN box, different crops
    assert plain[0]["probabilities"] != aligned[0]["probabilities"]
