"""Synthetic per-frame estimates of walking people, for tracker tests and benchmarks.

People are points moving on the floor in the camera frame (OpenCV: x right, y down,
z forward; camera 1.6 m above the floor); their boxes are a body-sized box
(0.55 m x 1.75 m) projected with a pinhole camera.  A person yields no row when
hidden (explicit windows), out of the image, covered by nearer people, or by a random
dropout; rows carry noisy boxes, a noisy ``cam_t`` (error elongated along the viewing
ray, like monocular depth), noisy betas around the person's own shape and noisy joint
rotations (walking gait, root facing the walking direction).  False detections with
random content can be added.  Everything is drawn from one seeded generator.

This is not the synthetic world of the project (rendered video); it stands in for the
mesh estimator's output so that the tracker can be tested and scored on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation

from hmrflow.pipeline.types import APPEARANCE_DIM, N_BETAS, N_JOINTS, MeshEstimates

#: Pelvis height above the floor and camera height above the floor (metres).
PELVIS_Y = 0.95
CAMERA_Y = 1.6
BODY_W = 0.55
HEAD_ABOVE_PELVIS = 0.8


@dataclass(frozen=True)
class Camera:
    """Pinhole camera: focal length in pixels, image size; principal point at the centre."""

    focal: float = 1000.0
    width: int = 1280
    height: int = 720


@dataclass(frozen=True)
class PersonPath:
    """One person's walk: waypoints ``(t_s, x_m, z_m)`` linearly interpolated.

    The person exists for ``waypoints[0][0] <= t <= waypoints[-1][0]``; ``hidden``
    lists ``(t0, t1)`` windows where nobody can see them (an occluder).
    """

    person_id: int
    waypoints: tuple[tuple[float, float, float], ...]
    hidden: tuple[tuple[float, float], ...] = ()
    betas: tuple[float, ...] | None = None

    def position(self, t: float) -> np.ndarray | None:
        """(3,) root in the camera frame at time ``t``, or None outside the walk."""
        w = np.asarray(self.waypoints, dtype=np.float64)
        if t < w[0, 0] - 1e-9 or t > w[-1, 0] + 1e-9:
            return None
        x = np.interp(t, w[:, 0], w[:, 1])
        z = np.interp(t, w[:, 0], w[:, 2])
        return np.array([x, CAMERA_Y - PELVIS_Y, z])

    def velocity(self, t: float) -> np.ndarray:
        """(2,) floor velocity (x, z) in m/s (forward difference of the waypoints)."""
        eps = 1e-3
        a = self.position(max(t - eps, self.waypoints[0][0]))
        b = self.position(min(t + eps, self.waypoints[-1][0]))
        if a is None or b is None:
            return np.zeros(2)
        return (b - a)[[0, 2]] / (2 * eps)

    def is_hidden(self, t: float) -> bool:
        return any(t0 <= t < t1 for t0, t1 in self.hidden)


@dataclass(frozen=True)
class SimNoise:
    """Noise and nuisance levels of the simulated estimator.

    ``betas`` is the per-estimate noise of every shape coefficient, ``betas_spread`` the
    std of the people's own shapes (smaller = people look more alike).
    ``appearance``: None for rows without appearance descriptors (all zeros, "unknown"), else
    each person gets a random descriptor (:func:`random_descriptor`) and every row mixes a
    fresh random one into it with this weight (0 = identical views); ``same_clothes`` gives all
    people one descriptor.  Appearance draws come from their own generator, so switching them
    on changes nothing else.
    """

    box_rel: float = 0.02
    root_perp_m: float = 0.03
    root_depth_rel: float = 0.05
    betas: float = 0.25
    betas_spread: float = 1.0
    pose_rad: float = 0.08
    miss_prob: float = 0.03
    false_pos_per_frame: float = 0.0
    occluded_above: float = 0.6
    min_in_image: float = 0.4
    appearance: float | None = None
    same_clothes: bool = False


def random_descriptor(rng: np.random.Generator) -> np.ndarray:
    """(APPEARANCE_DIM,) a valid appearance descriptor: per band a hue histogram peaked at a
    random hue, a random lightness histogram, and a mask fraction of 0.8."""
    from hmrflow.stages.track.appearance import BANDS, HUE_BINS, L_BINS, PER_BAND

    out = np.zeros(APPEARANCE_DIM)
    for k in range(len(BANDS)):
        o = k * PER_BAND
        hue = np.exp(3.0 * np.cos(2 * np.pi * (np.arange(HUE_BINS) / HUE_BINS - rng.uniform())))
        light = rng.dirichlet(np.ones(L_BINS))
        out[o : o + HUE_BINS] = hue / hue.sum()
        out[o + HUE_BINS : o + HUE_BINS + L_BINS] = light
        out[o + PER_BAND - 1] = 0.8
    return out


@dataclass(frozen=True)
class SimResult:
    """Estimates plus the truth: ``gt_id`` (N,) int64 is the person of each row (-1 = false)."""

    est: MeshEstimates
    gt_id: np.ndarray
    people: tuple[PersonPath, ...] = field(default=())


def regular_pts(duration_s: float, fps: float) -> np.ndarray:
    """(F,) timestamps of a constant-rate video."""
    return np.arange(int(round(duration_s * fps))) / fps


def vfr_pts(duration_s: float, fps: float, rng: np.random.Generator, spread: float = 2.0) -> np.ndarray:
    """(F,) irregular timestamps: each step is ``1/fps`` times a factor in [1/spread, spread]."""
    steps = np.exp(rng.uniform(-np.log(spread), np.log(spread), size=int(duration_s * fps * 2) + 2)) / fps
    pts = np.concatenate([[0.0], np.cumsum(steps)])
    return pts[pts < duration_s]


def project_box(root: np.ndarray, cam: Camera) -> np.ndarray:
    """(4,) ``xyxy`` of the body box around a root (3,) in the camera frame."""
    x, y, z = root
    cx, cy = cam.width / 2, cam.height / 2
    f = cam.focal
    return np.array(
        [
            f * (x - BODY_W / 2) / z + cx,
            f * (y - HEAD_ABOVE_PELVIS) / z + cy,
            f * (x + BODY_W / 2) / z + cx,
            f * (y + PELVIS_Y) / z + cy,
        ]
    )


def _covered_fraction(box: np.ndarray, covers: list[np.ndarray], n: int = 16) -> float:
    """Fraction of ``box`` covered by the union of ``covers`` (sampled on an n x n grid)."""
    if not covers:
        return 0.0
    gx = np.linspace(box[0], box[2], n)
    gy = np.linspace(box[1], box[3], n)
    X, Y = np.meshgrid(gx, gy)
    inside = np.zeros_like(X, bool)
    for c in covers:
        inside |= (X >= c[0]) & (X <= c[2]) & (Y >= c[1]) & (Y <= c[3])
    return float(inside.mean())


def _pose(
    person: PersonPath, t: float, yaw: float, base: np.ndarray, rng: np.random.Generator, noise: float
) -> np.ndarray:
    """(24, 3, 3) noisy walking pose: root faces ``yaw``; hips/knees/shoulders swing."""
    aa = base.copy()  # (24, 3)
    speed = float(np.linalg.norm(person.velocity(t)))
    phase = 2 * np.pi * t * speed / 1.4
    swing = min(speed / 1.2, 1.0)
    aa[1, 0] += 0.45 * swing * np.sin(phase)  # left hip
    aa[2, 0] -= 0.45 * swing * np.sin(phase)  # right hip
    aa[4, 0] += 0.6 * swing * max(np.sin(phase), 0)  # left knee
    aa[5, 0] += 0.6 * swing * max(-np.sin(phase), 0)  # right knee
    aa[16, 1] -= 0.3 * swing * np.sin(phase)  # shoulders
    aa[17, 1] += 0.3 * swing * np.sin(phase)
    aa[1:] += rng.normal(0, noise, size=(N_JOINTS - 1, 3))
    mats = Rotation.from_rotvec(aa).as_matrix()
    root = Rotation.from_euler("y", yaw) * Rotation.from_euler("x", np.pi)
    root = Rotation.from_rotvec(rng.normal(0, noise, 3)) * root
    mats[0] = root.as_matrix()
    return mats


def simulate(
    people: list[PersonPath] | tuple[PersonPath, ...],
    pts: np.ndarray,
    noise: SimNoise = SimNoise(),
    cam: Camera = Camera(),
    seed: int = 0,
    video_id: str = "sim",
    frame_idx: np.ndarray | None = None,
) -> SimResult:
    """Simulated estimator output for ``people`` seen at timestamps ``pts`` (F,).

    frame_idx: (F,) int64, default ``0..F-1`` (pass e.g. ``3 * arange(F)`` for subsampling).
    Rows are ordered by frame, then randomly within a frame.
    """
    rng = np.random.default_rng(seed)
    pts = np.asarray(pts, dtype=np.float64)
    fidx = np.arange(len(pts), dtype=np.int64) if frame_idx is None else np.asarray(frame_idx, np.int64)
    shapes = {}
    bases = {}
    yaws = {p.person_id: 0.0 for p in people}
    for p in people:
        own = rng.normal(0, noise.betas_spread, N_BETAS)
        shapes[p.person_id] = np.asarray(p.betas, np.float64) if p.betas is not None else own
        bases[p.person_id] = rng.normal(0, 0.1, (N_JOINTS, 3))
    app_rng = np.random.default_rng([seed, 7])
    looks: dict[int, np.ndarray] = {}
    if noise.appearance is not None:
        shared = random_descriptor(app_rng)
        for p in people:
            looks[p.person_id] = shared if noise.same_clothes else random_descriptor(app_rng)
    cols: dict[str, list] = {
        k: [] for k in ("frame_idx", "pts", "boxes_xyxy", "scores", "rotmats", "betas", "cam_t", "focal", "confidence")
    }
    app_rows: list[np.ndarray] = []
    gt: list[int] = []
    img = np.array([0, 0, cam.width, cam.height], np.float64)

    def emit(fi, t, box, score, rot, betas, cam_t, conf, pid):
        cols["frame_idx"].append(fi)
        cols["pts"].append(t)
        cols["boxes_xyxy"].append(box)
        cols["scores"].append(score)
        cols["rotmats"].append(rot)
        cols["betas"].append(betas)
        cols["cam_t"].append(cam_t)
        cols["focal"].append(cam.focal)
        cols["confidence"].append(conf)
        gt.append(pid)
        if noise.appearance is None:
            app_rows.append(np.zeros(APPEARANCE_DIM))
        else:
            base = looks.get(pid, random_descriptor(app_rng))
            app_rows.append((1.0 - noise.appearance) * base + noise.appearance * random_descriptor(app_rng))

    for fi, t in zip(fidx, pts):
        present = []
        for p in people:
            pos = p.position(float(t))
            if pos is None or pos[2] < 0.5:
                continue
            v = p.velocity(float(t))
            if np.linalg.norm(v) > 0.05:
                yaws[p.person_id] = float(np.arctan2(-v[0], -v[1]))
            present.append((pos[2], p, pos, project_box(pos, cam)))
        present.sort(key=lambda x: x[0])  # nearest first
        frame_rows = []
        nearer: list[np.ndarray] = []
        for _, p, pos, box in present:
            covered = _covered_fraction(box, nearer)
            nearer.append(box)
            clipped = np.array([max(box[0], 0), max(box[1], 0), min(box[2], img[2]), min(box[3], img[3])])
            area = (box[2] - box[0]) * (box[3] - box[1])
            in_img = max(clipped[2] - clipped[0], 0) * max(clipped[3] - clipped[1], 0) / area
            if p.is_hidden(float(t)) or in_img < noise.min_in_image or covered > noise.occluded_above:
                continue
            if rng.random() < noise.miss_prob:
                continue
            h = clipped[3] - clipped[1]
            nbox = clipped + rng.normal(0, noise.box_rel * h, 4)
            ray = pos / np.linalg.norm(pos)
            cam_t = pos + rng.normal(0, noise.root_perp_m, 3) + ray * rng.normal(0, noise.root_depth_rel * pos[2])
            betas = shapes[p.person_id] + rng.normal(0, noise.betas, N_BETAS)
            rot = _pose(p, float(t), yaws[p.person_id], bases[p.person_id], rng, noise.pose_rad)
            conf = float(np.clip(rng.uniform(0.7, 1.0) - 0.5 * covered, 0.05, 1.0))
            frame_rows.append((nbox, float(rng.uniform(0.7, 1.0)), rot, betas, cam_t, conf, p.person_id))
        for _ in range(rng.poisson(noise.false_pos_per_frame)):
            h = rng.uniform(100, 400)
            x0 = rng.uniform(0, cam.width - h / 3)
            y0 = rng.uniform(0, cam.height - h)
            box = np.array([x0, y0, x0 + h / 3, y0 + h])
            z = cam.focal * 1.75 / h
            cam_t = np.array(
                [(x0 + h / 6 - cam.width / 2) * z / cam.focal, (y0 + h / 2 - cam.height / 2) * z / cam.focal, z]
            )
            rot = Rotation.from_rotvec(rng.normal(0, 0.5, (N_JOINTS, 3))).as_matrix()
            frame_rows.append(
                (
                    box,
                    float(rng.uniform(0.5, 0.7)),
                    rot,
                    rng.normal(0, 1, N_BETAS),
                    cam_t,
                    float(rng.uniform(0.2, 0.6)),
                    -1,
                )
            )
        for j in rng.permutation(len(frame_rows)):
            emit(fi, t, *frame_rows[j])

    n = len(gt)
    est = MeshEstimates(
        video_id=video_id,
        frame_idx=np.asarray(cols["frame_idx"], np.int64).reshape(n),
        pts=np.asarray(cols["pts"], np.float64).reshape(n),
        boxes_xyxy=np.asarray(cols["boxes_xyxy"], np.float32).reshape(n, 4),
        scores=np.asarray(cols["scores"], np.float32).reshape(n),
        rotmats=np.asarray(cols["rotmats"], np.float32).reshape(n, N_JOINTS, 3, 3),
        betas=np.asarray(cols["betas"], np.float32).reshape(n, N_BETAS),
        cam_t=np.asarray(cols["cam_t"], np.float32).reshape(n, 3),
        focal=np.asarray(cols["focal"], np.float32).reshape(n),
        confidence=np.asarray(cols["confidence"], np.float32).reshape(n),
        appearance=np.asarray(app_rows, np.float32).reshape(n, APPEARANCE_DIM),
    )
    return SimResult(est=est, gt_id=np.asarray(gt, np.int64), people=tuple(people))


# ------------------------------------------------------------------ scene makers
def crossing_people(duration_s: float = 6.0, same_depth: bool = False) -> list[PersonPath]:
    """Two people crossing the image in opposite directions (boxes overlap mid-way).

    With ``same_depth`` they walk diagonally and pass 0.5 m apart at the crossing point.
    """
    if same_depth:
        a = PersonPath(0, ((0.0, -2.0, 4.0), (duration_s, 2.0, 7.0)))
        b = PersonPath(1, ((0.0, 2.0, 4.2), (duration_s, -2.0, 7.2)))
        return [a, b]
    a = PersonPath(0, ((0.0, -2.5, 5.0), (duration_s, 2.5, 5.0)))
    b = PersonPath(1, ((0.0, 2.5, 6.0), (duration_s, -2.5, 6.0)))
    return [a, b]


def random_walk(
    person_id: int,
    duration_s: float,
    rng: np.random.Generator,
    x_range: tuple[float, float] = (-2.5, 2.5),
    z_range: tuple[float, float] = (3.5, 9.0),
    speed: tuple[float, float] = (0.6, 1.5),
    pause_prob: float = 0.2,
) -> PersonPath:
    """A person walking between random targets in a floor rectangle, sometimes pausing."""
    t = 0.0
    x, z = rng.uniform(*x_range), rng.uniform(*z_range)
    wps = [(t, x, z)]
    while t < duration_s:
        if rng.random() < pause_prob:
            t += rng.uniform(0.3, 1.0)
            wps.append((t, x, z))
            continue
        nx, nz = rng.uniform(*x_range), rng.uniform(*z_range)
        dist = float(np.hypot(nx - x, nz - z))
        t += max(dist / rng.uniform(*speed), 0.2)
        x, z = nx, nz
        wps.append((t, x, z))
    return PersonPath(person_id, tuple(wps))


def crowd(n_people: int, duration_s: float, seed: int) -> list[PersonPath]:
    """``n_people`` random walkers sharing a 5 m x 5.5 m floor area (frequent overlaps)."""
    rng = np.random.default_rng(seed)
    return [random_walk(i, duration_s, rng) for i in range(n_people)]


def leave_and_return(away_s: float, duration_s: float = 8.0) -> list[PersonPath]:
    """Person 0 walks out of the right image edge, stays out ``away_s``, walks back in.

    Person 1 walks slowly in the middle.  At z = 5 m the image edge is at x = 3.2 m and
    the body is fully out at x = 3.5 m.
    """
    out_x, edge_x, speed = 4.0, 3.2, 1.2
    t_out = (out_x - 0.0) / speed
    t_back = t_out + away_s - 2 * (out_x - edge_x) / speed
    a = PersonPath(
        0,
        (
            (0.0, 0.0, 5.0),
            (t_out, out_x, 5.0),
            (max(t_back, t_out), out_x, 5.0),
            (max(t_back, t_out) + 3.0, out_x - 3.6, 5.0),
        ),
    )
    b = PersonPath(1, ((0.0, -1.5, 7.0), (duration_s, -0.5, 7.5)))
    return [a, b]
