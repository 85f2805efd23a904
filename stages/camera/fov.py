"""Field of view and gravity from the frames: a small convolutional network and its clip-level aggregation.

The network sees a whole frame resampled to :data:`INPUT_HW` (any aspect ratio is squeezed
into it; the true width / height is a second input) with two normalised coordinate
channels, so it can relate where things are in the image to how they are foreshortened
(the ground's texture, the horizon, people standing on the ground).  It predicts
``log(fy / H)`` (the focal length in units of the image height, ``0.5 / tan(vfov / 2)``) and
the world's up direction in the camera frame (a unit 3-vector; the camera's pitch and
roll).  A clip's focal is the median over evenly spaced frames
(:func:`aggregate_focal_rel`); the up directions are brought into one camera with the
estimated camera rotations and averaged by the world stage.

It is trained on renders of the synthetic world only (``hmrflow train fov``,
:mod:`hmrflow.jobs.train.fov_data`): on real video its answer is a guess and users with
real footage should give the intrinsics (docs/world.md).
"""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hmrflow.pipeline.checkpoints import load_state_dict, read_header, save_state_dict
from hmrflow.pipeline.errors import CheckpointError

#: (height, width) of the network's input.
INPUT_HW = (96, 128)
#: What our weights files say in their safetensors header (``format``).
FOV_FORMAT = "hmrflow.fov.v2"
#: Widest and narrowest vertical field of view the network answers (degrees); outside the
#: trained range its answer is clamped.
VFOV_LIMITS_DEG = (25.0, 100.0)


def resize_for_fov(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB frame -> (h, w, 3) uint8 at :data:`INPUT_HW` (area resampling)."""
    import cv2

    h, w = INPUT_HW
    return cv2.resize(np.ascontiguousarray(image), (w, h), interpolation=cv2.INTER_AREA)


def vfov_from_focal_rel(focal_rel: float | np.ndarray) -> float | np.ndarray:
    """Vertical field of view (degrees) of a focal length given in image heights."""
    return np.degrees(2.0 * np.arctan(0.5 / np.asarray(focal_rel, np.float64)))


def focal_rel_from_vfov(vfov_deg: float | np.ndarray) -> float | np.ndarray:
    """Focal length in image heights, ``0.5 / tan(vfov / 2)``."""
    return 0.5 / np.tan(np.radians(np.asarray(vfov_deg, np.float64)) / 2.0)


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class FovNet(nn.Module):
    """Frame -> log focal length in image heights and the up direction in the camera frame.

    forward(images (B, 3, h, w) float in [0, 1], aspect (B,) width / height) -> (B, 4):
    column 0 log(fy / H), columns 1-3 the up direction (not normalised; see :func:`split_output`).
    """

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        h, w = INPUT_HW
        chans = [5, width, 2 * width, 4 * width, 6 * width, 8 * width]
        self.features = nn.Sequential(*[_block(a, b) for a, b in zip(chans[:-1], chans[1:])])
        flat = chans[-1] * (h // 32) * (w // 32)
        self.drop = nn.Dropout(0.1)
        self.hidden = nn.Linear(flat + 1, 128)
        self.out = nn.Linear(128, 4)
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        self.register_buffer("coords", torch.stack([xs, ys])[None], persistent=False)
        # the middle of the trained range (about 55 degrees) is the starting answer
        with torch.no_grad():
            self.out.bias.copy_(torch.tensor([math.log(0.95), 0.0, -1.0, 0.0]))  # upright camera (y down)
        self.width = width

    def forward(self, images: torch.Tensor, aspect: torch.Tensor) -> torch.Tensor:
        x = (images - 0.45) / 0.25
        x = torch.cat([x, self.coords.expand(x.shape[0], -1, -1, -1)], dim=1)
        f = torch.cat([self.drop(self.features(x).flatten(1)), aspect[:, None].log()], dim=1)
        return self.out(torch.relu(self.hidden(f)))


def split_output(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 4) network output -> (log focal (B,), unit up direction (B, 3))."""
    return out[:, 0], torch.nn.functional.normalize(out[:, 1:], dim=1)


def to_input(frames: np.ndarray) -> torch.Tensor:
    """(B, h, w, 3) uint8 resampled frames -> (B, 3, h, w) float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0


def bundled_fov_path() -> Path:
    """Where the package keeps the trained field-of-view network (the file may not exist)."""
    return Path(str(resources.files("hmrflow.stages.camera") / "weights" / "fov.safetensors"))


def save_fov(model: FovNet, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write the network as fp16 safetensors with a header naming its format and width."""
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    meta = {"format": FOV_FORMAT, "width": str(model.width), "input_hw": json.dumps(INPUT_HW)}
    meta.update({k: str(v) for k, v in (extra or {}).items()})
    return save_state_dict(state, path, metadata=meta)


def load_fov(path: str | Path | None = None) -> FovNet:
    """The network from ``path`` (default: the bundled weights), in eval mode, fp32 on the CPU.

    Raises :class:`CheckpointError` naming the file when it is missing, not a field-of-view
    network, or does not fit the architecture.
    """
    p = Path(path) if path else bundled_fov_path()
    if not p.is_file():
        raise CheckpointError(f"{p}: field-of-view weights not found (train them with `hmrflow train fov`)")
    header = read_header(p)
    if header.get("format") != FOV_FORMAT:
        raise CheckpointError(f"{p}: not a field-of-view network (header format {header.get('format')!r})")
    model = FovNet(width=int(header.get("width", 16)))
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_state_dict(p).items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{p}: weights do not fit the field-of-view network ({str(exc).splitlines()[0]})"
        ) from None
    return model.eval()


@torch.no_grad()
def predict_camera(model: FovNet, frames: np.ndarray, aspect: float) -> tuple[np.ndarray, np.ndarray]:
    """(B, h, w, 3) resampled uint8 frames of one clip -> focal lengths in image heights (B,)
    and unit up directions in each frame's camera (B, 3)."""
    if not len(frames):
        return np.zeros(0, np.float32), np.zeros((0, 3), np.float32)
    x = to_input(frames)
    # one thread: convolutions split over threads sum in another order, and the runners must
    # give the same answer in any process (the network is small enough not to miss them)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        log_f, up = split_output(model(x, torch.full((x.shape[0],), float(aspect))))
    finally:
        torch.set_num_threads(threads)
    return log_f.exp().numpy().astype(np.float32), up.numpy().astype(np.float32)


def aggregate_focal_rel(per_frame: np.ndarray) -> float:
    """A clip's focal (image heights) from per-frame answers: the median of their logs, clamped
    to :data:`VFOV_LIMITS_DEG`."""
    lo, hi = (float(focal_rel_from_vfov(v)) for v in VFOV_LIMITS_DEG[::-1])
    v = float(np.exp(np.median(np.log(np.asarray(per_frame, np.float64)))))
    return min(max(v, lo), hi)
