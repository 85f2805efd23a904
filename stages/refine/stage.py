"""Refinement stage: one track in, one smooth, gap-filled track out.

``RefineStage(cfg)(seq)``:

1. **Gap filling** (:func:`fill_gaps`): the track's frame grid is its median ``frame_idx`` step
   (and median ``pts`` step); missing grid frames between two observed frames are inserted
   when the hole lasts at most ``cfg.max_gap_s`` (pts placed by linear interpolation of
   ``frame_idx`` between the neighbours), with ``observed=False`` and ``confidence=0``.  Longer
   holes split the track into segments that are refined separately (nothing is invented there).
2. **Refinement** (:func:`refine_arrays`): each segment is cut into overlapping windows
   (:mod:`.windows`), every window is canonicalised on its own estimates and denoised by the
   motion prior (few-step DDIM / DPM-Solver, noise from a seeded CPU generator), windows are
   run in batches, and the outputs are blended back (6D rotations and translations weighted
   by tapers that sum to 1, then re-orthonormalised), so no seam shows; an optional light
   Gaussian low-pass (``cfg.smooth_sigma`` frames) removes the sampler's residual frame-to-frame
   noise.
3. **Shape**: a track carries one ``betas`` (the tracker's confidence-weighted median of the
   per-frame shapes); a prior trained with image features refines it from the mean of all the
   track's observed features (``cfg.refine_shape``), otherwise it is kept as it is.

Image features (``SMPLSequence.feature``, the estimator's compact per-row feature) condition
the denoiser when the prior was trained on them and on this run's estimator
(:func:`features_match`); filled frames have none (masked).

The noise seed of a track is ``(seed, track_id)`` (``seed`` is the run's ``PipelineConfig.seed``): results do not depend on batching or on
which other tracks are processed, and reproduce across machines.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import ClassVar, Optional

import numpy as np
import torch

from hmrflow.pipeline.config import RefineConfig
from hmrflow.pipeline.devices import resolve_device
from hmrflow.pipeline.stage import BaseStage, Resources
from hmrflow.pipeline.types import SMPLSequence
from hmrflow.priors.motion_diffusion import load_prior, load_schedule
from hmrflow.priors.motion_diffusion.representation import conditioning, decanonicalise, reference_frame
from hmrflow.priors.motion_diffusion.sampling import cpu_generator, inference_scheduler, sample
from hmrflow.priors.rotations import matrix_to_rot6d, rot6d_to_matrix
from hmrflow.stages.refine.windows import blend_weights, plan_windows, stitch

log = logging.getLogger(__name__)

#: Share of one GPU a refinement worker asks Ray for when it runs on a GPU (the prior is small).
GPU_SHARE = 0.25


@dataclasses.dataclass(frozen=True)
class FilledTrack:
    """A track on its frame grid (N frames) after gap filling; ``segment`` (N,) int64 labels
    runs separated by holes longer than ``max_gap_s``."""

    frame_idx: np.ndarray
    pts: np.ndarray
    observed: np.ndarray
    rotmats: np.ndarray
    transl: np.ndarray
    confidence: np.ndarray
    segment: np.ndarray
    feature: np.ndarray


def _slerp_rotmats(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(24,3,3) x2, weights (K,) -> (K,24,3,3) per-joint slerp."""
    from scipy.spatial.transform import Rotation

    ra = Rotation.from_matrix(np.broadcast_to(a.astype(np.float64), (len(w), 24, 3, 3)).reshape(-1, 3, 3))
    rel = (Rotation.from_matrix(a.astype(np.float64)).inv() * Rotation.from_matrix(b.astype(np.float64))).as_rotvec()
    step = Rotation.from_rotvec((np.asarray(w, np.float64)[:, None, None] * rel[None]).reshape(-1, 3))
    return (ra * step).as_matrix().reshape(len(w), 24, 3, 3).astype(np.float32)


def fill_gaps(seq: SMPLSequence, max_gap_s: float) -> FilledTrack:
    """Insert the missing frames of holes up to ``max_gap_s`` on the track's frame grid.

    The grid step is the median ``frame_idx`` step; the time of a hole is the pts interval minus
    one median pts step (the time during which the person was not seen).  Inserted frames get
    ``frame_idx = prev + k * step`` (below the next observed frame), pts interpolated linearly in
    ``frame_idx``, placeholder poses slerped between the neighbours (the prior replaces them),
    ``observed=False``, ``confidence=0``, an all-zero (absent) image feature.
    """
    fi = np.asarray(seq.frame_idx, np.int64)
    n = len(fi)
    obs = np.asarray(seq.observed, bool)
    pts = np.asarray(seq.pts, np.float64)
    rot = np.asarray(seq.rotmats, np.float32)
    tr = np.asarray(seq.transl, np.float32)
    conf = np.asarray(seq.confidence, np.float32)
    feat = np.asarray(seq.feature, np.float16)
    if n < 2:
        return FilledTrack(
            fi.copy(), pts.copy(), obs.copy(), rot.copy(), tr.copy(), conf.copy(), np.zeros(n, np.int64), feat.copy()
        )
    dfi = np.diff(fi)
    step = max(1, int(np.median(dfi)))
    dpts = np.diff(pts)
    pstep = float(np.median(dpts))
    holes = np.flatnonzero(dfi > step)  # a grid frame is missing after row i
    too_long = holes[dpts[holes] - pstep > max_gap_s + 1e-6]
    segment = np.zeros(n, np.int64)
    for i in too_long:
        segment[i + 1 :] += 1
    ins = {k: [] for k in ("frame_idx", "pts", "rotmats", "transl", "segment")}
    for i in np.setdiff1d(holes, too_long):
        missing = np.arange(fi[i] + step, fi[i + 1], step, dtype=np.int64)
        if len(missing) == 0:
            continue
        w = (missing - fi[i]) / float(fi[i + 1] - fi[i])  # (K,) in (0, 1)
        ins["frame_idx"].append(missing)
        ins["pts"].append(pts[i] + w * dpts[i])
        ins["rotmats"].append(_slerp_rotmats(rot[i], rot[i + 1], w))
        ins["transl"].append(((1 - w)[:, None] * tr[i] + w[:, None] * tr[i + 1]).astype(np.float32))
        ins["segment"].append(np.full(len(w), segment[i], np.int64))
    if not ins["frame_idx"]:
        return FilledTrack(fi.copy(), pts.copy(), obs.copy(), rot.copy(), tr.copy(), conf.copy(), segment, feat.copy())
    m = sum(len(x) for x in ins["frame_idx"])
    all_fi = np.concatenate([fi, *ins["frame_idx"]])
    order = np.argsort(all_fi, kind="stable")
    return FilledTrack(
        frame_idx=all_fi[order],
        pts=np.concatenate([pts, *ins["pts"]])[order],
        observed=np.concatenate([obs, np.zeros(m, bool)])[order],
        rotmats=np.concatenate([rot, *ins["rotmats"]])[order],
        transl=np.concatenate([tr, *ins["transl"]])[order],
        confidence=np.concatenate([conf, np.zeros(m, np.float32)])[order],
        segment=np.concatenate([segment, *ins["segment"]])[order],
        feature=np.concatenate([feat, np.zeros((m, feat.shape[1]), np.float16)])[order],
    )


@torch.no_grad()
def refine_arrays(
    model: torch.nn.Module,
    rotmats: np.ndarray,
    transl: np.ndarray,
    observed: np.ndarray,
    confidence: np.ndarray,
    *,
    schedule: Optional[dict] = None,
    window: int = 64,
    overlap: int = 16,
    steps: int = 10,
    sampler: str = "ddim",
    seed: int = 0,
    batch_windows: int = 64,
    guidance_scale: float = 1.0,
    smooth_sigma: float = 0.0,
    feature: Optional[np.ndarray] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Refine one contiguous run of frames with the motion prior.

    rotmats (N, 24, 3, 3), transl (N, 3) camera frame (placeholders where unobserved);
    observed (N,) bool; confidence (N,); feature (N, F) the estimator's image features (rows
    that are all zero, and every row when None, count as absent; ignored by a prior trained
    without features).  Returns refined (rotmats (N, 24, 3, 3) float32, transl (N, 3) float32).
    Windows shorter than ``window`` (short tracks) are padded at the end with unobserved copies
    of the last frame, and the padding is dropped.
    """
    n = len(rotmats)
    if n == 0:
        return rotmats.astype(np.float32), transl.astype(np.float32)
    device = next(model.parameters()).device
    starts = plan_windows(n, window, overlap)
    length = min(window, n)
    idx = starts[:, None] + np.arange(window)[None]  # (K, W), may run past n for a short track
    valid = idx < n
    idx = np.minimum(idx, n - 1)
    rot = torch.from_numpy(np.ascontiguousarray(rotmats[idx], np.float32))
    tr = torch.from_numpy(np.ascontiguousarray(transl[idx], np.float32))
    obs = torch.from_numpy(np.asarray(observed, bool)[idx] & valid)
    conf = torch.from_numpy(np.asarray(confidence, np.float32)[idx])
    weights = obs.float() * conf.clamp_min(0.0)
    empty = weights.sum(1) <= 0  # no observed frame: fall back to the placeholders for the frame
    weights[empty] = torch.from_numpy(valid[empty.numpy()].astype(np.float32))
    frame = reference_frame(rot[:, :, 0], tr, weights)
    mean, std = model.norm_mean.cpu(), model.norm_std.cpu()
    cond = conditioning(rot, tr, obs, conf, frame, mean, std)
    n_img = int(getattr(model.config, "n_img_feat", 0) or 0)
    if n_img:
        if feature is None:
            feat = torch.zeros(*idx.shape, n_img)
            present = torch.zeros(idx.shape, dtype=torch.bool)
        else:
            f = np.asarray(feature)
            feat = torch.from_numpy(f[idx].astype(np.float32))
            present = obs & torch.from_numpy(np.abs(f).max(axis=1)[idx] > 0)
        cond = torch.cat([cond, model.image_conditioning(feat.to(device), present.to(device)).cpu()], dim=-1)
    k = len(starts)
    noise = torch.randn((k, window, model.config.n_feat), generator=cpu_generator(seed), dtype=torch.float32)
    outs = []
    for b0 in range(0, k, batch_windows):
        sched = inference_scheduler(sampler, schedule)  # type: ignore[arg-type]
        x = sample(
            model,
            cond[b0 : b0 + batch_windows].to(device),
            sched,
            steps,
            cpu_generator(seed),
            guidance_scale=guidance_scale,
            noise=noise[b0 : b0 + batch_windows],
        )
        outs.append(x.cpu())
    feats = torch.cat(outs) * std + mean  # denormalise (B, W, n_feat)
    out_rot, out_tr = decanonicalise(feats, frame)
    w = blend_weights(starts, n, window, overlap)
    r6 = stitch(matrix_to_rot6d(out_rot)[:, :length].numpy(), starts, w, n)
    tr_out = stitch(out_tr[:, :length].numpy(), starts, w, n)
    if smooth_sigma > 0 and n > 1:  # light temporal low-pass of the sampled motion (frames)
        from scipy.ndimage import gaussian_filter1d

        r6 = gaussian_filter1d(r6, smooth_sigma, axis=0, mode="nearest")
        tr_out = gaussian_filter1d(tr_out, smooth_sigma, axis=0, mode="nearest")
    rot_out = rot6d_to_matrix(torch.from_numpy(r6).float()).numpy()
    return rot_out.astype(np.float32), tr_out.astype(np.float32)


def _track_seed(seed: int, track_id: int) -> int:
    """A 63-bit seed from (run seed, track id) (numpy SeedSequence: stable across machines)."""
    return int(
        np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(track_id) & 0xFFFFFFFF]).generate_state(2, np.uint64)[0]
        >> np.uint64(1)
    )


class RefineStage(BaseStage[SMPLSequence, SMPLSequence]):
    """Fill gaps, refine with the motion prior, keep one shape per track (see module docstring)."""

    resources: ClassVar[Resources] = Resources(cpus=1.0, gpus=GPU_SHARE)

    def __init__(self, cfg: RefineConfig = RefineConfig(), seed: int = 0, feature_source: Optional[str] = None) -> None:
        """``feature_source``: the id of the estimator whose features the tracks carry
        (:func:`~hmrflow.stages.mesh.stage.estimator_feature_id`); a prior trained on another
        estimator's features (or an unknown source) refines without them."""
        super().__init__()
        self.cfg = cfg
        self.seed = int(seed)
        self.feature_source = feature_source
        self.model: Optional[torch.nn.Module] = None
        self.schedule: Optional[dict] = None
        self.use_features = False
        self._fps_warned: set[str] = set()  # videos already warned about (logging only)

    def setup(self) -> None:
        """Load the prior (``cfg.weights`` folder, default the bundled one) on the resolved device."""
        dev = resolve_device(self.cfg.device, "refine.device")
        if self.cfg.enabled:
            self.model = load_prior(self.cfg.weights, device=str(dev))  # CheckpointError names a bad folder
            self.schedule = load_schedule(self.cfg.weights)
            self.use_features = self.cfg.use_features and features_match(self.model, self.feature_source)
            if self.cfg.use_features and getattr(self.model.config, "n_img_feat", 0) and not self.use_features:
                log.warning(
                    "refine: the prior was trained on the features of estimator %s, this run's estimator is %s; "
                    "refining without image features (less accurate; train a prior on this estimator's pairs)",
                    self.model.config.feature_estimator,
                    self.feature_source,
                )
        self._ready = True

    def __call__(self, seq: SMPLSequence) -> SMPLSequence:
        """Return the refined, gap-filled track (``observed`` False on filled frames)."""
        self.ensure_setup()
        filled = fill_gaps(seq, self.cfg.max_gap_s)
        if self.model is not None and len(filled.pts) > 2:
            step = float(np.median(np.diff(filled.pts)))
            model_fps = float(self.model.config.fps)
            # once per video, not per track (a 15 fps archive run would repeat it for everyone)
            if step > 0 and abs(1.0 / step - model_fps) > 0.25 * model_fps and seq.video_id not in self._fps_warned:
                self._fps_warned.add(seq.video_id)
                log.warning(
                    "%s: %.1f fps, the prior was trained at %.0f fps; refinement may be "
                    "less accurate (resample with decode.target_fps)",
                    seq.video_id,
                    1.0 / step,
                    model_fps,
                )
        rot, tr = filled.rotmats.copy(), filled.transl.copy()
        betas = np.asarray(seq.betas, np.float32).copy()
        feature = filled.feature if self.use_features else None
        if self.cfg.enabled and self.model is not None and feature is not None and self.cfg.refine_shape:
            betas = refine_shape(self.model, feature[filled.observed], betas)
        if self.cfg.enabled and self.model is not None and len(filled.frame_idx) > 0:
            for s in np.unique(filled.segment):
                m = filled.segment == s
                r, t = refine_arrays(
                    self.model,
                    filled.rotmats[m],
                    filled.transl[m],
                    filled.observed[m],
                    filled.confidence[m],
                    schedule=self.schedule,
                    window=self.cfg.window,
                    overlap=self.cfg.overlap,
                    steps=self.cfg.steps,
                    sampler=self.cfg.sampler,
                    seed=(_track_seed(self.seed, seq.track_id) + int(s)) % 2**63,
                    batch_windows=self.cfg.batch_windows,
                    guidance_scale=self.cfg.guidance_scale,
                    smooth_sigma=self.cfg.smooth_sigma,
                    feature=None if feature is None else feature[m],
                )
                rot[m], tr[m] = r, t
        return SMPLSequence(
            video_id=seq.video_id,
            track_id=seq.track_id,
            betas=betas,
            frame_idx=filled.frame_idx,
            pts=filled.pts,
            observed=filled.observed,
            rotmats=rot.astype(np.float32),
            transl=tr.astype(np.float32),
            confidence=filled.confidence,
            tracklet=_carry_tracklets(seq, filled),
            feature=filled.feature,
            vertices=_carry_vertices(seq, filled),
        )


def features_match(model: torch.nn.Module, source: Optional[str]) -> bool:
    """True when ``model`` takes image features and was trained on those of estimator ``source``
    (the prior's ``feature_estimator``: comma-separated ids, or empty for any estimator)."""
    if not int(getattr(model.config, "n_img_feat", 0) or 0):
        return False
    accepted = [x for x in str(getattr(model.config, "feature_estimator", "") or "").split(",") if x]
    return not accepted or (source is not None and source in accepted)


@torch.no_grad()
def refine_shape(model: torch.nn.Module, feature: np.ndarray, betas: np.ndarray) -> np.ndarray:
    """One body shape per track from its observed frames' features (T, F) and its median
    betas (10,): the prior's shape head (:meth:`MotionDenoiser.refine_betas`); (10,) float32."""
    if len(feature) == 0:
        return betas
    dev = next(model.parameters()).device
    f = torch.from_numpy(np.asarray(feature, np.float32))[None].to(dev)
    present = f.abs().amax(-1) > 0
    b = torch.from_numpy(np.asarray(betas, np.float32))[None].to(dev)
    return model.refine_betas(f, present, b)[0].cpu().numpy().astype(np.float32)


def _carry_tracklets(seq: SMPLSequence, filled: FilledTrack) -> np.ndarray:
    """(N,) the tracklet of each filled-grid row: the input row's where observed, -1 where filled."""
    out = np.full(len(filled.frame_idx), -1, np.int64)
    pos = np.searchsorted(seq.frame_idx, filled.frame_idx)
    obs = filled.observed
    out[obs] = np.asarray(seq.tracklet, np.int64)[pos[obs]]
    return out


def _carry_vertices(seq: SMPLSequence, filled: FilledTrack) -> np.ndarray:
    """(N, V, 3) the estimator's mesh of each filled-grid row: the input row's where observed,
    NaN where filled ((N, 0, 3) when the track keeps no mesh)."""
    v = np.asarray(seq.vertices, np.float16)
    out = np.full((len(filled.frame_idx),) + v.shape[1:], np.nan, np.float16)
    if v.shape[1] == 0:
        return out
    pos = np.searchsorted(seq.frame_idx, filled.frame_idx)
    obs = filled.observed
    out[obs] = v[pos[obs]]
    return out
