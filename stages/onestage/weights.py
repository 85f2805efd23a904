"""Weights files of the one-stage estimator and the image preparation it was trained with."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hmrflow.pipeline.errors import CheckpointError
from hmrflow.stages.mesh.crop import normalise_uint8
from hmrflow.stages.onestage.model import OneStageEstimator, OneStageSpec

WEIGHTS_FILE = "onestage_tiny.safetensors"
FORMAT = "hmrflow.onestage.v1"


def bundled_weights_path() -> Path:
    """The weights shipped with the package (``stages/onestage/weights/``)."""
    return Path(str(resources.files("hmrflow.stages.onestage") / "weights" / WEIGHTS_FILE))


def save_onestage(model: OneStageEstimator, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write the weights as float16 safetensors with the spec (and ``extra``) in the header."""
    from hmrflow.pipeline.checkpoints import save_state_dict

    meta = {"spec": json.dumps(model.spec.to_dict()), "format": FORMAT}
    meta.update({k: json.dumps(v) for k, v in (extra or {}).items()})
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    return save_state_dict(state, path, metadata=meta)


def load_onestage(path: str | Path, device: torch.device | str = "cpu") -> OneStageEstimator:
    """Load :func:`save_onestage`'s file into an eval-mode float32 model on ``device``."""
    from hmrflow.pipeline.checkpoints import load_state_dict, read_header

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: one-stage weights not found; train them with 'hmrflow train onestage'")
    state = load_state_dict(p)
    header = read_header(p)
    if header.get("format") != FORMAT:
        raise CheckpointError(f"{p}: not an hmrflow one-stage weights file (format {header.get('format')!r})")
    try:
        spec = OneStageSpec.from_dict(json.loads(header["spec"]))
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{p}: unreadable one-stage spec in the header ({exc})") from None
    model = OneStageEstimator(spec)
    missing, unexpected = model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{p}: weights do not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.to(device).eval()


def letterbox_frames(images: np.ndarray, spec: OneStageSpec) -> tuple[torch.Tensor, float]:
    """(B, H, W, 3) uint8 frames -> (B, 3, 2h, 2w) normalised high-resolution input (frames
    resized to fit, antialiased, top-left, zero padding after normalising) and the scale
    frame pixels -> input pixels."""
    _, h, w, _ = images.shape
    th, tw = spec.high_size
    s = min(tw / w, th / h)
    nw, nh = max(1, min(tw, round(w * s))), max(1, min(th, round(h * s)))
    u = torch.from_numpy(np.ascontiguousarray(images))
    if (nh, nw) != (h, w):
        u = F.interpolate(u.permute(0, 3, 1, 2), size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
        u = u.permute(0, 2, 3, 1)
    x = normalise_uint8(u)
    return F.pad(x, (0, tw - nw, 0, th - nh)), s
