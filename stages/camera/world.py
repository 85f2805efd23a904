"""``WorldStage``: every track in the final camera and in one shared, gravity-aligned world frame.

The estimator and the tracker work with a *working* camera (the estimator's focal,
principal point at the image centre: ``FramePart.camera()``).  After refinement this stage

1. decides the clip's intrinsics: the user's (:mod:`.intrinsics`), else the field of view
   estimated from the frames (:mod:`.fov`), else a fixed default;
2. moves every row into that camera exactly: the root keeps its image position, its depth
   scales with the focal length, and the global orientation turns with the viewing ray
   (the estimator predicts orientation as seen along the ray); then smooths each track's
   distance along its ray over ``depth_smooth_s`` (:func:`smooth_depth`);
3. turns the per-frame camera rotations (:mod:`.motion`) into rotations relative to the
   first frame, and with them puts every row into the first frame's camera;
4. fits gravity and the ground there from all people together (:mod:`.ground`) and defines
   the world frame: y up, origin on the ground below the first frame's camera, z its
   viewing direction laid flat (:func:`~hmrflow.stages.camera.ground.world_from_camera`);
5. adds the world-frame root orientation and translation to every row and returns the
   per-frame camera poses in that world.

SMPL rotates the body about its root joint ``J0(betas)``, so a rigid motion ``x -> A x + b``
of a body changes its translation to ``A (J0 + t) + b - J0`` and its global orientation to
``A R``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import numpy as np
import torch

from hmrflow.pipeline.config import BodyModelConfig, CameraConfig
from hmrflow.pipeline.stage import BaseStage, Resources
from hmrflow.pipeline.types import ClipRef, SMPLSequence
from hmrflow.priors.rotations import rotation_z_to
from hmrflow.stages.camera.ground import GroundFit, fit_ground, world_from_camera
from hmrflow.stages.camera.intrinsics import Intrinsics, centred, user_intrinsics

log = logging.getLogger(__name__)

#: Ankle and foot joints: the sole offset is measured from them.
_FOOT = [7, 8, 10, 11]
#: Most rows (over all tracks) the ground is fitted on.
GROUND_ROWS = 600
#: Fewest contact rows a track needs for its own depth scale, and the scales allowed.
MIN_CONTACTS = 10
SCALE_RANGE = (0.7, 1.4)


@dataclass(frozen=True)
class CameraTrack:
    """The camera of every decoded frame in the world frame (``camera.npz``).

    frame_idx: (F,) int64; pts: (F,) float64 seconds; R: (F, 3, 3) float64 world->camera
    rotation and t: (F, 3) float64 translation (``x_cam = R @ x_world + t``, OpenCV camera);
    K: (3, 3) float64 intrinsics in decoded pixels.
    """

    frame_idx: np.ndarray
    pts: np.ndarray
    R: np.ndarray
    t: np.ndarray
    K: np.ndarray

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays of ``camera.npz`` (key order fixed)."""
        return {
            "frame_idx": self.frame_idx.astype(np.int64),
            "pts": self.pts.astype(np.float64),
            "R": self.R.astype(np.float64),
            "t": self.t.astype(np.float64),
            "K": self.K.astype(np.float64),
            "frame": np.array("world_y_up"),
        }


@dataclass(frozen=True)
class WorldResult:
    """What :class:`WorldStage` returns: the sequences, the manifest's ``camera`` record and the
    per-frame cameras (None when the world frame is off or nobody was found)."""

    sequences: list[SMPLSequence]
    record: dict[str, Any] | None
    cameras: CameraTrack | None


def final_intrinsics(cfg: CameraConfig, clip: ClipRef, working: Mapping[str, Any]) -> Intrinsics:
    """The clip's intrinsics in decoded pixels (see module docstring, step 1)."""
    w, h = int(working["width"]), int(working["height"])
    user = user_intrinsics(cfg, clip.width or w, clip.height or h)
    if user is not None:
        return user.scaled(w, h)
    fov = (working.get("observed") or {}).get("fov")
    if cfg.fov == "estimate" and not cfg.has_intrinsics and fov and fov.get("focal_rel"):
        from hmrflow.stages.camera.fov import aggregate_focal_rel

        return centred(aggregate_focal_rel(np.asarray(fov["focal_rel"])) * h, w, h, "estimated")
    if cfg.fov == "diagonal":
        return centred(math.hypot(w, h), w, h, "diagonal")
    if cfg.fov == "hmr2":
        return centred(5000.0 / 256.0 * max(w, h), w, h, "hmr2")
    return centred(float(working["focal_px"]), w, h, "estimator")


def to_camera(
    rotmats: np.ndarray, transl: np.ndarray, working: Mapping[str, Any], cam: Intrinsics
) -> tuple[np.ndarray, np.ndarray]:
    """Rows (T, 24, 3, 3), (T, 3) in the working camera -> the same rows in camera ``cam`` (step 2)."""
    f_w = float(working["focal_px"])
    cw = np.array([float(working["cx"]), float(working["cy"])])
    t = np.asarray(transl, np.float64)
    z = np.maximum(t[:, 2], 1e-6)
    pix = f_w * t[:, :2] / z[:, None] + cw
    z2 = z * math.sqrt(cam.fx * cam.fy) / f_w
    t2 = np.stack([(pix[:, 0] - cam.cx) * z2 / cam.fx, (pix[:, 1] - cam.cy) * z2 / cam.fy, z2], axis=1)
    turn = rotation_z_to(torch.from_numpy(t2)) @ rotation_z_to(torch.from_numpy(t)).transpose(-1, -2)
    out = np.array(rotmats, np.float32, copy=True)
    out[:, 0] = (turn.numpy() @ np.asarray(rotmats[:, 0], np.float64)).astype(np.float32)
    return out, t2.astype(np.float32)


def smooth_depth(transl: np.ndarray, frame_idx: np.ndarray, window_frames: float, kind: str = "gaussian") -> np.ndarray:
    """(T, 3) camera-frame translations with their distance from the camera smoothed in time.

    The direction of each translation (its pixel) is kept; the log of its length is smoothed
    over each run of consecutive frames (gaps split runs): ``gaussian`` (sigma = window / 4)
    around the run's straight-line trend (a walk toward the camera stays straight to its
    ends), or ``savgol``, a local quadratic fit over ``window_frames``.
    """
    from scipy.ndimage import gaussian_filter1d
    from scipy.signal import savgol_filter

    t = np.asarray(transl, np.float64)
    if window_frames < 3 or len(t) < 3:
        return np.asarray(transl, np.float32)
    d = np.linalg.norm(t, axis=1)
    log_d = np.log(np.maximum(d, 1e-6))
    out = log_d.copy()
    breaks = np.nonzero(np.diff(np.asarray(frame_idx)) != 1)[0] + 1
    for run in np.split(np.arange(len(t)), breaks):
        if len(run) < 5:
            continue
        if kind == "gaussian":
            # the run's straight-line trend is kept as it is (a walk toward the camera stays
            # straight to its ends); what is left around it is low-passed
            x = np.arange(len(run), dtype=np.float64)
            line = np.polyval(np.polyfit(x, log_d[run], 1), x)
            out[run] = line + gaussian_filter1d(log_d[run] - line, window_frames / 4.0, mode="nearest")
        else:
            win = int(min(window_frames, len(run)))
            win -= 1 - win % 2  # odd
            if win >= 5:
                out[run] = savgol_filter(log_d[run], win, 2, mode="interp")
    return (t * (np.exp(out) / np.maximum(d, 1e-6))[:, None]).astype(np.float32)


def camera_rotations(
    observed: Mapping[str, Any] | None, cam: Intrinsics
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Per decoded frame: (frame_idx (F,), pts (F,), R_t (F, 3, 3) camera 0 -> camera t, motion kind).

    kind: ``static`` (not estimated, or every frame pair still), ``rotating``.  Empty arrays
    when nothing was tracked.
    """
    from hmrflow.stages.camera.motion import rotations_from_homographies

    motion = (observed or {}).get("motion")
    if not motion or not motion.get("frame_idx"):
        return np.zeros(0, np.int64), np.zeros(0), np.zeros((0, 3, 3)), "static"
    idx = np.asarray(motion["frame_idx"], np.int64)
    pts = np.asarray(motion.get("pts", np.full(len(idx), np.nan)), np.float64)
    status = np.asarray(motion["status"], np.int64)
    if not np.any(status == 2):
        return idx, pts, np.broadcast_to(np.eye(3), (len(idx), 3, 3)).copy(), "static"
    H = np.asarray(motion["H"], np.float64).reshape(-1, 3, 3)
    principal = ((cam.cx - cam.width / 2.0) / cam.height, (cam.cy - cam.height / 2.0) / cam.height)
    return idx, pts, rotations_from_homographies(H, cam.fy / cam.height, principal), "rotating"


def rotation_interpolator(idx: np.ndarray, R: np.ndarray) -> Any:
    """``frames (N,) -> (N, 3, 3)`` camera rotations at any frames, spherically interpolated
    between the tracked frames ``idx`` (F,) with rotations ``R`` (F, 3, 3) and held beyond
    them (identity when nothing was tracked)."""
    from scipy.spatial.transform import Rotation, Slerp

    idx = np.asarray(idx, np.float64)
    if len(idx) < 2:
        const = np.eye(3) if not len(idx) else np.asarray(R[0], np.float64)
        return lambda frames: np.broadcast_to(const, (len(frames), 3, 3)).copy()
    slerp = Slerp(idx, Rotation.from_matrix(np.asarray(R, np.float64)))
    return lambda frames: slerp(np.clip(np.asarray(frames, np.float64), idx[0], idx[-1])).as_matrix()


def network_up(observed: Mapping[str, Any] | None, idx: np.ndarray, R_t: np.ndarray) -> np.ndarray | None:
    """The camera network's up direction averaged over the sampled frames, in the first frame's
    camera (each frame's answer turned back by that frame's camera rotation); None without answers."""
    fov = (observed or {}).get("fov") or {}
    ups = np.asarray(fov.get("up") or [], np.float64).reshape(-1, 3)
    if not len(ups):
        return None
    frames = np.asarray(fov["frame_idx"], np.int64)
    if len(idx):
        k = np.clip(np.searchsorted(idx, frames), 0, len(idx) - 1)
        ups = np.einsum("fji,fj->fi", R_t[k], ups)  # R_t^T u: camera t -> camera 0
    m = ups.mean(axis=0)
    return m / max(float(np.linalg.norm(m)), 1e-9)


class WorldStage(BaseStage[Any, WorldResult]):
    """``(sequences, camera, clip) -> WorldResult`` (see module docstring).

    cfg: the ``camera`` section; body_model: the body model the estimates use (for the root
    joint and the sole offset).
    """

    resources: ClassVar[Resources] = Resources(cpus=1.0)

    def __init__(self, cfg: CameraConfig, body_model: BodyModelConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.body_cfg = body_model or BodyModelConfig()
        self._body: Any = None
        self._sole = 0.0

    def device_setting(self) -> str | None:
        return None

    def setup(self) -> None:
        if self.cfg.world and self._body is None:
            from hmrflow.priors.body_model import load_body_model

            self._body = load_body_model(self.body_cfg, device="cpu")
            lay = self._body.layer
            # float64 NumPy copies: plain sums give the same bits in every process, whatever its
            # BLAS threads (the Ray runner must write the same bytes as the local one)
            self._template = lay.v_template.double().numpy()
            self._shapedirs = lay.shapedirs.double().numpy()
            self._regressor = lay.J_regressor.double().numpy()
            rest = np.einsum("jv,vc->jc", self._regressor, self._template)
            # foot joints above the lowest vertex in the rest pose (y is up in model space)
            self._sole = float(rest[_FOOT, 1].min() - self._template[:, 1].min())
        super().setup()

    def _rest(self, betas: np.ndarray) -> np.ndarray:
        """(24, 3) rest-pose joints of a shaped body (J0 = the root joint), float64."""
        b = np.zeros(self._shapedirs.shape[-1])
        n = min(len(b), len(betas))
        b[:n] = np.asarray(betas, np.float64)[:n]
        shaped = self._template + np.einsum("vcl,l->vc", self._shapedirs, b)
        return np.einsum("jv,vc->jc", self._regressor, shaped)

    @staticmethod
    def _joints(rotmats: np.ndarray, transl: np.ndarray, rest: np.ndarray) -> np.ndarray:
        """(T, 24, 3) posed joints: SMPL's joints are its rest joints carried by the kinematic
        chain (pose blend shapes move vertices, not joints), so no mesh is needed."""
        from scipy.spatial.transform import Rotation

        from hmrflow.priors.motions.kinematics import forward_kinematics

        t = len(rotmats)
        aa = Rotation.from_matrix(np.asarray(rotmats, np.float64).reshape(-1, 3, 3)).as_rotvec().reshape(t, 24, 3)
        return forward_kinematics(aa, np.asarray(transl, np.float64) + rest[0], rest - rest[0])

    def _ground_scales(self, contacts: list[np.ndarray], ground: GroundFit) -> list[float]:
        """Per track, the factor that puts its feet on the clip's common ground plane.

        Depth from apparent size is off by a factor per person (a tall person looks near);
        scaling a track's positions about the camera centre scales its feet's height below
        the camera by the same factor, so ``camera height / track's own height`` moves it
        onto the plane all people share.  Needs two or more tracks (one track defines the
        plane itself) and :data:`MIN_CONTACTS` contact rows; clamped to :data:`SCALE_RANGE`.
        """
        from hmrflow.stages.camera.ground import lowest_feet

        if len(contacts) < 2 or ground.height <= 0:
            return [1.0] * len(contacts)
        out = []
        for j in contacts:
            if len(j) < MIN_CONTACTS:
                out.append(1.0)
                continue
            # the foot joints, not the soles, scale with the track: they belong sole-offset above the ground
            own = -float(np.median(lowest_feet(j, ground.up) @ ground.up))
            target = ground.height - self._sole
            out.append(float(np.clip(target / own, *SCALE_RANGE)) if own > 0 and target > 0 else 1.0)
        return out

    def __call__(self, x: tuple[list[SMPLSequence], Mapping[str, Any] | None, ClipRef]) -> WorldResult:
        sequences, working, clip = x
        if not sequences or not working:
            return WorldResult(list(sequences), dict(working) if working else None, None)
        self.ensure_setup()
        cam = final_intrinsics(self.cfg, clip, working)
        moved = []
        fps = clip.fps if clip.fps and clip.fps > 0 else 30.0
        for s in sequences:
            rot, tr = to_camera(s.rotmats, s.transl, working, cam)
            tr = smooth_depth(tr, np.asarray(s.frame_idx), self.cfg.depth_smooth_s * fps, self.cfg.depth_smooth)
            moved.append(dataclasses.replace(s, rotmats=rot, transl=tr))
        record: dict[str, Any] = {
            "model": "pinhole",
            "focal_px": math.sqrt(cam.fx * cam.fy),
            "cx": cam.cx,
            "cy": cam.cy,
            "width": cam.width,
            "height": cam.height,
            "intrinsics": cam.record(),
            "intrinsics_original": cam.scaled(clip.width, clip.height).record() if clip.width and clip.height else None,
            "working_focal_px": float(working["focal_px"]),
        }
        fov = (working.get("observed") or {}).get("fov")
        if fov and fov.get("focal_rel"):
            from hmrflow.stages.camera.fov import aggregate_focal_rel, vfov_from_focal_rel

            record["fov_estimate"] = {
                "vfov_deg": float(vfov_from_focal_rel(aggregate_focal_rel(np.asarray(fov["focal_rel"])))),
                "frames": len(fov["focal_rel"]),
                "used": cam.source == "estimated",
            }
        if not self.cfg.world:
            record["world"] = None
            return WorldResult(moved, record, None)
        return self._world(moved, working, cam, record)

    def _world(
        self, seqs: list[SMPLSequence], working: Mapping[str, Any], cam: Intrinsics, record: dict[str, Any]
    ) -> WorldResult:
        idx, pts, R_t, kind = camera_rotations(working.get("observed"), cam)
        rot_of = rotation_interpolator(idx, R_t)
        frames_seen = (working.get("observed") or {}).get("frames") or {}
        if frames_seen.get("frame_idx"):  # every decoded frame, tracked or in between (or a static camera)
            idx = np.asarray(frames_seen["frame_idx"], np.int64)
            pts = np.asarray(frames_seen["pts"], np.float64)
            R_t = rot_of(idx)

        # every row in the first frame's camera (camera 0)
        cam0 = []
        for s in seqs:
            A = np.transpose(rot_of(np.asarray(s.frame_idx)), (0, 2, 1))  # camera t -> camera 0
            rest = self._rest(s.betas)
            j0 = rest[0]
            rot = np.array(s.rotmats, np.float64, copy=True)
            rot[:, 0] = A @ rot[:, 0]
            tr = np.einsum("tij,tj->ti", A, np.asarray(s.transl, np.float64) + j0) - j0
            cam0.append((rot, tr, rest))
        # the ground needs contacts from across the clip, not every frame: observed rows,
        # evenly thinned to at most GROUND_ROWS over all tracks
        n_obs = sum(int(np.count_nonzero(s.observed)) for s in seqs)
        step = max(1, -(-n_obs // GROUND_ROWS))
        parts = []
        for s, (rot, tr, rest) in zip(seqs, cam0):
            pick = np.nonzero(np.asarray(s.observed, bool))[0][::step]
            if not len(pick):
                pick = np.arange(0, len(s), step)
            parts.append(self._joints(rot[pick], tr[pick], rest))
        joints = np.concatenate(parts)
        up_net = network_up(working.get("observed"), idx, R_t)
        ground: GroundFit = fit_ground(joints, self._sole, prior_up=up_net)
        scales = self._ground_scales(parts, ground) if self.cfg.ground_scale else [1.0] * len(seqs)
        Rw, o = world_from_camera(ground.up, ground.height)
        out = []
        for i, (s, (rot, tr, rest)) in enumerate(zip(seqs, cam0)):
            j0 = rest[0]
            if scales[i] != 1.0:  # slide the whole track along its viewing rays (about the camera centre)
                tr = scales[i] * (tr + j0) - j0
                cam_t = scales[i] * (np.asarray(s.transl, np.float64) + j0) - j0
                s = dataclasses.replace(s, transl=cam_t.astype(np.float32))
            wrot = np.einsum("ij,tjk->tik", Rw, rot[:, 0])
            wtr = np.einsum("ij,tj->ti", Rw, tr + j0 - o) - j0
            out.append(
                dataclasses.replace(s, world_rotmat=wrot.astype(np.float32), world_transl=wtr.astype(np.float32))
            )
        cameras = None
        if len(idx):
            Rwc = R_t @ Rw.T[None]  # world -> camera t
            cameras = CameraTrack(idx, pts, Rwc, np.einsum("fij,j->fi", R_t, o), cam.K())
        record["world"] = {
            "frame": "y up, origin on the ground below the first frame's camera, z = its viewing direction laid flat",
            "camera_motion": kind,
            "gravity_source": ground.source,
            "up_network": None if up_net is None else up_net.round(6).tolist(),
            "up_bodies": ground.body_up.round(6).tolist(),
            "up_in_first_camera": ground.up.round(6).tolist(),
            "camera_height_m": round(ground.height, 4),
            "contact_points": ground.n_points,
            "track_depth_scale": {str(int(s.track_id)): round(float(k), 4) for s, k in zip(seqs, scales)},
            "contact_spread_m": round(ground.spread_m, 3),
            "world_from_first_camera": {"R": Rw.round(8).tolist(), "origin_in_camera": o.round(6).tolist()},
        }
        return WorldResult(out, record, cameras)
