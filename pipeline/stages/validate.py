"""Stage ``validate``: all of ``params.yaml``, whenever the file changes.

Every stage validates the whole file when it runs, but DVC runs a stage only when the sections it
tracks change: a misspelled section (``evalaute:``) changes none of them, and ``dvc repro``
would say "up to date". This stage tracks the file itself, so the typo is an error on the next
run. Writes ``reports/validate/params.json``: the parameters as the pipeline reads them, with
every default filled in.
"""

from __future__ import annotations

import sys

from pipeline.params import Params
from pipeline.paths import report_dir
from pipeline.stages.common import stage_main

STAGE = "validate"
RESOLVED_FILE = "params.json"


def run(params: Params) -> None:
    from psr.fileio import write_json

    write_json(report_dir(STAGE) / RESOLVED_FILE, params.model_dump(mode="json", by_alias=True))


main = stage_main(STAGE, run)

if __name__ == "__main__":
    sys.exit(main())
