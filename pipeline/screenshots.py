"""Screenshots of the MLflow and Prefect pages of this workspace's pipeline run, for ``docs/``.

    make run && make screenshots     # writes docs/screenshots/*.png

It serves the workspace's own MLflow database (``mlflow.db``) with ``mlflow ui``, runs the
``psr-pipeline`` flow once against a throwaway Prefect server (every DVC stage is up to date, so
the flow run takes seconds and shows the real stages and report), and photographs the pages a
user opens, in headless Chromium through Playwright. Needs Debian's ``chromium`` and the
``docs`` extra (``pip install -e '.[docs]'``); the servers bind to 127.0.0.1 on free ports and
stop when it ends.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.paths import REGISTRY_FILE, report_dir

OUT = Path("docs/screenshots")
CHROMIUM = "/usr/bin/chromium"
VIEWPORT = {"width": 1500, "height": 900}
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(command: list[str], health: str, log: Path, env: dict[str, str]) -> Iterator[None]:
    """``command`` in its own process group until ``health`` answers; stopped on exit."""
    with open(log, "w") as out:
        process = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 240
        while True:
            if process.poll() is not None:
                raise SystemExit(f"{command[0]} exited; its log:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(health, timeout=5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{health} did not answer in 240 s; see {log}") from None
                time.sleep(1)
        yield
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def post(url: str, body: dict) -> list | dict:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def mlflow_pages(base: str) -> dict[str, str]:
    """Page name -> URL: the runs of the evaluated model's experiment, the train run's charts,
    the registered model with its aliases."""
    record = json.loads((report_dir("train") / "mlflow_run.json").read_text())
    experiment, run_id = record["experiment_id"], record["run_id"]
    registry = json.loads(REGISTRY_FILE.read_text())
    model = registry["name"]
    return {
        "mlflow-runs": f"{base}/#/experiments/{experiment}/runs",
        "mlflow-train-run": f"{base}/#/experiments/{experiment}/runs/{run_id}/model-metrics",
        "mlflow-registered-model": f"{base}/#/models/{model}",
    }


def prefect_pages(base: str, api: str) -> dict[str, str]:
    runs = post(f"{api}/flow_runs/filter", {"sort": "START_TIME_DESC", "limit": 1})
    if not runs:
        raise SystemExit("the Prefect server holds no flow run")
    return {
        "prefect-flow-run": f"{base}/runs/flow-run/{runs[0]['id']}",
        "prefect-artifacts": f"{base}/artifacts",
    }


def photograph(pages: dict[str, str], out: Path, settle_ms: int) -> list[Path]:
    from playwright.sync_api import sync_playwright

    written = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport=VIEWPORT)
        for name, url in pages.items():
            page.goto(url)
            page.wait_for_load_state("load")  # the UIs poll: never network-idle
            page.wait_for_timeout(settle_ms)
            close_side_panels(page)
            path = out / f"{name}.png"
            page.screenshot(path=path)
            written.append(path)
            print(f"{path}  <- {url}")
        browser.close()
    return written


def close_side_panels(page) -> None:
    """MLflow 3 opens an assistant panel and feature tips over the page: close them."""
    for label in ("Close", "Got it"):
        for button in page.get_by_role("button", name=label).all():
            if button.is_visible():
                button.click()
    page.wait_for_timeout(500)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--settle-ms", type=int, default=4000, help="wait after each page load")
    args = parser.parse_args(argv)
    if not Path("mlflow.db").is_file() or not REGISTRY_FILE.is_file():
        raise SystemExit("no finished pipeline run here: run `make run` first")
    if not Path(CHROMIUM).is_file():
        raise SystemExit(f"{CHROMIUM} is missing: apt-get install -y chromium")
    args.out.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    with tempfile.TemporaryDirectory() as tmp:
        mlflow_port, prefect_port = free_port(), free_port()
        mlflow_base = f"http://127.0.0.1:{mlflow_port}"
        prefect_base = f"http://127.0.0.1:{prefect_port}"
        api = f"{prefect_base}/api"
        prefect_env = {**env, "PREFECT_HOME": f"{tmp}/prefect", "PREFECT_API_URL": api}
        mlflow_ui = [str(BIN / "mlflow"), "ui", "--backend-store-uri"]
        mlflow_ui += [f"sqlite:///{Path('mlflow.db').resolve()}", "--host", "127.0.0.1"]
        prefect_server = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1"]
        with (
            server(
                [*mlflow_ui, "--port", str(mlflow_port)],
                f"{mlflow_base}/health",
                Path(tmp) / "mlflow.log",
                env,
            ),
            server(
                [*prefect_server, "--port", str(prefect_port)],
                f"{api}/health",
                Path(tmp) / "prefect.log",
                prefect_env,
            ),
        ):
            print("running the psr-pipeline flow once (every stage is up to date)...")
            flow = "from pipeline.flows import psr_pipeline; psr_pipeline()"
            subprocess.run([sys.executable, "-c", flow], env=prefect_env, check=True)
            pages = mlflow_pages(mlflow_base) | prefect_pages(prefect_base, api)
            photograph(pages, args.out, args.settle_ms)
    return 0


if __name__ == "__main__":
    sys.exit(main())
