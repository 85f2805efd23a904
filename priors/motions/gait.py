"""Locomotion: walk, run, turn (in place or while walking) and side steps.

One gait engine drives walk, run and turn.  Each leg follows sagittal hip/knee/ankle curves
(periodic splines through key values of normative gait data: phase 0 = heel strike of that
leg, toe-off at ~60 % of the stride when walking and ~38 % when running), the right leg half a
stride behind the left.  Speed, heading, cadence and step length are per-frame signals, so
starting, stopping and turning while walking come out of the same code.

* stride length follows ``L(v) = L0 * sqrt(v / v0)`` (step length grows with speed; cadence
  = v / L) unless ``step_length`` or ``cadence`` is given;
* joint ranges scale with the step length (a slower walk has smaller hip excursions) and
  vanish at speed 0, so ``speed -> 0`` blends into standing;
* the root moves exactly at the requested speed along the heading (+ a small lateral sway
  over the stance leg); its height follows foot contact on the rest skeleton (the stance leg
  touches the ground: the pelvis bobs ~2-3 cm twice per stride when walking; a smooth flight
  arc between take-off and landing when running); the pelvis rotates (yaw), drops on the
  swing side (roll) and leans forward more when running; the thorax counter-rotates and the
  arms swing against the legs.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.ndimage import gaussian_filter1d

from hmrflow.priors.motions.core import Motion, smootherstep
from hmrflow.priors.motions.kinematics import REFERENCE_PELVIS_HEIGHT, contact_heights, ground_offset
from hmrflow.priors.motions.posing import (
    J,
    Style,
    X,
    Y,
    Z,
    add_bilateral,
    assemble,
    eval_periodic,
    frame_times,
    periodic_curve,
    root_rotvec,
    set_bilateral,
    standing_euler,
)

# Key values (phase in strides, degrees).  hip: + flexion; knee: + flexion; ankle: + dorsiflexion;
# toe: + toe extension.  Walk after Winter (1991) / Perry; run after Novacheck (1998), ~3 m/s.
_WALK_KEYS = {
    "hip": [(0.0, 30), (0.1, 26), (0.3, 6), (0.5, -10), (0.6, -2), (0.75, 24), (0.87, 33)],
    "knee": [(0.0, 4), (0.15, 18), (0.4, 4), (0.6, 38), (0.72, 60), (0.85, 33), (0.95, 7)],
    "ankle": [(0.0, 0), (0.08, -6), (0.3, 5), (0.45, 10), (0.62, -15), (0.72, -5), (0.85, 1)],
    "toe": [(0.0, 0), (0.4, 2), (0.55, 25), (0.65, 8), (0.8, 0)],
}
_RUN_KEYS = {
    "hip": [(0.0, 35), (0.12, 24), (0.3, 2), (0.4, -10), (0.55, 14), (0.75, 52), (0.9, 42)],
    "knee": [(0.0, 20), (0.13, 40), (0.38, 18), (0.55, 72), (0.7, 102), (0.87, 40), (0.95, 24)],
    "ankle": [(0.0, 5), (0.13, 18), (0.38, -20), (0.5, -10), (0.7, 2), (0.9, 6)],
    "toe": [(0.0, 0), (0.25, 4), (0.36, 25), (0.45, 6), (0.6, 0)],
}


@dataclass(frozen=True)
class GaitParams:
    """Template of one gait (walk or run) at the reference body size (pelvis 0.93 m)."""

    name: str
    v0: float  # nominal speed (m/s)
    step0: float  # nominal step length (m) at v0 (one step = half a stride)
    toe_off: float  # stride phase at which the foot leaves the ground
    flight: bool  # both feet leave the ground (running)
    sway_amp: float  # lateral sway over the stance leg (m)
    pelvis_yaw: float  # deg
    pelvis_roll: float  # deg
    tilt: float  # root forward tilt (deg)
    spine_lean: float  # extra thoracic lean (deg)
    arm_swing: float  # shoulder swing amplitude (deg)
    arm_forward: float  # mean forward shoulder flexion (deg)
    elbow_base: float  # mean elbow flexion (deg)
    elbow_swing: float  # extra elbow flexion when the arm swings forward (deg)
    arm_hang: float | None  # shoulder z magnitude while moving (None = style's)


WALK = GaitParams("walk", 1.3, 0.70, 0.6, False, 0.02, 4.0, 4.0, 2.0, 1.0, 15.0, 2.0, 15.0, 12.0, None)
RUN = GaitParams("run", 3.0, 1.10, 0.38, True, 0.012, 6.0, 5.0, 7.0, 3.0, 28.0, 8.0, 80.0, 15.0, 68.0)


@lru_cache(maxsize=None)
def _curves(kind: str) -> dict:
    keys = _WALK_KEYS if kind == "walk" else _RUN_KEYS
    return {k: periodic_curve(v) for k, v in keys.items()}


def _hip_swing_norm(kind: str, phase: np.ndarray) -> np.ndarray:
    """Hip flexion of a leg normalised to [-1, 1] around its mean (used to drive the arms)."""
    c = _curves(kind)["hip"]
    grid = eval_periodic(c, np.linspace(0, 1, 200, endpoint=False))
    mid, half = 0.5 * (grid.max() + grid.min()), 0.5 * (grid.max() - grid.min())
    return (eval_periodic(c, phase) - mid) / half


def gait_clip(
    fps: float,
    speed: np.ndarray,
    heading: np.ndarray,
    *,
    params: GaitParams = WALK,
    pelvis_height: float = REFERENCE_PELVIS_HEIGHT,
    start_xz: tuple[float, float] = (0.0, 0.0),
    phase: float = 0.0,
    amplitude: float = 1.0,
    step_length: float | None = None,
    cadence: float | None = None,
    in_place: np.ndarray | float = 0.0,
    style: Style = Style(),
    name: str | None = None,
    labels: object = None,
) -> Motion:
    """The gait engine: per-frame ``speed`` (T,) m/s and ``heading`` (T,) rad -> Motion.

    Args:
        fps: frame rate.
        speed: ``(T,)`` forward speed (m/s, >= 0).
        heading: ``(T,)`` walking direction, radians about +y (0 = +z, pi/2 = +x).
        params: :data:`WALK` or :data:`RUN` template.
        pelvis_height: pelvis height at zero pose (m); lengths scale with it.
        start_xz: root position on the ground at frame 0.
        phase: stride phase of the left leg at frame 0 (0 = left heel strike).
        amplitude: gain on the joint excursions (1 = template).
        step_length: fixed step length (m) instead of ``L(v)``.
        cadence: fixed cadence (steps/min) instead of ``v / L(v)``; ignored with step_length.
        in_place: ``(T,)`` or scalar in [0, 1]: stepping on the spot (used for turning).
        style: person-to-person variation.
    """
    speed = np.maximum(np.asarray(speed, dtype=np.float64), 0.0)
    heading = np.asarray(heading, dtype=np.float64)
    n = speed.shape[0]
    in_place = np.broadcast_to(np.asarray(in_place, dtype=np.float64), (n,))
    p = params
    scale = pelvis_height / REFERENCE_PELVIS_HEIGHT
    step0 = p.step0 * scale
    # step length and cadence
    if step_length is not None:
        step = np.full(n, float(step_length))
    elif cadence is not None:
        step = np.where(cadence > 0, speed * 60.0 / float(cadence), 0.0)
    else:
        step = step0 * np.sqrt(speed / p.v0)
    stride_hz = np.where(step > 1e-6, speed / np.maximum(2.0 * step, 1e-6), 0.0)
    stride_hz = np.maximum(stride_hz, 0.9 * in_place)  # ~108 steps/min when stepping on the spot
    ph = phase + np.concatenate([[0.0], np.cumsum(stride_hz[:-1]) / fps])  # (T,) strides, left leg
    # gains: hip excursion follows step length; knee/ankle keep more range at slow speeds (clearance)
    a = np.clip(step / step0, 0.0, 1.4) * amplitude * style.leg_gain
    g_hip = np.maximum(a, 0.45 * in_place)
    g_knee = np.maximum(np.where(a < 1, np.sqrt(a), a), 0.65 * in_place)
    g_ankle = np.maximum(np.sqrt(np.minimum(a, 1.0)), 0.5 * in_place)
    g_body = np.clip(np.maximum(a, 0.5 * in_place), 0.0, 1.2)

    c = _curves(p.name)
    e = standing_euler(n, style)
    tilt = p.tilt * np.clip(a, 0, 1) + 0.0
    legs = {}
    for side, off in (("left", 0.0), ("right", 0.5)):
        q = ph + off
        legs[side] = dict(
            hip=g_hip * eval_periodic(c["hip"], q),
            knee=g_knee * eval_periodic(c["knee"], q),
            ankle=g_ankle * eval_periodic(c["ankle"], q),
            toe=g_ankle * eval_periodic(c["toe"], q),
            arm=_hip_swing_norm(p.name, q + 0.5),  # arm swings with the opposite leg
        )
    L, R = legs["left"], legs["right"]
    set_bilateral(e, "hip", X, -(L["hip"] + tilt), -(R["hip"] + tilt))
    set_bilateral(e, "knee", X, L["knee"], R["knee"])
    set_bilateral(e, "ankle", X, -L["ankle"], -R["ankle"])
    set_bilateral(e, "foot", X, -L["toe"], -R["toe"])
    # hips abduct slightly in swing and adduct in stance (pelvic drop)
    set_bilateral(
        e,
        "hip",
        Z,
        3.0 * g_body * np.cos(2 * np.pi * (ph - 0.75)),
        3.0 * g_body * np.cos(2 * np.pi * (ph + 0.5 - 0.75)),
    )
    # pelvis: yaw (left side forward at left heel strike), roll (swing side drops), tilt
    yaw = -p.pelvis_yaw * g_body * np.cos(2 * np.pi * ph)
    roll = p.pelvis_roll * g_body * np.sin(2 * np.pi * ph)
    # thorax counter-rotates; neck and head keep the gaze on the heading
    for jn in ("spine1", "spine2", "spine3"):
        e[:, J[jn], Y] = -0.55 * yaw
        e[:, J[jn], Z] = -0.3 * roll
        e[:, J[jn], X] += (p.spine_lean * np.clip(a, 0, 1)) / 3.0
    e[:, J["neck"], Y] = 0.3 * yaw
    e[:, J["head"], Y] = 0.35 * yaw
    e[:, J["head"], X] += -0.8 * tilt  # look ahead, not at the ground, when leaning
    # arms
    swing = style.arm_gain * g_body
    if p.arm_hang is not None:
        hang = style.arm_hang_deg + (p.arm_hang - 72.0) * np.clip(a, 0, 1)
        set_bilateral(e, "shoulder", Z, -hang)
    arm_l = p.arm_forward * g_body + p.arm_swing * swing * L["arm"]
    arm_r = p.arm_forward * g_body + p.arm_swing * swing * R["arm"]
    set_bilateral(e, "shoulder", X, -arm_l, -arm_r)
    elbow_l = (
        style.elbow_rest_deg
        + (p.elbow_base - style.elbow_rest_deg) * np.clip(g_body, 0, 1)
        + p.elbow_swing * swing * np.clip(L["arm"], 0, None)
    )
    elbow_r = (
        style.elbow_rest_deg
        + (p.elbow_base - style.elbow_rest_deg) * np.clip(g_body, 0, 1)
        + p.elbow_swing * swing * np.clip(R["arm"], 0, None)
    )
    set_bilateral(e, "elbow", Y, -elbow_l, -elbow_r)

    root = root_rotvec(heading, tilt_deg=tilt, yaw_deg=yaw, roll_deg=roll)
    # root translation: integrate speed along the heading, add the lateral sway; height below
    pos = np.zeros((n, 3))
    step_xz = speed[:-1, None] * np.stack([np.sin(heading[:-1]), np.cos(heading[:-1])], -1) / fps
    pos[1:, [0, 2]] = np.cumsum(step_xz, axis=0)
    pos[:, 0] += start_xz[0]
    pos[:, 2] += start_xz[1]
    sway = p.sway_amp * scale * np.clip(g_body, 0, 1) * np.sin(2 * np.pi * (ph - 0.05))
    pos[:, 0] += sway * np.cos(heading)  # body-left direction = (cos h, 0, -sin h)
    pos[:, 2] -= sway * np.sin(heading)
    m = assemble(name or p.name, fps, e, root, pos, labels)
    pos[:, 1] = _pelvis_height_track(m.poses, fps, pelvis_height, ph, p.toe_off if p.flight else None)
    return assemble(name or p.name, fps, e, root, pos, labels)


def _pelvis_height_track(
    poses: np.ndarray, fps: float, pelvis_height: float, phase: np.ndarray, toe_off: float | None
) -> np.ndarray:
    """``(T,)`` pelvis height from foot contact: the lowest contact point of the feet on the
    ground (walking: always one foot down), or, with ``toe_off`` (running), only the stance
    foot on the ground and a smooth (Hermite) flight arc between take-off and landing."""
    h = contact_heights(poses, pelvis_height)  # (T, 4): l_ankle, r_ankle, l_ball, r_ball
    if toe_off is None:
        y = -h.min(axis=1)
    else:
        need_l = -np.minimum(h[:, 0], h[:, 2])
        need_r = -np.minimum(h[:, 1], h[:, 3])
        st_l = np.mod(phase, 1.0) < toe_off
        st_r = np.mod(phase + 0.5, 1.0) < toe_off
        y = np.full(phase.shape, np.nan)
        y[st_l] = need_l[st_l]
        y[st_r & ~st_l] = need_r[st_r & ~st_l]
        both = st_l & st_r
        y[both] = np.maximum(need_l[both], need_r[both])
        y = _fill_flight(y)
    sigma = 0.02 * fps
    return gaussian_filter1d(y, sigma, mode="nearest") if sigma >= 0.5 else y


def _fill_flight(y: np.ndarray) -> np.ndarray:
    """Fill NaN runs (flight) by cubic Hermite arcs matching height and vertical velocity at
    take-off and landing; runs touching either end are held constant."""
    y = y.copy()
    n = y.shape[0]
    nan = np.isnan(y)
    if nan.all():
        return np.zeros(n)
    i = 0
    while i < n:
        if not nan[i]:
            i += 1
            continue
        s = i
        while i < n and nan[i]:
            i += 1
        e = i  # flight = [s, e)
        if s == 0 or e == n:
            y[s:e] = y[e] if s == 0 else y[s - 1]
            continue
        y0, y1 = y[s - 1], y[e]
        v0 = y[s - 1] - y[s - 2] if s >= 2 and not nan[s - 2] else 0.0
        v1 = y[e + 1] - y[e] if e + 1 < n and not nan[e + 1] else 0.0
        dur = e - s + 1
        u = np.arange(1, dur) / dur
        h00, h10 = 2 * u**3 - 3 * u**2 + 1, u**3 - 2 * u**2 + u
        h01, h11 = -2 * u**3 + 3 * u**2, u**3 - u**2
        y[s:e] = h00 * y0 + h10 * v0 * dur + h01 * y1 + h11 * v1 * dur
    return y


def _heading0(direction: float) -> float:
    return float(np.deg2rad(direction))


def walk(
    rng: np.random.Generator,
    seconds: float,
    fps: float,
    *,
    speed: float = 1.3,
    direction: float = 0.0,
    turn_rate: float = 0.0,
    step_length: float | None = None,
    cadence: float | None = None,
    amplitude: float = 1.0,
    phase: float | None = None,
    pelvis_height: float = REFERENCE_PELVIS_HEIGHT,
    start_xz: tuple[float, float] = (0.0, 0.0),
    variation: float = 1.0,
) -> Motion:
    """Walk at ``speed`` m/s towards heading ``direction`` (degrees about +y, 0 = +z).

    ``turn_rate`` (deg/s) curves the path; ``step_length`` (m) or ``cadence`` (steps/min)
    override the speed-dependent defaults; ``phase`` (strides) defaults to a random phase.
    """
    t = frame_times(seconds, fps)
    style = Style.sample(rng, variation)
    ph = float(rng.uniform(0, 1)) if phase is None else float(phase)
    heading = _heading0(direction) + np.deg2rad(turn_rate) * t
    return gait_clip(
        fps,
        np.full(t.shape, float(speed)),
        heading,
        params=WALK,
        pelvis_height=pelvis_height,
        start_xz=start_xz,
        phase=ph,
        amplitude=amplitude,
        step_length=step_length,
        cadence=cadence,
        style=style,
        name="walk",
    )


def run(
    rng: np.random.Generator,
    seconds: float,
    fps: float,
    *,
    speed: float = 3.0,
    direction: float = 0.0,
    turn_rate: float = 0.0,
    step_length: float | None = None,
    cadence: float | None = None,
    amplitude: float = 1.0,
    phase: float | None = None,
    pelvis_height: float = REFERENCE_PELVIS_HEIGHT,
    start_xz: tuple[float, float] = (0.0, 0.0),
    variation: float = 1.0,
) -> Motion:
    """Run (jog) at ``speed`` m/s (default 3.0); same parameters as :func:`walk`."""
    t = frame_times(seconds, fps)
    style = Style.sample(rng, variation)
    ph = float(rng.uniform(0, 1)) if phase is None else float(phase)
    heading = _heading0(direction) + np.deg2rad(turn_rate) * t
    return gait_clip(
        fps,
        np.full(t.shape, float(speed)),
        heading,
        params=RUN,
        pelvis_height=pelvis_height,
        start_xz=start_xz,
        phase=ph,
        amplitude=amplitude,
        step_length=step_length,
        cadence=cadence,
        style=style,
        name="run",
    )


def turn(
    rng: np.random.Generator,
    seconds: float,
    fps: float,
    *,
    angle: float = 90.0,
    walking: bool = False,
    speed: float = 1.1,
    direction: float = 0.0,
    amplitude: float = 1.0,
    phase: float | None = None,
    pelvis_height: float = REFERENCE_PELVIS_HEIGHT,
    start_xz: tuple[float, float] = (0.0, 0.0),
    variation: float = 1.0,
) -> Motion:
    """Turn by ``angle`` degrees (> 0 = to the left, counter-clockwise seen from above).

    In place (default) the person steps on the spot while the heading eases from
    ``direction`` to ``direction + angle`` over the middle 70 % of the clip; with
    ``walking=True`` the person walks at ``speed`` along the curving path.
    """
    t = frame_times(seconds, fps)
    style = Style.sample(rng, variation)
    ph = float(rng.uniform(0, 1)) if phase is None else float(phase)
    u = smootherstep((t / t[-1] - 0.15) / 0.7) if t[-1] > 0 else np.ones_like(t)
    heading = _heading0(direction) + np.deg2rad(angle) * u
    if walking:
        v = np.full(t.shape, float(speed))
        ip = 0.0
    else:
        v = np.zeros_like(t)
        # step on the spot while turning (plus a short lead-in and settle)
        ip = np.clip(smootherstep((t / t[-1] - 0.05) / 0.15) - smootherstep((t / t[-1] - 0.8) / 0.15), 0, 1)
    return gait_clip(
        fps,
        v,
        heading,
        params=WALK,
        pelvis_height=pelvis_height,
        start_xz=start_xz,
        phase=ph,
        amplitude=amplitude,
        in_place=ip,
        style=style,
        name="turn",
    )


def side_step(
    rng: np.random.Generator,
    seconds: float,
    fps: float,
    *,
    speed: float = 0.5,
    side: int = 1,
    step_width: float = 0.4,
    direction: float = 0.0,
    amplitude: float = 1.0,
    phase: float | None = None,
    pelvis_height: float = REFERENCE_PELVIS_HEIGHT,
    start_xz: tuple[float, float] = (0.0, 0.0),
    variation: float = 1.0,
) -> Motion:
    """Shuffle sideways (facing ``direction``) at ``speed`` m/s; ``side`` +1 = to the body's
    left, -1 = right.  Each cycle the leading leg steps out by ``step_width`` metres and the
    trailing leg closes; the feet stay planted while they carry weight."""
    t = frame_times(seconds, fps)
    style = Style.sample(rng, variation)
    scale = pelvis_height / REFERENCE_PELVIS_HEIGHT
    leg = 0.85 * scale
    width = float(np.clip(step_width, 0.05, 0.9 * leg))
    cycle_hz = max(float(speed), 1e-6) / width
    ph = (float(rng.uniform(0, 1)) if phase is None else float(phase)) + cycle_hz * t
    p = np.mod(ph, 1.0)
    spread = 0.5 - 0.5 * np.cos(2 * np.pi * p)  # 0 feet together, 1 feet apart (at p=0.5)
    theta = np.degrees(np.arcsin(width / (2 * leg))) * amplitude  # hip abduction at full spread
    abd = theta * spread
    lift_lead = np.where(p < 0.5, np.sin(2 * np.pi * p), 0.0)  # swing bump of the leading leg
    lift_trail = np.where(p >= 0.5, -np.sin(2 * np.pi * p), 0.0)
    e = standing_euler(t.shape[0], style)
    lead, trail = ("left", "right") if side >= 0 else ("right", "left")
    knee_base = 12.0 * amplitude  # athletic stance
    lifts = {lead: lift_lead, trail: lift_trail}
    for s in ("left", "right"):
        sgn = 1.0 if s == "left" else -1.0
        e[:, J[f"{s}_hip"], Z] = sgn * abd
        e[:, J[f"{s}_hip"], X] = -(knee_base * 0.6 + 18.0 * amplitude * lifts[s])
        e[:, J[f"{s}_knee"], X] = knee_base + 30.0 * amplitude * lifts[s]
        e[:, J[f"{s}_ankle"], X] = -(knee_base * 0.4) + 6.0 * amplitude * lifts[s]
        e[:, J[f"{s}_ankle"], Z] = -sgn * abd  # keep the sole flat on the floor
    add_bilateral(e, "shoulder", Z, 8.0 * amplitude * spread)  # arms open a little with the legs
    e[:, J["spine3"], X] += 4.0
    # lateral pelvis position: the planted foot stays put (trailing foot in the first half of the
    # cycle, leading foot in the second), so the pelvis moves width/2 per half-cycle
    half = leg * np.sin(np.radians(abd / max(amplitude, 1e-6)))
    k = np.floor(ph) - np.floor(ph[0])
    lat = np.where(p < 0.5, half, width - half) + k * width
    lat -= lat[0]
    h = _heading0(direction)
    side_dir = np.array([np.cos(h), -np.sin(h)]) * (1.0 if side >= 0 else -1.0)
    pos = np.zeros((t.shape[0], 3))
    pos[:, 0] = start_xz[0] + lat * side_dir[0]
    pos[:, 2] = start_xz[1] + lat * side_dir[1]
    root = root_rotvec(np.full(t.shape, h))
    tmp = assemble("side_step", fps, e, root * 0, pos)
    pos[:, 1] = ground_offset(tmp.poses, pelvis_height)
    return assemble("side_step", fps, e, root, pos)
