"""Read ground truth (``gt.npz``) and predictions (``tracks.parquet``) into arrays.

Formats are those of docs/FORMATS.md.  Both sides are turned into joints and vertices
by the *same* body model (SMPL parameters -> kinematic joints ``[:, :24]`` and mesh
vertices) so that errors measure the estimates, not two different models; the
image box of each person is its mesh projected with the ground-truth intrinsics and
clipped to the image (see :mod:`hmrflow.jobs.evaluate.matching`).

Only this module needs a body model; metrics and matching work on plain arrays.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from hmrflow.pipeline.boxes import project_box
from hmrflow.pipeline.errors import HmrflowError

log = logging.getLogger(__name__)

GT_FILE = "gt.npz"
TRACKS_FILE = "tracks.parquet"
GT_KEYS = ("fps", "width", "height", "n_frames", "pts", "K", "person_id", "betas", "poses", "transl", "visible_frac")
TRACK_COLUMNS = ("track_id", "frame_idx", "pts_s", "pose", "betas", "transl", "confidence", "observed")
N_JOINTS = 24


class EvalInputError(HmrflowError, ValueError):
    """A prediction or ground-truth folder/file is missing or malformed."""


class MeshFn(Protocol):
    """SMPL parameters -> joints and vertices, NumPy in and out.

    poses: (B, 72) axis-angle; betas: (B, 10); transl: (B, 3), metres.
    Returns joints (B, 24, 3) and vertices (B, V, 3), float32, metres.
    """

    def __call__(self, poses: np.ndarray, betas: np.ndarray, transl: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


class TorchBodyModelFn:
    """Wrap an hmrflow body model (``forward_axis_angle``) as a :class:`MeshFn`.

    Runs in batches of ``batch_size`` without gradients on the model's device, fp32.
    """

    def __init__(self, model: Any, batch_size: int = 512) -> None:
        self.model = model
        self.batch_size = int(batch_size)
        #: hash of the model arrays when the model reports one (compared with gt.npz's)
        self.sha256: str | None = getattr(model, "sha256", None)

    def __call__(self, poses: np.ndarray, betas: np.ndarray, transl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        n = len(poses)
        device = getattr(self.model, "device", None) or torch.device("cpu")
        joints, verts = [], []
        with torch.no_grad():
            for a in range(0, n, self.batch_size):
                b = slice(a, a + self.batch_size)
                t = [
                    torch.as_tensor(np.ascontiguousarray(x[b]), dtype=torch.float32, device=device)
                    for x in (poses, betas, transl)
                ]
                out = self.model.forward_axis_angle(*t)
                joints.append(out.joints[:, :N_JOINTS].float().cpu().numpy())
                verts.append(out.vertices.float().cpu().numpy())
        if not joints:
            return np.zeros((0, N_JOINTS, 3), np.float32), np.zeros((0, 0, 3), np.float32)
        return np.concatenate(joints), np.concatenate(verts)


def resolve_body_model(body_model: Any = None, gender: str = "neutral") -> MeshFn:
    """Turn the ``body_model`` argument of :func:`~hmrflow.jobs.evaluate.evaluate` into a MeshFn.

    None -> hmrflow's synthetic body model (what the synthetic ground truth uses);
    a path (str/Path) -> real SMPL files loaded by ``hmrflow.priors.body_model``;
    an object with ``forward_axis_angle`` -> wrapped; any other callable -> used as is.
    """
    if body_model is None or isinstance(body_model, (str, Path)):
        from hmrflow.priors.body_model import load_body_model

        if body_model is None:
            model = load_body_model(kind="synthetic", gender=gender, device="cpu")
        else:
            model = load_body_model(kind="smpl", path=str(body_model), gender=gender, device="cpu")
        return TorchBodyModelFn(model)
    if hasattr(body_model, "forward_axis_angle"):
        return TorchBodyModelFn(body_model)
    if callable(body_model):
        return body_model
    raise TypeError(f"body_model must be None, a path, a body model or a callable, got {type(body_model).__name__}")


@dataclass(frozen=True)
class GroundTruth:
    """One synthetic clip's ground truth (F frames, P people), camera frame.

    joints: (F, P, 24, 3) and vertices (F, P, V, 3) float32 metres from the body model;
    boxes: (F, P, 4) projected-mesh boxes (NaN = not in the image);
    visible_frac: (F, P); pts: (F,) seconds; K: (3, 3); person_id: (P,).
    world_joints: (F, P, 24, 3) in the synthetic world (y up), None when gt.npz has no world
    poses; cam_R0: (3, 3) world->camera rotation of the first frame (None likewise).
    """

    video_id: str
    fps: float
    width: int
    height: int
    pts: np.ndarray
    K: np.ndarray
    person_id: np.ndarray
    visible_frac: np.ndarray
    joints: np.ndarray
    vertices: np.ndarray
    boxes: np.ndarray
    world_joints: np.ndarray | None = None
    cam_R0: np.ndarray | None = None

    @property
    def n_frames(self) -> int:
        return len(self.pts)


@dataclass(frozen=True)
class Predictions:
    """One video's predicted rows (N rows, any number of tracks), sorted by (track, frame).

    track_id, frame_idx: (N,) int64; pts: (N,) float64; observed: (N,) bool;
    confidence: (N,) float32; joints (N, 24, 3), vertices (N, V, 3) float32 metres,
    camera frame; boxes (N, 4) projected with the prediction's camera
    (:func:`prediction_camera`).  world_joints: (N, 24, 3) from the world-frame columns
    (None for outputs without them; NaN rows where the world frame is unknown).
    """

    video_id: str
    track_id: np.ndarray
    frame_idx: np.ndarray
    pts: np.ndarray
    observed: np.ndarray
    confidence: np.ndarray
    joints: np.ndarray
    vertices: np.ndarray
    boxes: np.ndarray
    world_joints: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.track_id)

    @classmethod
    def empty(cls, video_id: str) -> "Predictions":
        return cls(
            video_id=video_id,
            track_id=np.zeros(0, np.int64),
            frame_idx=np.zeros(0, np.int64),
            pts=np.zeros(0),
            observed=np.zeros(0, bool),
            confidence=np.zeros(0, np.float32),
            joints=np.zeros((0, N_JOINTS, 3), np.float32),
            vertices=np.zeros((0, 0, 3), np.float32),
            boxes=np.zeros((0, 4)),
        )


def find_gt_videos(gt_dir: str | Path) -> list[Path]:
    """Folders ``GT_DIR/<video_id>/`` that hold a gt.npz, sorted by name."""
    root = Path(gt_dir)
    if not root.is_dir():
        raise EvalInputError(f"{root}: ground-truth folder not found")
    found = sorted(p.parent for p in root.glob(f"*/{GT_FILE}"))
    if not found and (root / GT_FILE).is_file():
        found = [root]
    if not found:
        raise EvalInputError(
            f"{root}: no <video_id>/{GT_FILE} found (expected a synthetic set made by `hmrflow synth`)"
        )
    return found


def _scalar(x: np.ndarray) -> Any:
    return x.item() if isinstance(x, np.ndarray) and x.ndim == 0 else x


def load_ground_truth(video_dir: str | Path, mesh_fn: MeshFn) -> GroundTruth:
    """Read ``video_dir/gt.npz`` and pose the ground-truth bodies with ``mesh_fn``."""
    path = Path(video_dir) / GT_FILE
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise EvalInputError(f"{path}: cannot read ({exc})") from exc
    missing = [k for k in GT_KEYS if k not in data]
    if missing:
        raise EvalInputError(f"{path}: missing keys {missing}")
    video_id = str(_scalar(data["video_id"])) if "video_id" in data else Path(video_dir).name
    poses = np.asarray(data["poses"], np.float32)
    transl = np.asarray(data["transl"], np.float32)
    betas = np.asarray(data["betas"], np.float32)
    n_frames, n_people = poses.shape[:2]
    if poses.shape != (n_frames, n_people, 72) or transl.shape != (n_frames, n_people, 3) or betas.shape[0] != n_people:
        raise EvalInputError(f"{path}: poses {poses.shape}, transl {transl.shape}, betas {betas.shape} do not agree")
    width, height = int(_scalar(data["width"])), int(_scalar(data["height"]))
    K = np.asarray(data["K"], np.float64)
    flat_betas = np.broadcast_to(betas[None], (n_frames, n_people, betas.shape[-1])).reshape(-1, betas.shape[-1])
    joints, verts = mesh_fn(poses.reshape(-1, 72), flat_betas, transl.reshape(-1, 3))
    joints = joints.reshape(n_frames, n_people, N_JOINTS, 3)
    verts = verts.reshape(n_frames, n_people, -1, 3)
    model_sha = getattr(mesh_fn, "sha256", None)
    gt_sha = str(_scalar(data["body_model_sha256"])) if "body_model_sha256" in data else None
    if model_sha and gt_sha and model_sha != gt_sha:
        log.warning(
            "%s: ground truth was made with body model %s..., evaluating with %s...", path, gt_sha[:12], model_sha[:12]
        )
    if "joints3d" in data and data["joints3d"].shape == joints.shape and joints.size:
        diff = float(np.abs(data["joints3d"] - joints).max())
        if diff > 5e-3:
            log.warning(
                "%s: joints3d differ from the evaluation body model's joints by up to %.1f mm; "
                "is this the body model that made the ground truth (%s)?",
                path,
                diff * 1000,
                _scalar(data.get("body_model", np.array("?"))),
            )
    world_joints = cam_R0 = None
    if "world_poses" in data and "world_transl" in data and "cam_R" in data:
        wj, _ = mesh_fn(
            np.asarray(data["world_poses"], np.float32).reshape(-1, 72),
            flat_betas,
            np.asarray(data["world_transl"], np.float32).reshape(-1, 3),
        )
        world_joints = wj.reshape(n_frames, n_people, N_JOINTS, 3)
        cam_R0 = np.asarray(data["cam_R"], np.float64)[0]
    return GroundTruth(
        world_joints=world_joints,
        cam_R0=cam_R0,
        video_id=video_id,
        fps=float(_scalar(data["fps"])),
        width=width,
        height=height,
        pts=np.asarray(data["pts"], np.float64),
        K=K,
        person_id=np.asarray(data["person_id"], np.int64),
        visible_frac=np.asarray(data["visible_frac"], np.float32),
        joints=joints,
        vertices=verts,
        boxes=project_box(verts, K, width, height),
    )


def _list_column(table: Any, name: str, width: int, path: Path) -> np.ndarray:
    """A fixed_size_list / list column -> (N, width) float32."""
    col = table.column(name).combine_chunks()
    n = len(col)
    if n == 0:
        return np.zeros((0, width), np.float32)
    values = col.flatten().to_numpy(zero_copy_only=False)
    if values.size != n * width:
        raise EvalInputError(f"{path}: column {name!r} must hold {width} values per row")
    return values.astype(np.float32).reshape(n, width)


def prediction_camera(video_dir: str | Path, gt: GroundTruth) -> np.ndarray:
    """(3, 3) intrinsics the prediction's camera-frame outputs refer to, in GT pixels.

    hmrflow records its pinhole camera in ``manifest.json`` (``camera``: focal_px, cx, cy,
    width, height of the decoded frames).  Predicted meshes are projected with it so 2D
    matching does not depend on whether the pipeline knew the true focal length; it is
    rescaled when the pipeline decoded at another resolution.  Without a recorded camera
    (outputs of other tools) the ground truth's K is used.
    """
    import json

    try:
        cam = json.loads((Path(video_dir) / "manifest.json").read_text(encoding="utf-8")).get("camera")
    except (OSError, ValueError):
        cam = None
    if not cam or not cam.get("focal_px") or not cam.get("width"):
        return gt.K
    s = gt.width / float(cam["width"])
    return np.array(
        [[cam["focal_px"] * s, 0.0, cam["cx"] * s], [0.0, cam["focal_px"] * s, cam["cy"] * s], [0.0, 0.0, 1.0]],
        np.float64,
    )


def load_predictions(video_dir: str | Path, gt: GroundTruth, mesh_fn: MeshFn) -> Predictions:
    """Read ``video_dir/tracks.parquet``; pose the bodies; box them with the prediction's camera.

    Rows whose frame_idx is outside the ground truth's frames are dropped with a warning.
    Raises :class:`EvalInputError` for a missing column or a track with two rows in
    one frame.
    """
    import pyarrow.parquet as pq

    path = Path(video_dir) / TRACKS_FILE
    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as exc:
        raise EvalInputError(f"{path}: cannot read ({exc})") from exc
    missing = [c for c in TRACK_COLUMNS if c not in table.column_names]
    if missing:
        raise EvalInputError(f"{path}: missing columns {missing}")
    track = table.column("track_id").to_numpy().astype(np.int64)
    frame = table.column("frame_idx").to_numpy().astype(np.int64)
    pts = table.column("pts_s").to_numpy().astype(np.float64)
    observed = table.column("observed").to_numpy(zero_copy_only=False).astype(bool)
    conf = table.column("confidence").to_numpy(zero_copy_only=False).astype(np.float32)
    pose = _list_column(table, "pose", 72, path)
    betas = _list_column(table, "betas", 10, path)
    transl = _list_column(table, "transl", 3, path)
    inside = (frame >= 0) & (frame < gt.n_frames)
    if not inside.all():
        log.warning(
            "%s: %d rows have frame_idx outside the %d ground-truth frames; ignored",
            path,
            int((~inside).sum()),
            gt.n_frames,
        )
    order = np.lexsort((frame, track))
    order = order[inside[order]]
    track, frame, pts, observed, conf = track[order], frame[order], pts[order], observed[order], conf[order]
    pose, betas, transl = pose[order], betas[order], transl[order]
    dup = (np.diff(track) == 0) & (np.diff(frame) == 0)
    if dup.any():
        i = int(np.nonzero(dup)[0][0])
        raise EvalInputError(f"{path}: track {track[i]} has two rows for frame {frame[i]}")
    if len(frame):
        dt = np.abs(pts - gt.pts[frame])
        half = 0.5 / gt.fps if gt.fps > 0 else np.inf
        if float(dt.max()) > half:
            log.warning(
                "%s: pts_s differs from the ground truth's pts by up to %.3f s: frames may be misaligned",
                path,
                float(dt.max()),
            )
    joints, verts = (
        mesh_fn(pose, betas, transl)
        if len(pose)
        else (np.zeros((0, N_JOINTS, 3), np.float32), np.zeros((0, 0, 3), np.float32))
    )
    world_joints = None
    if "world_global_orient" in table.column_names and "world_transl" in table.column_names:
        w_orient = _list_column(table, "world_global_orient", 3, path)[order]
        w_transl = _list_column(table, "world_transl", 3, path)[order]
        world_joints = np.full((len(pose), N_JOINTS, 3), np.nan, np.float32)
        known = np.isfinite(w_orient).all(1) & np.isfinite(w_transl).all(1)
        if known.any():
            wpose = pose[known].copy()
            wpose[:, :3] = w_orient[known]
            world_joints[known] = mesh_fn(wpose, betas[known], w_transl[known])[0]
    return Predictions(
        world_joints=world_joints,
        video_id=gt.video_id,
        track_id=track,
        frame_idx=frame,
        pts=pts,
        observed=observed,
        confidence=conf,
        joints=joints,
        vertices=verts,
        boxes=project_box(verts, prediction_camera(video_dir, gt), gt.width, gt.height)
        if len(verts)
        else np.zeros((0, 4)),
    )
