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

    def __post_init__(self) -> None:
        if self.camera not in CAMERA_MOTIONS:
            raise ConfigError(f"scene {self.name!r}: camera must be one of {CAMERA_MOTIONS}, got {self.camera!r}")
        if not (self.people >= 0 and self.seconds > 0 and self.fps > 0 and self.width > 0 and self.height > 0):
            raise ConfigError(f"scene {self.name!r}: people >= 0, seconds, fps, width, height > 0 required")
        if not (0 < self.height_frac[0] <= self.height_frac[1]):
            raise ConfigError(f"scene {self.name!r}: height_frac must be 0 < lo <= hi, got {self.height_frac}")

    @property
    def n_frames(self) -> int:
        return int(round(self.seconds * self.fps))

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
        role: "walker", "reenter" or "idle".
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
    """A sampled scene: everything needed to render the clip."""

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

    n_walk = int(round(spec.walkers * spec.people))
    n_reenter = int(round(spec.reenter * n_walk)) if n_walk else 0
    roles = ["reenter"] * n_reenter + ["walker"] * (n_walk - n_reenter) + ["idle"] * (spec.people - n_walk)
    people: list[Person] = []
    walker_paths: list[tuple[float, float, float, float]] = []  # depth, x0, direction, speed
    for pid, role in enumerate(roles):
        betas = sample_betas(rng)
        palette = sample_palette(rng)
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
    return Scene(spec, K, cam_R, cam_t, people, occluders, light, bg_seed, (wall_lo, wall_lo * 2.0))
