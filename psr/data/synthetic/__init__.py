"""The embedded default dataset: procedurally rendered in-the-wild faces with FER+-like crowd votes.

``write_dataset(fmt, out_dir, cfg)`` writes the exact on-disk format of FER+ (with FER2013),
RAF-DB, AffectNet or an image folder; ``generate_samples`` yields pictures with their votes and
generation parameters; ``write_preview`` draws a labelled contact sheet.
"""

from psr.data.synthetic.config import FERPLUS_FULL_COUNTS, NuisanceConfig, SynthConfig
from psr.data.synthetic.crowd import VOTE_COLUMNS
from psr.data.synthetic.generator import (
    TRUE_LABEL,
    CropView,
    PhotoView,
    Sample,
    generate_samples,
    render_sample,
)
from psr.data.synthetic.preview import write_preview
from psr.data.synthetic.writers import FORMATS, GENERATION_FILE, write_dataset

__all__ = [
    "FERPLUS_FULL_COUNTS",
    "FORMATS",
    "GENERATION_FILE",
    "TRUE_LABEL",
    "VOTE_COLUMNS",
    "CropView",
    "NuisanceConfig",
    "PhotoView",
    "Sample",
    "SynthConfig",
    "generate_samples",
    "render_sample",
    "write_dataset",
    "write_preview",
]
