"""The served models: photo requests (base64 images -> faces), the ONNX twin (same answers,
no torch), a real ``python -m pipeline.serve --runtime onnx`` process answering valid and bad
requests, and the Dockerfile ``mlflow models build-docker`` would build."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
import servers  # tests/pipeline/servers.py
import torch
from dvc_repo import BIN, clean_env  # tests/pipeline/dvc_repo.py
from mlflow.exceptions import MlflowException

from pipeline.onnx_pyfunc import TAG_ONNX
from pipeline.stages.register import (
    METADATA_DATASET,
    METADATA_SYNTHETIC,
    log_onnx_pyfunc,
    log_pyfunc,
    verify,
)
from psr import serving
from psr.cli import main
from psr.data.synthetic.frontal import frontal_face
from psr.inference import Predictor
from psr.models import create_model, save_model

REPO = Path(__file__).resolve().parents[2]
NAMES = ("neutral", "happiness", "surprise")
SIZE = 64
REGISTERED = "psr-serving-test"


def photo(face_size: int = 120, xy=(200, 100)) -> np.ndarray:
    """RGB photo 480 x 360 with one drawn frontal face (MTCNN and Haar find it)."""
    canvas = np.full((360, 480, 3), (110, 140, 170), np.uint8)
    x, y = xy
    canvas[y : y + face_size, x : x + face_size] = frontal_face(face_size)[:, :, None]
    return canvas


def encoded(image: np.ndarray, suffix: str = ".png") -> str:
    ok, data = cv2.imencode(suffix, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert ok
    return base64.b64encode(data.tobytes()).decode()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A tiny checkpoint logged as both pyfuncs and registered as version 1 (with its ONNX
    twin's tag), in a SQLite store of its own."""
    root = tmp_path_factory.mktemp("serving")
    torch.manual_seed(0)
    cfg = {"num_classes": 3, "image_size": SIZE, "width": 0.125, "sr_res_blocks": 1}
    cfg["sr_features"] = 8
    checkpoint = root / "best.pt"
    save_model(
        checkpoint,
        create_model("psr", **cfg),
        config={"name": "psr", **cfg},
        class_names=NAMES,
        image_size=SIZE,
    )
    uri = f"sqlite:///{root / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri() if mlflow.tracking.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(uri)
    example = np.random.default_rng(0).integers(0, 256, (4, 48, 48, 3), dtype=np.uint8)
    metadata = {METADATA_DATASET: "synthetic", METADATA_SYNTHETIC: True}
    experiment = mlflow.create_experiment("serving", artifact_location=str(root / "artifacts"))
    with mlflow.start_run(experiment_id=experiment):
        torch_info = log_pyfunc(checkpoint, example, metadata=metadata)
        onnx_info = log_onnx_pyfunc(checkpoint, example, root, metadata=metadata)
    mlflow.register_model(torch_info.model_uri, REGISTERED, tags={TAG_ONNX: onnx_info.model_uri})
    yield {
        "root": root,
        "checkpoint": checkpoint,
        "tracking_uri": uri,
        "torch": mlflow.pyfunc.load_model(torch_info.model_uri),
        "onnx": mlflow.pyfunc.load_model(onnx_info.model_uri),
        "onnx_uri": onnx_info.model_uri,
        "example": example,
        "experiment": experiment,
    }
    mlflow.set_tracking_uri(previous)


def test_a_photo_request_answers_its_faces(store):
    images = [photo(), np.full((200, 300, 3), 128, np.uint8), photo(90, (40, 60))]
    request = pd.DataFrame({"image": [encoded(images[0]), encoded(images[1], ".jpg")]})
    request = pd.concat([request, pd.DataFrame({"image": [encoded(images[2], ".jpg")]})])
    answers = store["torch"].predict(request)
    assert [len(a["faces"]) for a in answers] == [1, 0, 1]  # the blank photo has none
    # Served faces are psr predict's faces: the same detector, alignment and probabilities.
    predictor = Predictor.from_checkpoint(store["checkpoint"])
    for index in (0, 2):
        decoded = cv2.cvtColor(
            cv2.imdecode(
                np.frombuffer(base64.b64decode(request["image"].iloc[index]), np.uint8),
                cv2.IMREAD_COLOR,
            ),
            cv2.COLOR_BGR2RGB,
        )
        (record,) = predictor.predict_arrays([decoded])
        (face,) = answers[index]["faces"]
        assert face["box"] == list(record.box)
        assert face["landmarks"] is not None and len(face["landmarks"]) == 5  # MTCNN's
        got = [face["probabilities"][name] for name in NAMES]
        np.testing.assert_allclose(got, [record.probabilities[n] for n in NAMES], atol=1e-6)
        assert face["expression"] == record.expression
    # On the drawn face at (200, 100), 120 px (MTCNN's box runs from the brows to the chin).
    x, y, w, h = answers[0]["faces"][0]["box"]
    assert 200 <= x < 240 and 100 <= y < 140 and 60 < w <= 120 and 60 < h <= 120


def test_the_onnx_twin_answers_like_the_pytorch_model(store):
    crops = store["example"]
    np.testing.assert_allclose(
        store["onnx"].predict(crops).to_numpy(), store["torch"].predict(crops).to_numpy(), atol=1e-5
    )
    assert verify(store["onnx_uri"], store["checkpoint"], crops) < 1e-5
    request = pd.DataFrame({"image": [encoded(photo()), encoded(photo(100, (20, 30)))]})
    from_onnx, from_torch = store["onnx"].predict(request), store["torch"].predict(request)
    for a, b in zip(from_onnx, from_torch, strict=True):
        assert [f["box"] for f in a["faces"]] == [f["box"] for f in b["faces"]]
        for fa, fb in zip(a["faces"], b["faces"], strict=True):
            assert fa["expression"] == fb["expression"]
            for name in NAMES:
                assert fa["probabilities"][name] == pytest.approx(
                    fb["probabilities"][name], abs=1e-5
                )


BLOCK_TORCH = """
import importlib.abc, json, sys
class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith(("torch.", "torchvision")):
            raise ImportError(f"torch is blocked: {name}")
sys.meta_path.insert(0, NoTorch())
import base64, mlflow, numpy as np, pandas as pd
mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pyfunc.load_model(sys.argv[2])
crops = np.load(sys.argv[3])
photos = pd.DataFrame({"image": [open(sys.argv[4]).read()]})
print(json.dumps({
    "crops": model.predict(crops).to_numpy().tolist(),
    "photos": model.predict(photos),
    "torch_loaded": any(m == "torch" or m.startswith("torch.") for m in sys.modules),
}))
"""


def test_the_onnx_twin_loads_and_predicts_without_torch(store, tmp_path):
    np.save(tmp_path / "crops.npy", store["example"])
    (tmp_path / "photo.b64").write_text(encoded(photo()))
    args = [store["tracking_uri"], store["onnx_uri"], tmp_path / "crops.npy"]
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH, *map(str, args), str(tmp_path / "photo.b64")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert not answer["torch_loaded"]
    expected = store["torch"].predict(store["example"]).to_numpy()
    np.testing.assert_allclose(answer["crops"], expected, atol=1e-5)
    assert len(answer["photos"][0]["faces"]) == 1


def _bad_requests() -> dict[str, tuple[object, str]]:
    """Name -> (photo request, what its error must say)."""
    png = encoded(photo())
    return {
        "not base64": (
            pd.DataFrame({"image": [png, "not base64!"]}),
            "row 1: 'image' is not valid base64",
        ),
        "not an image": (
            pd.DataFrame({"image": [base64.b64encode(b"hello world").decode()]}),
            "row 0: 'image' decodes to 11 bytes that are not an image",
        ),
        "truncated": (
            pd.DataFrame({"image": [base64.b64encode(base64.b64decode(png)[:300]).decode()]}),
            "row 0: 'image' is not a readable image",
        ),
        "missing column": (pd.DataFrame({"picture": [png]}), "no 'image' column (got ['picture'])"),
        "a number": (pd.DataFrame({"image": [png, 7]}), "row 1: 'image' is a int"),
    }


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_bad_photo_requests_say_what_is_wrong(store, runtime, monkeypatch):
    model = store[runtime]
    for name, (request, message) in _bad_requests().items():
        with pytest.raises(MlflowException) as caught:
            model.predict(request)
        assert message in caught.value.message, name
        assert caught.value.get_http_status_code() == 400, name
    monkeypatch.setattr(serving, "MAX_PHOTO_PIXELS", 2 * 480 * 360 - 1)
    too_many = pd.DataFrame({"image": [encoded(photo())] * 2})
    with pytest.raises(MlflowException, match=r"2 photos of 0\.346 megapixels in all exceed"):
        model.predict(too_many)


def test_served_photo_requests_valid_and_bad_keep_serving(store, tmp_path):
    """``python -m pipeline.serve --runtime onnx`` on a registered version: photos in, faces
    out; every bad payload a 400 (or 413) that says why, and the next request still served."""
    port = servers.free_port()
    command = [str(BIN / "python"), "-m", "pipeline.serve", "--port", str(port)]
    command += ["--model-uri", f"models:/{REGISTERED}/1", "--runtime", "onnx", "--max-body-mb", "1"]
    log = tmp_path / "serve.log"
    env = clean_env(MLFLOW_TRACKING_URI=store["tracking_uri"])
    url = f"http://127.0.0.1:{port}/invocations"
    with open(log, "w") as out:
        server = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 240
        while True:
            assert server.poll() is None, log.read_text()[-4000:]
            assert time.monotonic() < deadline, log.read_text()[-4000:]
            try:
                if requests.get(f"http://127.0.0.1:{port}/ping", timeout=5).ok:
                    break
            except requests.RequestException:
                time.sleep(1)
        records = [{"image": encoded(photo())}, {"image": encoded(photo(90, (40, 60)), ".jpg")}]
        valid = requests.post(url, json={"dataframe_records": records}, timeout=120)
        bad = {
            name: requests.post(
                url, json={"dataframe_records": request.to_dict(orient="records")}, timeout=120
            )
            for name, (request, _) in _bad_requests().items()
        }
        huge = requests.post(
            url, json={"dataframe_records": [{"image": "A" * (2 * 2**20)}]}, timeout=120
        )
        again = requests.post(url, json={"dataframe_records": records}, timeout=120)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    assert valid.status_code == 200, valid.text[:2000]
    answers = valid.json()["predictions"]
    assert [len(a["faces"]) for a in answers] == [1, 1]
    face = answers[0]["faces"][0]
    assert set(face) == {"box", "landmarks", "expression", "probabilities"}
    assert sum(face["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    expected = store["torch"].predict(pd.DataFrame(records))
    assert [a["faces"][0]["expression"] for a in answers] == [
        e["faces"][0]["expression"] for e in expected
    ]
    for name, (_, message) in _bad_requests().items():
        assert bad[name].status_code == 400, (name, bad[name].text[:2000])
        assert message in bad[name].json()["message"], (name, bad[name].text[:2000])
        assert "Traceback" not in bad[name].text, name
    assert huge.status_code == 413 and "request body over 1 MB" in huge.json()["message"]
    assert again.status_code == 200 and again.json() == valid.json()


def test_generate_dockerfile_for_the_onnx_twin(store, tmp_path):
    """What ``mlflow models build-docker -m models:/psr-fer@champion -n psr-fer`` builds
    (docker itself is not needed to write it)."""
    out = tmp_path / "docker"
    result = subprocess.run(
        [str(BIN / "mlflow"), "models", "generate-dockerfile", "-m", store["onnx_uri"], "-d", out],
        capture_output=True,
        text=True,
        timeout=300,
        env=clean_env(MLFLOW_TRACKING_URI=store["tracking_uri"]),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    dockerfile = (out / "Dockerfile").read_text()
    assert "COPY model_dir /opt/ml/model" in dockerfile
    assert "C._serve(" in dockerfile  # MLflow's scoring server is the entry point
    assert (out / "model_dir/onnx_pyfunc.py").is_file()  # the model's code, and no torch:
    assert "model_code_path: " in (out / "model_dir/MLmodel").read_text()
    requirements = (out / "model_dir/requirements.txt").read_text().split()
    assert any(r.startswith("onnxruntime==") for r in requirements)
    assert not any(r.startswith(("torch", "torchvision")) for r in requirements)


def test_psr_predict_says_when_the_model_was_trained_on_synthetic_faces(store, tmp_path, capsys):
    image = tmp_path / "person.png"
    cv2.imwrite(str(image), cv2.cvtColor(photo(), cv2.COLOR_RGB2BGR))
    command = ["predict", str(image), "--tracking-uri", store["tracking_uri"], "--model-uri"]
    assert main([*command, f"models:/{REGISTERED}/1"]) == 0
    out, err = capsys.readouterr()
    assert "1 face(s)" in out
    assert "was trained on the project's synthetic cartoon faces (dataset 'synthetic'" in err
    assert "configs/ferplus.yaml" in err and "configs/rafdb.yaml" in err
    with mlflow.start_run(experiment_id=store["experiment"]):
        real = log_pyfunc(
            store["checkpoint"],
            store["example"],
            metadata={METADATA_DATASET: "rafdb", METADATA_SYNTHETIC: False},
        )
    assert main([*command, real.model_uri]) == 0
    out, err = capsys.readouterr()
    assert "1 face(s)" in out and "synthetic" not in err
