"""The PSR family: STN, super resolution, split VGG16-bn, shared head; factory and checkpoints.

    model = create_model("psr", num_classes=7, image_size=100)   # the paper's RAF-DB network
    logits = model(x)            # x [B, 3, S, S] normalised -> [B, n_branches, K]
    probs = fuse(logits)         # [B, K], mean of per-branch softmax
    groups = model.param_groups()  # [STN + SR], [high + head], [low] for discriminative lrs

Members (``list_models()``): ``psr`` (paper), ``psr_nostn``, ``psr_interp``, ``psr_espcn``,
``vgg16`` (single-scale baseline), ``small_cnn`` (plain CNN, sanity baseline); other pyramids
via ``multiples`` (e.g. ``[1, 2, 4, 1]``).
``width`` (ours, not the paper's) scales every VGG channel count for small CPU-sized variants.
"""

from psr.models.config import FAMILY, ModelConfig
from psr.models.factory import build_model, create_model, list_models
from psr.models.io import load_model, save_model
from psr.models.psr import FusedModel, PSRNet, fuse
from psr.models.sr import SR_KINDS, build_sr
from psr.models.weights import load_backbone_weights, load_sr_state_dict, load_sr_weights

__all__ = [
    "FAMILY",
    "SR_KINDS",
    "FusedModel",
    "ModelConfig",
    "PSRNet",
    "build_model",
    "build_sr",
    "create_model",
    "fuse",
    "list_models",
    "load_backbone_weights",
    "load_model",
    "load_sr_state_dict",
    "load_sr_weights",
    "save_model",
]
