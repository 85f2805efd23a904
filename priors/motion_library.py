"""Procedural motion library in SMPL pose space (ground-truth motions for the synthetic world).

Every motion is a function ``(rng, seconds, fps, **params) -> Motion`` listed in
:data:`MOTIONS`.  Common keyword parameters: ``direction`` (heading, degrees about +y,
0 = facing +z), ``start_xz`` (root position on the ground at frame 0), ``pelvis_height``
(m, pelvis above the ground at zero pose, default 0.93), ``phase``, ``amplitude`` and
``variation`` (person-to-person style noise drawn from ``rng``; 0 = the template).

:func:`compose_motion` chains random motions with slerp cross-fades and carries position
and heading over; :func:`random_path_motion` walks from A to B (and back) along a path.
Frames: world y up, ground y = 0 (docs/FORMATS.md); ``Motion.trans`` is the SMPL ``transl``
(the library keeps the pelvis at about ``pelvis_height``; the renderer re-grounds the mesh).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.spatial.transform import Rotation

from hmrflow.priors.joint_limits import clamp
from hmrflow.priors.motions.core import Motion, angular_speed, heading_of, slerp_rotvecs, smootherstep
from hmrflow.priors.motions.exercises import (
    arm_raises,
    bend_and_reach,
    jumping_jacks,
    lunge,
    sit_to_stand,
    squat,
    stand_sway,
)
from hmrflow.priors.motions.gait import WALK, gait_clip, run, side_step, turn, walk
from hmrflow.priors.motions.kinematics import REFERENCE_PELVIS_HEIGHT
from hmrflow.priors.motions.posing import Style

log = logging.getLogger(__name__)

__all__ = ["MOTIONS", "Motion", "MotionFn", "compose_motion", "random_path_motion", "random_params"]

MotionFn = Callable[..., Motion]

#: name -> generator ``(rng, seconds, fps, **params) -> Motion``.
MOTIONS: dict[str, MotionFn] = {
    "walk": walk,
    "run": run,
    "turn": turn,
    "side_step": side_step,
    "squat": squat,
    "sit_to_stand": sit_to_stand,
    "lunge": lunge,
    "jumping_jacks": jumping_jacks,
    "arm_raises": arm_raises,
    "bend_and_reach": bend_and_reach,
    "stand_sway": stand_sway,
}


def random_params(name: str, rng: np.random.Generator) -> dict:
    """Plausible random parameters for ``MOTIONS[name]`` (used by :func:`compose_motion`)."""
    u = rng.uniform
    if name == "walk":
        return dict(speed=u(0.8, 1.7), turn_rate=u(-15, 15) if u() < 0.4 else 0.0)
    if name == "run":
        return dict(speed=u(2.2, 3.8), turn_rate=u(-10, 10) if u() < 0.3 else 0.0)
    if name == "turn":
        angle = u(45, 180) * (1 if u() < 0.5 else -1)
        return dict(angle=angle, walking=bool(u() < 0.5), speed=u(0.9, 1.4))
    if name == "side_step":
        return dict(speed=u(0.3, 0.7), side=1 if u() < 0.5 else -1, step_width=u(0.3, 0.5))
    if name == "squat":
        return dict(depth=u(60, 115), period=u(2.0, 3.5), arms=str(rng.choice(["forward", "down", "hips"])))
    if name == "sit_to_stand":
        return dict(start="stand", seat_knee=u(80, 100), period=u(4.0, 6.5))
    if name == "lunge":
        return dict(depth=u(60, 100), period=u(2.5, 4.0))
    if name == "jumping_jacks":
        return dict(rate=u(0.8, 1.4), hop_height=u(0.03, 0.1))
    if name == "arm_raises":
        return dict(
            plane=str(rng.choice(["side", "front"])), height=u(90, 165), period=u(2.0, 4.0), alternate=bool(u() < 0.4)
        )
    if name == "bend_and_reach":
        return dict(depth=u(45, 100), reach=str(rng.choice(["down", "alternate"])), period=u(2.5, 4.5))
    if name == "stand_sway":
        return dict(amplitude=u(0.5, 1.3), period=u(3.0, 7.0))
    raise KeyError(f"unknown motion {name!r}; known: {sorted(MOTIONS)}")


def _mean_heading(root: np.ndarray) -> float:
    """Circular mean of the heading of root orientations ``(N, 3)`` (radians)."""
    h = heading_of(root)
    return float(np.arctan2(np.sin(h).mean(), np.cos(h).mean()))


def crossfade(
    prev: Motion, nxt: Motion, *, max_blend_s: float = 1.0, min_blend_s: float = 0.3, max_extra_speed: float = 5.0
) -> Motion:
    """Append ``nxt`` to ``prev`` with a smooth transition.

    ``nxt`` is rotated about +y so that its initial heading continues ``prev``'s heading at the
    start of the overlap, and shifted so that its root starts where ``prev``'s root is then.
    Over the overlap both play on and are blended (slerp per joint; the ground velocity and the
    height of ``trans`` are blended, so position and velocity stay continuous) with
    a C2 ease; its length (``min_blend_s``..``max_blend_s``) grows with the largest joint
    rotation between the two poses so the blend adds at most ~``max_extra_speed`` rad/s:
    0.3 s between similar poses, ~0.6 s for a 90 deg change, 1 s for arms overhead -> down.
    """
    if abs(prev.fps - nxt.fps) > 1e-6:
        raise ValueError(f"crossfade: fps differ ({prev.fps} vs {nxt.fps})")
    fps = prev.fps
    b_max = max(2, min(int(round(max_blend_s * fps)), prev.n_frames // 2, nxt.n_frames // 2))
    a = prev.n_frames - b_max
    win = max(1, int(round(1.0 * fps)))
    h_prev = _mean_heading(prev.poses[max(0, a - win // 2) : a + win // 2 + 1, 0])
    h_next = _mean_heading(nxt.poses[:win, 0])
    nxt = nxt.transformed(h_prev - h_next)
    # blend length: the shortest overlap whose ease adds at most ~max_extra_speed rad/s given
    # the largest joint rotation difference between the two motions inside that overlap
    b_min = max(2, min(int(round(min_blend_s * fps)), b_max))
    b = b_max
    for cand in range(b_min, b_max + 1):
        pa = Rotation.from_rotvec(prev.poses[prev.n_frames - cand :].reshape(-1, 3).astype(np.float64))
        pb = Rotation.from_rotvec(nxt.poses[:cand].reshape(-1, 3).astype(np.float64))
        d = (pa.inv() * pb).magnitude().max()
        if 1.875 * d * fps / (cand - 1) <= max_extra_speed:
            b = cand
            break
    a = prev.n_frames - b  # overlap = prev[a:], nxt[:b]
    off = prev.trans[a, [0, 2]] - nxt.trans[0, [0, 2]]
    nxt = nxt.transformed(0.0, (float(off[0]), float(off[1])))
    w = smootherstep(np.arange(b, dtype=np.float64) / (b - 1))  # (b,)
    poses = slerp_rotvecs(prev.poses[a:], nxt.poses[:b], w[:, None])
    poses[:, 1:] = clamp(poses)[:, 1:]
    # ground position: integrate the blended velocity (a position lerp of a runner and a
    # stander would add a large spurious speed); height: blend directly (both are grounded)
    pt, nt = prev.trans[a:].astype(np.float64), nxt.trans[:b].astype(np.float64)
    step = (1.0 - w[1:, None]) * np.diff(pt, axis=0) + w[1:, None] * np.diff(nt, axis=0)
    trans = np.concatenate([pt[:1], pt[:1] + np.cumsum(step, axis=0)])
    trans[:, 1] = (1.0 - w) * pt[:, 1] + w * nt[:, 1]
    tail = nxt.trans[b:].astype(np.float64)
    tail[:, [0, 2]] += trans[-1, [0, 2]] - nt[-1, [0, 2]]
    labels = np.where(w < 0.5, prev.labels[a:], nxt.labels[:b])
    return Motion(
        prev.name,
        fps,
        np.concatenate([prev.poses[:a], poses, nxt.poses[b:]]),
        np.concatenate([prev.trans[:a], trans, tail]),
        np.concatenate([prev.labels[:a], labels, nxt.labels[b:]]),
    )


def compose_motion(
    rng: np.random.Generator,
    seconds: float,
    fps: float,
    names: Sequence[str] | None = None,
    *,
    segment_seconds: tuple[float, float] = (2.0, 5.0),
    params: dict[str, dict] | None = None,
    direction: float = 0.0,
    start_xz: tuple[float, float] = (0.0, 0.0),
    pelvis_height: float = REFERENCE_PELVIS_HEIGHT,
    variation: float = 1.0,
    max_blend_s: float = 1.0,
) -> Motion:
    """A random program of motions from ``names`` (default: all of :data:`MOTIONS`).

    Segments of ``segment_seconds`` (uniform) with :func:`random_params` (overridden per motion
    name by ``params``) are joined by :func:`crossfade` (0.3..``max_blend_s`` s slerp blends,
    position and heading carried over), then the whole motion is turned to ``direction`` and
    moved to ``start_xz``.  Deterministic given the state of ``rng``.  Labels name the
    segment of each frame.  Returns exactly ``round(seconds * fps)`` frames.
    """
    names = list(names) if names is not None else list(MOTIONS)
    for nm in names:
        if nm not in MOTIONS:
            raise KeyError(f"compose_motion: unknown motion {nm!r}; known: {sorted(MOTIONS)}")
    if not names:
        raise ValueError("compose_motion: names is empty")
    params = params or {}
    n_total = max(2, int(round(seconds * fps)))
    out: Motion | None = None
    while out is None or out.n_frames < n_total:
        nm = names[int(rng.integers(len(names)))]
        dur = float(rng.uniform(*segment_seconds))
        if out is not None:
            dur += max_blend_s  # the overlap is eaten by the blend
        kw = random_params(nm, rng)
        kw.update(params.get(nm, {}))
        seg = MOTIONS[nm](rng, dur, fps, pelvis_height=pelvis_height, variation=variation, **kw)
        out = seg if out is None else crossfade(out, seg, max_blend_s=max_blend_s)
    out = out.slice(0, n_total)
    out = Motion("compose", fps, out.poses, out.trans, out.labels)
    return out.transformed(float(np.deg2rad(direction)), start_xz)


def _wrap(a: np.ndarray | float) -> np.ndarray | float:
    return (np.asarray(a) + np.pi) % (2 * np.pi) - np.pi


def random_path_motion(
    rng: np.random.Generator,
    seconds: float,
    fps: float,
    start_xz: tuple[float, float],
    goal_xz: tuple[float, float],
    *,
    speed: float | None = None,
    waypoints: int | Sequence[tuple[float, float]] = 0,
    wander: float = 1.0,
    on_arrival: str = "return",
    max_turn_rate: float = 120.0,
    pelvis_height: float = REFERENCE_PELVIS_HEIGHT,
    variation: float = 1.0,
) -> Motion:
    """Walk from ``start_xz`` to ``goal_xz`` (ground coordinates x, z in metres).

    Args:
        speed: walking speed (m/s); default uniform 1.0..1.5.
        waypoints: number of random intermediate points (each up to ``wander`` m off the straight
            line), or an explicit list of ``(x, z)`` points to pass on the way.
        on_arrival: "return" (walk back and forth between start and goal until the clip ends:
            people leave and re-enter the frame), "stop" (slow down and stand at the goal) or
            "continue" (keep walking straight on).
        max_turn_rate: deg/s; the heading follows the path with a smooth, rate-limited steer.

    The body starts walking (already at speed) facing its first target.  Labels are "walk"
    and, after stopping, "stand".
    """
    if on_arrival not in ("return", "stop", "continue"):
        raise ValueError(f"random_path_motion: on_arrival must be return/stop/continue, got {on_arrival!r}")
    n = max(2, int(round(seconds * fps)))
    v0 = float(rng.uniform(1.0, 1.5)) if speed is None else float(speed)
    start = np.asarray(start_xz, dtype=np.float64)
    goal = np.asarray(goal_xz, dtype=np.float64)
    if isinstance(waypoints, int):
        line = goal - start
        normal = np.array([-line[1], line[0]]) / max(np.linalg.norm(line), 1e-9)
        fr = np.sort(rng.uniform(0.2, 0.8, size=waypoints))
        mids = [start + f * line + normal * rng.uniform(-wander, wander) for f in fr]
    else:
        mids = [np.asarray(p, dtype=np.float64) for p in waypoints]
    leg = [*mids, goal]
    targets = list(leg)
    if on_arrival == "return":  # enough back-and-forth legs for the whole clip
        back = [*mids[::-1], start]
        while len(targets) < 2 + int(seconds * v0 / max(np.linalg.norm(goal - start), 0.5)) * (len(mids) + 1) * 2:
            targets += back + leg
    # point agent with a rate-limited proportional steer
    pos = start.copy()
    heading = float(np.arctan2(*(targets[0] - start))) if np.linalg.norm(targets[0] - start) > 1e-6 else 0.0
    rate_max = np.deg2rad(max_turn_rate)
    hs, vs = np.empty(n), np.empty(n)
    ti = 0
    decel = 0.8  # m/s^2 when stopping
    for i in range(n):
        v = v0
        if ti < len(targets):
            d = targets[ti] - pos
            dist = float(np.linalg.norm(d))
            if dist < 0.4 and ti < len(targets) - 1:
                ti += 1
                d = targets[ti] - pos
                dist = float(np.linalg.norm(d))
            if ti == len(targets) - 1 and on_arrival != "continue":
                if on_arrival == "stop":
                    v = min(v0, np.sqrt(2 * decel * max(dist - 0.05, 0.0)))
                if dist < 0.1 and on_arrival == "stop":
                    ti = len(targets)
                    v = 0.0
            if dist > 0.05 and ti < len(targets):
                err = float(_wrap(np.arctan2(d[0], d[1]) - heading))
                heading += float(np.clip(3.0 * err, -rate_max, rate_max)) / fps
        else:
            v = 0.0 if on_arrival == "stop" else v0
        hs[i], vs[i] = heading, v
        pos = pos + v * np.array([np.sin(heading), np.cos(heading)]) / fps
    hs = gaussian_filter1d(hs, sigma=0.12 * fps, mode="nearest")
    vs = gaussian_filter1d(vs, sigma=0.15 * fps, mode="nearest")
    vs[vs < 1e-3] = 0.0
    style = Style.sample(rng, variation)
    labels = np.where(vs > 0.05, "walk", "stand").astype(object)
    return gait_clip(
        fps,
        vs,
        hs,
        params=WALK,
        pelvis_height=pelvis_height,
        start_xz=tuple(start),
        phase=float(rng.uniform(0, 1)),
        style=style,
        name="path_walk",
        labels=labels,
    )


def max_angular_speed(motion: Motion) -> float:
    """Largest per-joint angular speed (rad/s) of a motion (for smoothness checks)."""
    return float(angular_speed(motion.poses, motion.fps).max())
