"""Scenario knobs (:class:`SceneSpec`) and their sampling into a concrete :class:`Scene`.

A scene is a world (y up, ground y = 0) with 1-6 people moving along paths, optional box
occluders (pillars), a procedural background, one directional light and a camera path.
Everything is drawn from ``numpy.random.default_rng(spec.seed)`` in a fixed order, so the
same spec gives the same scene.

Placement uses the people's *apparent size*: a person of height ``h`` at depth ``d`` is
``h * fy / d`` pixels tall, so ``height_frac`` (fraction of the image height) fixes the
depth range.  Motions come from :mod:`hmrflow.priors.motion_library`; paths are made by
rotating/shifting whole motions, and a person who leaves the frame turns around while out
of view (``reenter``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from hmrflow.jobs.synth.camera import CameraPath, intrinsics
from hmrflow.pipeline.errors import ConfigError

PERSON_HEIGHT = 1.7  # nominal height used to turn apparent size into depth (m)
CAMERA_MOTIONS = ("static", "pan", "dolly")


@dataclass(frozen=True)
class SceneSpec:
    """Scenario knobs of one synthetic clip.

    Attributes:
        name: clip name (the video file's stem).
        seed: random seed of everything in the clip.
        people: number of people (1-6 makes sense).
        seconds, fps: duration and frame rate.
        width, height: image size in pixels.
        camera: "static", "pan" (yaw sweep) or "dolly" (the camera translates).
        vfov_deg: vertical field of view range (degrees) sampled uniformly.
        height_frac: range of the people's apparent height as a fraction of the image height
            (0.05 = far, 0.8 = near).
        walkers: fraction of people walking across the view (the others act in place).
        crossing: walkers walk laterally in alternating directions so their paths cross.
        occluders: number of pillars placed to fully hide a walker for ``occlusion_s``.
        occlusion_s: range of full-occlusion durations behind a pillar (seconds).
        reenter: fraction of walkers that leave the frame and come back.
        noise: std of pixel noise added to the frames (0-255 units).
        body_model: body model kind passed to ``load_body_model``.
        cross_pairs: number of close crossings: two walkers on parallel straight paths in
            opposite directions, ``cross_gap`` metres apart perpendicular to their walking
            direction, who pass each other inside the view in the middle of the clip.
        cross_gap: range (m) of the perpendicular distance between the two paths of a crossing.
        cross_angle_deg: the walking direction of a crossing or group deviates from the image's
            x axis by up to this many degrees (0 = purely lateral: one walks in front of the other).
        groups: number of groups walking together: ``group_size`` people side by side, same
            speed and direction, straight paths crossing the view in the middle of the clip.
        group_size: range of people per group (inclusive, drawn per group).
        group_gap: range (m) of the distance between neighbours of a group, perpendicular to
            their walking direction (drawn per neighbour pair).
        shared_palette: every person wears the same colours (one palette per clip) plus
            per-person jitter ``palette_jitter`` (std, albedo units 0-1).
        shared_shape: every person has the same body shape (so similar heights) plus
            per-person jitter ``shape_jitter`` (std of each beta).

    Crossings and groups take their people from ``people`` first (``people`` must be at
    least ``2 * cross_pairs + groups * group_size[1]``); the rest follow ``walkers`` etc.
    """

    name: str = "clip"
    seed: int = 0
    people: int = 2
    seconds: float = 4.0
    fps: float = 30.0
    width: int = 640
    height: int = 480
    camera: str = "static"
    vfov_deg: tuple[float, float] = (45.0, 65.0)
    height_frac: tuple[float, float] = (0.3, 0.6)
    walkers: float = 0.5
    crossing: bool = False
    occluders: int = 0
    occlusion_s: tuple[float, float] = (0.5, 2.0)
    reenter: float = 0.0
    noise: float = 1.5
    body_model: str = "synthetic"
    cross_pairs: int = 0
    cross_gap: tuple[float, float] = (0.3, 0.8)
    cross_angle_deg: float = 15.0
    groups: int = 0
    group_size: tuple[int, int] = (2, 3)
    group_gap: tuple[float, float] = (0.5, 0.8)
    shared_palette: bool = False
    palette_jitter: float = 0.0
    shared_shape: bool = False
    shape_jitter: float = 0.0

    def __post_init__(self) -> None:
        if self.camera not in CAMERA_MOTIONS:
            raise ConfigError(f"scene {self.name!r}: camera must be one of {CAMERA_MOTIONS}, got {self.camera!r}")
        if not (self.people >= 0 and self.seconds > 0 and self.fps > 0 and self.width > 0 and self.height > 0):
            raise ConfigError(f"scene {self.name!r}: people >= 0, seconds, fps, width, height > 0 required")
        if not (0 < self.height_frac[0] <= self.height_frac[1]):
            raise ConfigError(f"scene {self.name!r}: height_frac must be 0 < lo <= hi, got {self.height_frac}")
        for key in ("cross_gap", "group_gap"):
            lo, hi = getattr(self, key)
            if not 0 < lo <= hi:
                raise ConfigError(f"scene {self.name!r}: {key} must be 0 < lo <= hi metres, got {(lo, hi)}")
        if not 2 <= self.group_size[0] <= self.group_size[1]:
            raise ConfigError(f"scene {self.name!r}: group_size must be 2 <= lo <= hi, got {self.group_size}")
        if self.cross_pairs < 0 or self.groups < 0 or self.palette_jitter < 0 or self.shape_jitter < 0:
            raise ConfigError(f"scene {self.name!r}: cross_pairs, groups, palette_jitter and shape_jitter must be >= 0")
        if self.people < self.structured_people:
            raise ConfigError(
                f"scene {self.name!r}: people={self.people} is fewer than the {self.structured_people} that "
                f"{self.cross_pairs} crossing(s) and {self.groups} group(s) of up to {self.group_size[1]} need"
            )

    @property
    def n_frames(self) -> int:
        return int(round(self.seconds * self.fps))

    @property
    def structured_people(self) -> int:
        """The most people crossings and groups can take (2 per crossing, ``group_size[1]`` per group)."""
        return 2 * self.cross_pairs + self.groups * self.group_size[1]

    def to_dict(self) -> dict:
        """JSON-friendly dict (tuples as lists)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "SceneSpec":
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"scene spec: unknown keys {sorted(unknown)} (known: {sorted(names)})")
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})


@dataclass(frozen=True)
class Person:
    """One person of a scene: shape, colours and world-frame motion (before ground placement).

    Attributes:
        person_id: id in the ground truth.
        betas: (10,) shape.
        palette: (n_parts, 3) albedo per body part (see ``hmrflow.stages.render.shading``).
        poses: (F, 24, 3) world axis-angle; trans: (F, 3) world SMPL transl (y is fixed
            later so the feet touch the ground).
        role: "walker", "reenter", "idle", "crossing" (one of a close crossing) or "group".
    """

    person_id: int
    betas: np.ndarray
    palette: np.ndarray
    poses: np.ndarray
    trans: np.ndarray
    role: str


@dataclass(frozen=True)
class Occluder:
    """An axis-aligned-in-yaw box standing on the ground: centre (x, z), size (w, h, d), yaw, colour."""

    centre_xz: tuple[float, float]
    size: tuple[float, float, float]
    yaw: float
    color: tuple[float, float, float]


@dataclass(frozen=True)
class Light:
    """Directional light (world direction toward the light), colour and ambient level."""

    direction: tuple[float, float, float]
    color: tuple[float, float, float]
    ambient: tuple[float, float, float]


@dataclass(frozen=True)
class Scene:
    """A sampled scene: everything needed to render the clip.

    ``extra`` records the layout drawn for crossings and groups (empty without them):
    ``{"crossings": [{"people": [a, b], "gap_m", "heading_deg", "meet_s"}],
    "groups": [{"people": [...], "gaps_m": [...], "heading_deg", "speed_m_s"}]}``, person ids
    as in ``people``; ``heading_deg`` is the walking direction about +y (90 = +x).
    """

    spec: SceneSpec
    K: np.ndarray
    cam_R: np.ndarray
    cam_t: np.ndarray
    people: list[Person]
    occluders: list[Occluder]
    light: Light
    background_seed: int
    wall_radius: tuple[float, float]
    extra: dict = field(default_factory=dict)


IN_PLACE_MOTIONS = (
    "turn",
    "squat",
    "sit_to_stand",
    "lunge",
    "jumping_jacks",
    "arm_raises",
    "bend_and_reach",
    "stand_sway",
)


def _idle_motion(rng: np.random.Generator, seconds: float, fps: float, yaw_deg: float, start_xz: tuple[float, float]):
    """A program of in-place motions (no walking) standing at ``start_xz``."""
    from hmrflow.priors import motion_library as ml

    names = [n for n in IN_PLACE_MOTIONS if n in ml.MOTIONS]
    return ml.compose_motion(rng, seconds, fps, names=names, direction=yaw_deg, start_xz=start_xz)


def _path_motion(
    rng: np.random.Generator, seconds: float, fps: float, start_xz, goal_xz, on_arrival: str, speed: float
):
    """Walk from ``start_xz`` to ``goal_xz`` (``on_arrival`` "return" walks back and forth)."""
    from hmrflow.priors import motion_library as ml

    return ml.random_path_motion(
        rng,
        seconds,
        fps,
        tuple(start_xz),
        tuple(goal_xz),
        speed=speed,
        waypoints=int(rng.integers(0, 2)),
        wander=0.5,
        on_arrival=on_arrival,
    )


def _fix_length(poses: np.ndarray, trans: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut or pad (repeat the last frame) to exactly ``n`` frames."""
    if poses.shape[0] >= n:
        return poses[:n], trans[:n]
    pad = n - poses.shape[0]
    return np.concatenate([poses, np.repeat(poses[-1:], pad, 0)]), np.concatenate(
        [trans, np.repeat(trans[-1:], pad, 0)]
    )


def sample_betas(rng: np.random.Generator, scale: float = 2.0) -> np.ndarray:
    """(10,) float32 shape coefficients within about +-scale std (first ones vary most)."""
    b = rng.normal(0.0, 0.8, size=10) * np.array([1.2, 1.0, 0.8, 0.7, 0.6, 0.5, 0.5, 0.4, 0.4, 0.4])
    return np.clip(b, -scale, scale).astype(np.float32)


def sample_light(rng: np.random.Generator) -> Light:
    """A sun-like light from above with random azimuth, intensity and colour temperature."""
    from hmrflow.stages.render.shading import color_temperature_rgb

    az, el = rng.uniform(0, 2 * math.pi), rng.uniform(math.radians(20), math.radians(80))
    d = (math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az))
    tint = color_temperature_rgb(rng.uniform(2800, 9000))
    inten = rng.uniform(0.45, 0.9)
    amb = rng.uniform(0.25, 0.5)
    return Light(d, tuple(float(x) for x in tint * inten), tuple(float(x) for x in (0.6 + 0.4 * tint) * amb))


def sample_scene(spec: SceneSpec) -> Scene:
    """Sample a concrete scene from its knobs (deterministic in ``spec.seed``)."""
    from hmrflow.stages.render.shading import sample_palette

    rng = np.random.default_rng(spec.seed)
    n = spec.n_frames
    duration = n / spec.fps
    vfov = rng.uniform(*spec.vfov_deg)
    K = intrinsics(spec.width, spec.height, vfov)
    fy = K[1, 1]
    half_w_tan = (spec.width / 2) / K[0, 0]  # tan of the half horizontal fov
    cam_h = rng.uniform(1.0, 2.2)
    depth_of = lambda frac: PERSON_HEIGHT * fy / (frac * spec.height)  # noqa: E731
    d_near, d_far = depth_of(spec.height_frac[1]), depth_of(spec.height_frac[0])
    look_depth = 0.5 * (d_near + d_far)
    target = (0.0, min(1.0, cam_h), look_depth)
    start = (0.0, cam_h, 0.0)
    end = start
    pan_deg = 0.0
    if spec.camera == "pan":
        pan_deg = float(rng.uniform(10, 30))
    elif spec.camera == "dolly":
        step = rng.uniform(-0.25, 0.25) * look_depth
        end = (float(rng.uniform(-0.3, 0.3) * look_depth), cam_h, float(step))
    path = CameraPath(start, end, target, pan_deg=pan_deg, pan_period_s=float(rng.uniform(6, 12)))
    cam_R, cam_t = path.extrinsics(np.arange(n) / spec.fps, duration)

    # one shared look per clip (twins); drawn only when asked so other scenes keep their draws
    shared_betas = sample_betas(rng) if spec.shared_shape else None
    shared_pal = sample_palette(rng) if spec.shared_palette else None

    def look() -> tuple[np.ndarray, np.ndarray]:
        """(10,) betas and (n_parts, 3) palette of the next person."""
        if shared_betas is None:
            betas = sample_betas(rng)
        else:
            betas = (shared_betas + rng.normal(0.0, spec.shape_jitter, size=10)).astype(np.float32)
        if shared_pal is None:
            palette = sample_palette(rng)
        else:
            jitter = rng.normal(0.0, spec.palette_jitter, size=shared_pal.shape)
            palette = np.clip(shared_pal + jitter, 0.0, 1.0).astype(np.float32)
        return betas, palette

    people: list[Person] = []
    extra: dict = {}
    log_depth = (float(np.log(d_near)), float(np.log(d_far)))
    for _ in range(spec.cross_pairs):
        extra.setdefault("crossings", []).append(_sample_crossing(rng, spec, people, log_depth, half_w_tan, look))
    for _ in range(spec.groups):
        extra.setdefault("groups", []).append(_sample_group(rng, spec, people, log_depth, half_w_tan, look))

    n_free = spec.people - len(people)
    n_walk = int(round(spec.walkers * n_free))
    n_reenter = int(round(spec.reenter * n_walk)) if n_walk else 0
    roles = ["reenter"] * n_reenter + ["walker"] * (n_walk - n_reenter) + ["idle"] * (n_free - n_walk)
    walker_paths: list[tuple[float, float, float, float]] = []  # depth, x0, direction, speed
    for pid, role in enumerate(roles, start=len(people)):
        betas, palette = look()
        depth = float(np.exp(rng.uniform(np.log(d_near), np.log(d_far))))
        half_w = depth * half_w_tan  # half the visible width at this depth
        if role == "idle":
            if spec.occluders:  # keep idle people out of the pillars' shadows (near the centre)
                x = float(rng.choice([-1.0, 1.0])) * rng.uniform(0.45, 0.85) * half_w
            else:
                x = rng.uniform(-0.7, 0.7) * half_w
            m = _idle_motion(rng, duration, spec.fps, float(rng.uniform(-180, 180)), (x, depth))
        else:
            direction = (1.0 if pid % 2 == 0 else -1.0) if spec.crossing else float(rng.choice([-1.0, 1.0]))
            speed = float(rng.uniform(0.9, 1.5))
            dz = float(rng.uniform(-0.15, 0.15)) * depth  # slightly oblique path
            if role == "reenter":
                # start inside the view, walk 1.5 m past the image edge, turn and come back
                x0 = direction * rng.uniform(-0.5, 0.3) * half_w
                goal_x = direction * (half_w + 1.5)
                m = _path_motion(rng, duration, spec.fps, (x0, depth), (goal_x, depth + dz), "return", speed)
            else:
                dist = speed * duration
                x0 = -direction * 0.5 * dist * rng.uniform(0.6, 1.2) + rng.uniform(-0.2, 0.2) * half_w
                m = _path_motion(
                    rng,
                    duration,
                    spec.fps,
                    (x0, depth - dz / 2),
                    (x0 + direction * dist, depth + dz / 2),
                    "continue",
                    speed,
                )
                walker_paths.append((depth, x0, direction, speed))
        poses, trans = _fix_length(m.poses, m.trans, n)
        people.append(Person(pid, betas, palette, poses.astype(np.float32), trans.astype(np.float32), role))

    occluders: list[Occluder] = []
    for i in range(spec.occluders):
        if not walker_paths:
            break
        depth, x0, direction, speed = walker_paths[i % len(walker_paths)]
        t_occ = rng.uniform(*spec.occlusion_s)
        d_p = depth * rng.uniform(0.4, 0.7)
        # a pillar of width w at depth d_p hides w * depth / d_p of the walker's line;
        # the body (about 0.5 m wide) is fully hidden for (that - 0.5) / speed seconds
        width = (speed * t_occ + 0.6) * d_p / depth
        x_mid = x0 + direction * speed * duration * rng.uniform(0.35, 0.65)
        occluders.append(
            Occluder(
                (float(x_mid * d_p / depth), float(d_p)),
                (float(width), float(max(cam_h, 2.0) + rng.uniform(0.5, 2.0)), float(rng.uniform(0.2, 0.6))),
                0.0,
                tuple(float(c) for c in rng.uniform(0.2, 0.8, size=3)),
            )
        )
    light = sample_light(rng)
    bg_seed = int(rng.integers(0, 2**31 - 1))
    wall_lo = max(12.0, d_far * 1.5 + 3.0)
    return Scene(spec, K, cam_R, cam_t, people, occluders, light, bg_seed, (wall_lo, wall_lo * 2.0), extra)


def _straight_walk(
    rng: np.random.Generator,
    spec: SceneSpec,
    start_xz: np.ndarray,
    heading_xz: np.ndarray,
    speed: float,
) -> tuple[np.ndarray, np.ndarray]:
    """A straight walk at constant ``speed`` from ``start_xz`` along unit ``heading_xz`` (2,) (x, z).

    Returns (F, 24, 3) poses and (F, 3) trans.  The goal lies 2 m beyond where the clip
    ends so the walker never reaches it (and never turns).
    """
    from hmrflow.priors import motion_library as ml

    n = spec.n_frames
    duration = n / spec.fps
    goal = start_xz + heading_xz * (speed * duration + 2.0)
    m = ml.random_path_motion(
        rng,
        duration,
        spec.fps,
        (float(start_xz[0]), float(start_xz[1])),
        (float(goal[0]), float(goal[1])),
        speed=speed,
        waypoints=0,
        on_arrival="continue",
    )
    poses, trans = _fix_length(m.poses, m.trans, n)
    return poses.astype(np.float32), trans.astype(np.float32)


def _axes(rng: np.random.Generator, max_angle_deg: float) -> tuple[np.ndarray, np.ndarray, float]:
    """A mostly lateral walking direction: unit (x, z) ``u``, its perpendicular ``v`` (pointing
    away from the camera, +z) and the heading in degrees about +y (90 = +x)."""
    sign = float(rng.choice([-1.0, 1.0]))
    a = math.radians(float(rng.uniform(-max_angle_deg, max_angle_deg)))
    u = sign * np.array([math.cos(a), math.sin(a)])
    v = np.array([-math.sin(a), math.cos(a)])
    return u, v, math.degrees(math.atan2(u[0], u[1]))


def _path_depth(rng: np.random.Generator, log_depth: tuple[float, float], reach: float) -> float:
    """Depth (m) of a straight path's middle, log-uniform in the scene's depth range but at
    least ``reach`` beyond its near end, so an oblique path (or a group's near member) never
    comes closer than the nearest allowed depth (people would leave the image at the bottom)."""
    lo = max(log_depth[0], float(np.log(np.exp(log_depth[0]) + reach)))
    return float(np.exp(rng.uniform(lo, max(lo, log_depth[1]))))


def _sample_crossing(
    rng: np.random.Generator,
    spec: SceneSpec,
    people: list[Person],
    log_depth: tuple[float, float],
    half_w_tan: float,
    look: Callable[[], tuple[np.ndarray, np.ndarray]],
) -> dict:
    """Append a close crossing (two walkers) to ``people``; return its layout record.

    The two walk in opposite directions on parallel lines ``gap`` metres apart and pass each
    other at the meeting point (inside the view, at 35-65 % of the clip), where the nearer
    one covers much of the other in the image.
    """
    duration = spec.n_frames / spec.fps
    u, v, heading = _axes(rng, spec.cross_angle_deg)
    gap = float(rng.uniform(*spec.cross_gap))
    t_meet = float(rng.uniform(0.35, 0.65)) * duration
    speeds = rng.uniform(0.9, 1.5, size=2)
    reach = abs(u[1]) * float(speeds.max()) * max(t_meet, duration - t_meet) + gap / 2
    depth = _path_depth(rng, log_depth, reach)
    meet = np.array([rng.uniform(-0.3, 0.3) * depth * half_w_tan, depth])
    ids = []
    # the walker on the near line (side -1) walks along u, the other against it
    for side, speed in zip((-1.0, 1.0), speeds.tolist()):
        betas, palette = look()
        direction = u * -side
        start = meet + side * v * gap / 2 - direction * speed * t_meet
        poses, trans = _straight_walk(rng, spec, start, direction, speed)
        ids.append(len(people))
        people.append(Person(len(people), betas, palette, poses, trans, "crossing"))
    return {"people": ids, "gap_m": gap, "heading_deg": heading, "meet_s": t_meet}


def _sample_group(
    rng: np.random.Generator,
    spec: SceneSpec,
    people: list[Person],
    log_depth: tuple[float, float],
    half_w_tan: float,
    look: Callable[[], tuple[np.ndarray, np.ndarray]],
) -> dict:
    """Append a group walking together to ``people``; return its layout record.

    ``size`` people side by side (neighbours ``group_gap`` apart perpendicular to the walking
    direction), same speed and heading, on straight lines; the group's centre crosses the
    middle of the view at 35-65 % of the clip.
    """
    duration = spec.n_frames / spec.fps
    size = int(rng.integers(spec.group_size[0], spec.group_size[1] + 1))
    u, v, heading = _axes(rng, spec.cross_angle_deg)
    gaps = rng.uniform(*spec.group_gap, size=size - 1)
    offsets = np.concatenate([[0.0], np.cumsum(gaps)])
    offsets -= offsets.mean()  # centred on the group's line
    t_mid = float(rng.uniform(0.35, 0.65)) * duration
    speed = float(rng.uniform(0.9, 1.4))
    reach = abs(u[1]) * speed * max(t_mid, duration - t_mid) + float(-offsets.min()) * abs(v[1])
    depth = _path_depth(rng, log_depth, reach)
    centre = np.array([rng.uniform(-0.3, 0.3) * depth * half_w_tan, depth])
    ids = []
    for off in offsets:
        betas, palette = look()
        start = centre + v * off - u * speed * t_mid
        poses, trans = _straight_walk(rng, spec, start, u, speed)
        ids.append(len(people))
        people.append(Person(len(people), betas, palette, poses, trans, "group"))
    return {"people": ids, "gaps_m": [float(g) for g in gaps], "heading_deg": heading, "speed_m_s": speed}
