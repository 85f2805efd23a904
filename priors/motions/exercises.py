"""Motions on the spot: squat, sit_to_stand, lunge, jumping_jacks, arm_raises, bend_and_reach,
stand_sway.

Each is built facing +z at the origin, then rotated to ``direction`` (degrees about +y) and
moved to ``start_xz``.  Legs are posed in the sagittal plane with the feet kept flat (ankle
angle = minus the sum of the pelvis, hip and knee pitches) and the root translation comes
from the rest skeleton (:func:`~hmrflow.priors.motions.kinematics.plant_feet`): the lowest
foot point stays on the ground and the planted foot does not slide, so squatting lowers the
pelvis by the amount the leg angles imply and moves it back over the heels.
"""

from __future__ import annotations

import numpy as np

from hmrflow.priors.motions.core import Motion, smootherstep
from hmrflow.priors.motions.kinematics import REFERENCE_PELVIS_HEIGHT, plant_feet
from hmrflow.priors.motions.posing import (
    J,
    Style,
    X,
    Y,
    Z,
    add_bilateral,
    assemble,
    frame_times,
    rep_profile,
    root_rotvec,
    set_bilateral,
    standing_euler,
)
from hmrflow.priors.skeleton import N_JOINTS


def _finish(
    name: str,
    fps: float,
    e: np.ndarray,
    tilt_deg: np.ndarray,
    *,
    pelvis_height: float,
    direction: float,
    start_xz: tuple[float, float],
    anchor: tuple[int, ...] | np.ndarray | None = None,
    roll_deg: np.ndarray | float = 0.0,
    yaw_deg: np.ndarray | float = 0.0,
    lift: np.ndarray | None = None,
    labels: object = None,
) -> Motion:
    """Root orientation (tilt/roll/yaw, heading 0), planted feet, then rotate/shift into place."""
    n = e.shape[0]
    root = root_rotvec(np.zeros(n), tilt_deg=tilt_deg, yaw_deg=yaw_deg, roll_deg=roll_deg)
    m = assemble(name, fps, e, root, np.zeros((n, 3)), labels)
    trans = plant_feet(m.poses, pelvis_height, anchor)
    if lift is not None:
        trans[:, 1] += lift
    m = Motion(name, fps, m.poses, trans, m.labels)
    return m.transformed(float(np.deg2rad(direction)), start_xz)


def _sagittal_legs(
    e: np.ndarray,
    side: str,
    thigh: np.ndarray,
    knee: np.ndarray,
    tilt: np.ndarray,
    foot_pitch: np.ndarray | float = 0.0,
) -> None:
    """Pose one leg from world-frame angles (degrees).

    ``thigh``: forward angle of the thigh from vertical; ``knee``: flexion; ``tilt``: forward tilt
    of the pelvis; ``foot_pitch``: toes-down angle of the foot in the world (0 = flat).
    """
    j = lambda s: J[f"{side}_{s}"]  # noqa: E731
    hip_x = -(thigh + tilt)
    e[:, j("hip"), X] = hip_x
    e[:, j("knee"), X] = knee
    e[:, j("ankle"), X] = foot_pitch - (tilt + hip_x + knee)


def squat(
    rng: np.random.Generator,
    seconds: float,
    fps: float,
    *,
    depth: float = 100.0,
    period: float = 2.5,
    hold: float = 0.15,
    arms: str = "forward",
    phase: float = 0.0,
    amplitude: float = 1.0,
    direction: float = 0.0,
    pelvis_height: float = REFERENCE_PELVIS_HEIGHT,
    start_xz: tuple[float, float] = (0.0, 0.0),
    variation: float = 1.0,
) -> Motion:
    """Repeated bodyweight squats.

    ``depth``: knee flexion at the bottom (deg, clipped to 20..115); ``period``: seconds per
    repetition; ``hold``: fraction of the period held at the top and at the bottom;
    ``arms``: "forward" (raised for balance), "down" or "hips"; ``phase``: cycles at frame 0
    (0 = standing, 0.5 = at the bottom).
    """
    t = frame_times(seconds, fps)
    style = Style.sample(rng, variation)
    depth = float(np.clip(depth * amplitude, 20.0, 115.0))
    u = rep_profile(phase + t / period, hold)
    k = depth * u
    d = 30.0 * (1.0 - np.exp(-k / 60.0))  # shank forward lean (knees travel over the toes)
    tilt = 0.25 * k
    e = standing_euler(t.shape[0], style)
    for side in ("left", "right"):
        _sagittal_legs(e, side, k - d, k, tilt)
    for jn in ("spine1", "spine2", "spine3"):
        e[:, J[jn], X] -= 2.0 * u  # chest up
    e[:, J["neck"], X] -= 0.3 * tilt
    e[:, J["head"], X] -= 0.4 * tilt
    if arms == "forward":
        set_bilateral(e, "shoulder", X, -85.0 * u)
        add_bilateral(e, "shoulder", Z, 10.0 * u)
    elif arms == "hips":
        set_bilateral(e, "shoulder", X, np.full_like(u, -10.0))
        add_bilateral(e, "shoulder", Z, np.full_like(u, 20.0))
        set_bilateral(e, "elbow", Y, np.full_like(u, -80.0))
    elif arms != "down":
        raise ValueError(f"squat: arms must be 'forward', 'down' or 'hips', got {arms!r}")
    return _finish("squat", fps, e, tilt, pelvis_height=pelvis_height, direction=direction, start_xz=start_xz)


def _phase_labels(u: np.ndarray, low: str, rising: str, high: str, falling: str) -> np.ndarray:
    """Per-frame names of a 0..1 profile: resting low/high, or moving up/down."""
    du = np.gradient(u)
    lab = np.where(u < 0.02, low, np.where(u > 0.98, high, np.where(du >= 0, rising, falling)))
    return lab.astype(object)


def sit_to_stand(
    rng: np.random.Generator,
    seconds: float,
    fps: float,
    *,
    start: str = "sit",
    period: float = 5.0,
    seat_knee: float = 90.0,
    hold: float = 0.2,
    direction: float = 0.0,
    pelvis_height: float = REFERENCE_PELVIS_HEIGHT,
    start_xz: tuple[float, float] = (0.0, 0.0),
    variation: float = 1.0,
) -> Motion:
    """Stand up from a seated posture and sit back down (no chair needed: the pelvis stays at
    seat height while sitting).

    ``start``: "sit" (sit, stand up, stand, sit down) or "stand" (the same cycle shifted by
    half); ``period``: seconds per full sit-stand-sit cycle; ``seat_knee``: knee
    flexion when seated (deg, 70..110; ~90 for a 45 cm seat); ``hold``: fraction of the
    cycle spent sitting and standing each.  Labels: sit / stand_up / stand / sit_down.
    """
    if start not in ("sit", "stand"):
        raise ValueError(f"sit_to_stand: start must be 'sit' or 'stand', got {start!r}")
    t = frame_times(seconds, fps)
    style = Style.sample(rng, variation)
    period = float(period)
    u = rep_profile(t / period + (0.0 if start == "sit" else 0.5), hold)  # 0 seated, 1 standing
    seat = float(np.clip(seat_knee, 70.0, 110.0))
    # 1) lean the trunk forward while still seated, 2) extend hips and knees, 3) straighten up
    lean = 38.0 * np.sin(np.pi * np.clip(u / 0.8, 0, 1)) ** 1.5
    tilt = -5.0 * (1.0 - u) + lean
    k = seat * (1.0 - smootherstep((u - 0.15) / 0.85))
    d = 12.0 * np.sin(np.pi * np.clip((u - 0.1) / 0.8, 0, 1))  # knees move over the toes
    thigh = k - d
    e = standing_euler(t.shape[0], style)
    for side in ("left", "right"):
        _sagittal_legs(e, side, thigh, k, tilt)
    add_bilateral(e, "hip", Z, 5.0 * (1.0 - u))  # knees a little apart when seated
    set_bilateral(e, "shoulder", X, -(20.0 * (1.0 - u) + 25.0 * np.sin(np.pi * u) ** 2))
    set_bilateral(e, "elbow", Y, -(style.elbow_rest_deg + 45.0 * (1.0 - u)))
    e[:, J["neck"], X] -= 0.3 * np.maximum(tilt, 0)
    e[:, J["head"], X] -= 0.3 * np.maximum(tilt, 0)
    labels = _phase_labels(u, "sit", "stand_up", "stand", "sit_down")
    return _finish(
        "sit_to_stand", fps, e, tilt, pelvis_height=pelvis_height, direction=direction, start_xz=start_xz, labels=labels
    )


def lunge(
    rng: np.random.Generator,
    seconds: float,
    fps: float,
    *,
    depth: float = 90.0,
    period: float = 3.0,
    hold: float = 0.1,
    lead: str = "alternate",
    phase: float = 0.0,
    amplitude: float = 1.0,
    direction: float = 0.0,
    pelvis_height: float = REFERENCE_PELVIS_HEIGHT,
    start_xz: tuple[float, float] = (0.0, 0.0),
    variation: float = 1.0,
) -> Motion:
    """Forward lunges: step forward, lower until the front knee bends ``depth`` degrees (clipped
    to 30..100), push back to standing.  ``lead``: "left", "right" or "alternate" (per rep);
    the back foot stays planted and rolls onto its toes."""
    if lead not in ("left", "right", "alternate"):
        raise ValueError(f"lunge: lead must be 'left', 'right' or 'alternate', got {lead!r}")
    t = frame_times(seconds, fps)
    n = t.shape[0]
    style = Style.sample(rng, variation)
    depth = float(np.clip(depth * amplitude, 30.0, 100.0))
    cyc = phase + t / period
    u = rep_profile(cyc, hold)
    rep = np.floor(cyc).astype(np.int64)
    if lead == "alternate":
        front_left = rep % 2 == 0
    else:
        front_left = np.full(n, lead == "left")
    s = u * depth / 90.0
    tilt = 5.0 * s
    # the front foot lifts while it travels (first/last part of the movement)
    lift = np.sin(np.pi * np.clip(u / 0.55, 0, 1))
    f_thigh = 80.0 * s + 15.0 * lift
    f_knee = 90.0 * s + 30.0 * lift
    b_thigh = -8.0 * s
    b_knee = 78.0 * s
    b_pitch = np.maximum(56.0 * smootherstep(s / 0.8), 86.0 * s - 33.0)  # back heel rises (ankle <= 33 deg)
    e = standing_euler(n, style)
    for side, is_front in (("left", front_left), ("right", ~front_left)):
        _sagittal_legs(
            e,
            side,
            np.where(is_front, f_thigh, b_thigh),
            np.where(is_front, f_knee, b_knee),
            tilt,
            foot_pitch=np.where(is_front, -10.0 * lift, b_pitch),
        )
        e[:, J[f"{side}_foot"], X] = np.where(is_front, 0.0, -40.0 * smootherstep(s / 0.8))
    set_bilateral(e, "elbow", Y, -(style.elbow_rest_deg + 20.0 * s))
    add_bilateral(e, "shoulder", X, -10.0 * s)
    # planted point: the ball of the back foot
    w = np.zeros((n, N_JOINTS))
    w[front_left, J["right_foot"]] = 1.0
    w[~front_left, J["left_foot"]] = 1.0
    return _finish("lunge", fps, e, tilt, pelvis_height=pelvis_height, direction=direction, start_xz=start_xz, anchor=w)


def jumping_jacks(
    rng: np.random.Generator,
    seconds: float,
    fps: float,
    *,
    rate: float = 1.1,
    hop_height: float = 0.06,
    leg_spread: float = 12.0,
    arm_top: float = 80.0,
    phase: float = 0.0,
    amplitude: float = 1.0,
    direction: float = 0.0,
    pelvis_height: float = REFERENCE_PELVIS_HEIGHT,
    start_xz: tuple[float, float] = (0.0, 0.0),
    variation: float = 1.0,
) -> Motion:
    """Jumping jacks at ``rate`` jacks per second: hop the feet apart (hip abduction
    ``leg_spread`` deg each) while the arms swing up sideways above the head (shoulder z up to
    ``arm_top`` deg above the T-pose), then back.  ``hop_height``: flight height (m)."""
    t = frame_times(seconds, fps)
    n = t.shape[0]
    style = Style.sample(rng, variation)
    cyc = phase + rate * t
    u = 0.5 - 0.5 * np.cos(2 * np.pi * cyc)  # 0 closed, 1 open
    e = standing_euler(n, style)
    hang = style.arm_hang_deg
    top = float(np.clip(arm_top, 0.0, 95.0))
    set_bilateral(e, "shoulder", Z, -hang + (hang + top) * amplitude * u)
    set_bilateral(e, "collar", Z, 15.0 * amplitude * u)
    set_bilateral(e, "elbow", Y, -(style.elbow_rest_deg + 5.0 * u))
    spread = float(np.clip(leg_spread, 0.0, 25.0)) * amplitude * u
    land = np.cos(2 * np.pi * cyc) ** 2  # 1 at landing (closed or open), 0 mid-flight
    knee = 8.0 + 18.0 * land * amplitude
    for side in ("left", "right"):
        _sagittal_legs(e, side, 0.45 * knee, knee, np.zeros(n))
    add_bilateral(e, "hip", Z, spread)
    add_bilateral(e, "ankle", Z, -spread)  # soles stay flat
    flight = hop_height * amplitude * np.sin(2 * np.pi * cyc) ** 2
    return _finish(
        "jumping_jacks",
        fps,
        e,
        np.zeros(n),
        pelvis_height=pelvis_height,
        direction=direction,
        start_xz=start_xz,
        lift=flight,
    )


def arm_raises(
    rng: np.random.Generator,
    seconds: float,
    fps: float,
    *,
    plane: str = "side",
    height: float = 160.0,
    period: float = 3.0,
    hold: float = 0.15,
    alternate: bool = False,
    phase: float = 0.0,
    amplitude: float = 1.0,
    direction: float = 0.0,
    pelvis_height: float = REFERENCE_PELVIS_HEIGHT,
    start_xz: tuple[float, float] = (0.0, 0.0),
    variation: float = 1.0,
) -> Motion:
    """Raise the straight arms from the sides by ``height`` degrees (90 = shoulder level,
    ~160 = overhead; clipped to 20..165) in the "side" (abduction) or "front" (flexion)
    plane; ``alternate`` raises one arm per repetition."""
    if plane not in ("side", "front"):
        raise ValueError(f"arm_raises: plane must be 'side' or 'front', got {plane!r}")
    t = frame_times(seconds, fps)
    n = t.shape[0]
    style = Style.sample(rng, variation)
    cyc = phase + t / period
    u = rep_profile(cyc, hold) * amplitude
    hgt = float(np.clip(height, 20.0, 165.0))
    if alternate:
        left_on = np.floor(cyc).astype(np.int64) % 2 == 0
        ul, ur = np.where(left_on, u, 0.0), np.where(left_on, 0.0, u)
    else:
        ul = ur = u
    e = standing_euler(n, style)
    hang = style.arm_hang_deg
    elev = lambda v: 15.0 * np.clip((v * hgt - 90.0) / 70.0, 0, 1)  # noqa: E731  collar helps overhead
    if plane == "side":
        # from hanging (z = -hang) by `height` minus the hang's offset from vertical
        rise = lambda v: v * (hgt - (90.0 - hang)) - elev(v)  # noqa: E731
        set_bilateral(e, "shoulder", Z, -hang + rise(ul), -hang + rise(ur))
    else:
        set_bilateral(e, "shoulder", X, -(ul * hgt - elev(ul)), -(ur * hgt - elev(ur)))
        set_bilateral(e, "shoulder", Z, -hang + 10.0 * ul, -hang + 10.0 * ur)
    set_bilateral(e, "collar", Z, elev(ul), elev(ur))
    set_bilateral(e, "elbow", Y, -0.5 * style.elbow_rest_deg * np.ones(n))
    e[:, J["spine3"], X] -= 3.0 * np.maximum(ul, ur)  # slight arch with the arms overhead
    return _finish(
        "arm_raises", fps, e, np.zeros(n), pelvis_height=pelvis_height, direction=direction, start_xz=start_xz
    )


def bend_and_reach(
    rng: np.random.Generator,
    seconds: float,
    fps: float,
    *,
    depth: float = 75.0,
    reach: str = "alternate",
    period: float = 3.5,
    hold: float = 0.15,
    phase: float = 0.0,
    amplitude: float = 1.0,
    direction: float = 0.0,
    pelvis_height: float = REFERENCE_PELVIS_HEIGHT,
    start_xz: tuple[float, float] = (0.0, 0.0),
    variation: float = 1.0,
) -> Motion:
    """Bend forward by ``depth`` degrees of trunk flexion (clipped to 10..110; hips 60 %, spine
    40 %) and reach down with the arms, then straighten.  ``reach``: "down" (both hands to
    the floor), "alternate" (each rep twists to reach towards the opposite foot)."""
    if reach not in ("down", "alternate"):
        raise ValueError(f"bend_and_reach: reach must be 'down' or 'alternate', got {reach!r}")
    t = frame_times(seconds, fps)
    n = t.shape[0]
    style = Style.sample(rng, variation)
    cyc = phase + t / period
    u = rep_profile(cyc, hold)
    flex = float(np.clip(depth * amplitude, 10.0, 110.0)) * u
    tilt = 0.6 * flex
    k = 20.0 * u  # soft knees; shank vertical, hips travel back over the heels
    e = standing_euler(n, style)
    for side in ("left", "right"):
        _sagittal_legs(e, side, k, k, tilt)
    for jn in ("spine1", "spine2", "spine3"):
        e[:, J[jn], X] += 0.4 * flex / 3.0
    e[:, J["neck"], X] -= 0.25 * flex
    twist = np.zeros(n)
    if reach == "alternate":
        sgn = np.where(np.floor(cyc).astype(np.int64) % 2 == 0, 1.0, -1.0)  # + = reach with the right hand
        twist = 25.0 * u * sgn
        for jn in ("spine1", "spine2", "spine3"):
            e[:, J[jn], Y] += twist / 3.0
    # arms hang towards the floor: shoulder flexion follows the trunk; the reaching arm goes further
    reach_l = flex * 0.9 + np.where(twist < 0, 15.0, 0.0) * u
    reach_r = flex * 0.9 + np.where(twist > 0, 15.0, 0.0) * u
    set_bilateral(e, "shoulder", X, -reach_l, -reach_r)
    add_bilateral(e, "shoulder", Z, 12.0 * u)
    set_bilateral(e, "elbow", Y, -style.elbow_rest_deg * (1.0 - 0.5 * u))
    return _finish("bend_and_reach", fps, e, tilt, pelvis_height=pelvis_height, direction=direction, start_xz=start_xz)


def _smooth_noise(
    rng: np.random.Generator, t: np.ndarray, freq_hz: tuple[float, float], n_waves: int = 3
) -> np.ndarray:
    """Band-limited random signal in about [-1, 1]: a sum of sinusoids with random frequencies."""
    out = np.zeros_like(t)
    for _ in range(n_waves):
        f = rng.uniform(*freq_hz)
        out += np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    return out / n_waves


def stand_sway(
    rng: np.random.Generator,
    seconds: float,
    fps: float,
    *,
    amplitude: float = 1.0,
    period: float = 5.0,
    look_around: float = 20.0,
    phase: float | None = None,
    direction: float = 0.0,
    pelvis_height: float = REFERENCE_PELVIS_HEIGHT,
    start_xz: tuple[float, float] = (0.0, 0.0),
    variation: float = 1.0,
) -> Motion:
    """Idle standing: slow side-to-side weight shifts (``period`` s; the unloaded knee
    relaxes), breathing, small arm drift and the head looking around by up to
    ``look_around`` degrees."""
    t = frame_times(seconds, fps)
    n = t.shape[0]
    style = Style.sample(rng, variation)
    ph = float(rng.uniform(0, 1)) if phase is None else float(phase)
    shift = np.sin(2 * np.pi * (ph + t / period)) * amplitude  # +1 = weight on the left leg
    e = standing_euler(n, style)
    abd = 3.0 * shift
    set_bilateral(e, "hip", Z, -abd, abd)  # pelvis slides over the loaded leg
    set_bilateral(e, "ankle", Z, abd, -abd)
    knee_l = 7.0 * np.clip(-shift, 0, None) ** 2 + 2.0
    knee_r = 7.0 * np.clip(shift, 0, None) ** 2 + 2.0
    for side, kn in (("left", knee_l), ("right", knee_r)):
        _sagittal_legs(e, side, 0.5 * kn, kn, np.zeros(n))
    roll = 2.0 * shift  # the unloaded side drops
    breathe = np.sin(2 * np.pi * 0.25 * t + rng.uniform(0, 2 * np.pi))
    e[:, J["spine3"], X] -= 1.0 * breathe
    e[:, J["spine2"], Z] -= 1.5 * shift
    e[:, J["neck"], Y] = 0.4 * look_around * _smooth_noise(rng, t, (0.05, 0.2))
    e[:, J["head"], Y] = 0.6 * look_around * _smooth_noise(rng, t, (0.05, 0.2))
    e[:, J["head"], X] += 6.0 * _smooth_noise(rng, t, (0.05, 0.15))
    add_bilateral(
        e, "shoulder", X, -4.0 * _smooth_noise(rng, t, (0.05, 0.2)), -4.0 * _smooth_noise(rng, t, (0.05, 0.2))
    )
    add_bilateral(e, "elbow", Y, -5.0 * (1 + _smooth_noise(rng, t, (0.05, 0.2))))
    w = np.zeros((n, N_JOINTS))  # the loaded foot is planted
    wl = 0.5 + 0.5 * np.tanh(3.0 * shift)
    w[:, J["left_ankle"]] = wl
    w[:, J["right_ankle"]] = 1.0 - wl
    return _finish(
        "stand_sway",
        fps,
        e,
        np.zeros(n),
        pelvis_height=pelvis_height,
        direction=direction,
        start_xz=start_xz,
        roll_deg=roll,
        anchor=w,
    )
