"""Frame-to-frame camera rotation from the background, people masked out (OpenCV).

Corners of the background (``cv2.goodFeaturesToTrack`` outside every detected person's box,
grown by a margin) are followed into the next frame with pyramidal Lucas-Kanade optical
flow, and a homography between the two frames is fitted with RANSAC
(``cv2.findHomography``).  Homographies are kept in *normalised image coordinates*
(pixels minus the image centre, divided by the image height), so they do not depend on the
decode size and the focal length can be decided later: for a rotating camera
``H = K R K^-1`` and :func:`rotations_from_homographies` recovers ``R`` once ``K`` is known.

Static cameras take a fast path: when the median corner moves less than
:data:`STILL_PX` pixels the frame pair is "still" and no homography is fitted.  A camera
that translates (dolly) is seen as a rotation plus parallax; its translation is not
recovered (docs/world.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Median corner motion (pixels at the tracking size) under which a frame pair counts as still.
STILL_PX = 0.15
#: Fewest tracked corners a homography is fitted on.
MIN_CORNERS = 12
#: Box margin (fraction of the box size) masked around each person.
PERSON_MARGIN = 0.1


def _to_norm(width: int, height: int) -> np.ndarray:
    """(3, 3) pixels -> normalised coordinates (centre origin, units of the image height)."""
    return np.array([[1.0 / height, 0.0, -width / (2.0 * height)], [0.0, 1.0 / height, -0.5], [0.0, 0.0, 1.0]])


@dataclass
class MotionTracker:
    """Follows one clip frame by frame; :meth:`add` each frame in order, then :meth:`result`.

    max_side: frames are tracked at this longer side.  The result holds, per frame after the
    first, the homography mapping the previous frame's normalised coordinates to this
    frame's (identity for still pairs) and whether it was measured.
    """

    max_side: int = 320
    max_corners: int = 300
    frame_idx: list[int] = field(default_factory=list)
    pts: list[float] = field(default_factory=list)
    homographies: list[np.ndarray] = field(default_factory=list)
    status: list[int] = field(default_factory=list)  # 0 first frame, 1 still, 2 moving, 3 failed
    _prev: np.ndarray | None = None
    _pts: np.ndarray | None = None
    _norm: np.ndarray | None = None

    def _small(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        import cv2

        h, w = image.shape[:2]
        s = min(1.0, self.max_side / max(h, w))
        gray = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
        if s < 1.0:
            gray = cv2.resize(gray, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        return gray, s

    @staticmethod
    def _mask(shape: tuple[int, int], boxes: np.ndarray, scale: float) -> np.ndarray:
        """uint8 (h, w) mask, 255 where corners may be taken (not on a person)."""
        mask = np.full(shape, 255, np.uint8)
        h, w = shape
        for x0, y0, x1, y1 in np.asarray(boxes, np.float64).reshape(-1, 4) * scale:
            mx, my = PERSON_MARGIN * (x1 - x0), PERSON_MARGIN * (y1 - y0)
            a, b = int(max(0, np.floor(x0 - mx))), int(min(w, np.ceil(x1 + mx)))
            c, d = int(max(0, np.floor(y0 - my))), int(min(h, np.ceil(y1 + my)))
            mask[c:d, a:b] = 0
        return mask

    def add(self, frame_idx: int, pts: float, image: np.ndarray, boxes: np.ndarray) -> None:
        """One frame (H, W, 3) uint8 RGB at ``pts`` seconds with its people's boxes (K, 4) xyxy in the frame's pixels."""
        import cv2

        gray, s = self._small(image)
        mask = self._mask(gray.shape, boxes, s)
        self.frame_idx.append(int(frame_idx))
        self.pts.append(float(pts))
        if self._prev is None:
            self._norm = _to_norm(gray.shape[1], gray.shape[0])
            self.homographies.append(np.eye(3))
            self.status.append(0)
        else:
            self._pair(gray, mask)
        self._prev = gray
        # corners found once are followed while enough of them survive (finding them is the
        # costly part); people walking onto them are dropped in _pair
        if self._pts is None or len(self._pts) < self.max_corners // 2:
            pts = cv2.goodFeaturesToTrack(gray, self.max_corners, 0.01, 7, mask=mask, blockSize=5)
            self._pts = None if pts is None else pts.reshape(-1, 2).astype(np.float32)

    def _pair(self, gray: np.ndarray, mask: np.ndarray) -> None:
        import cv2

        assert self._prev is not None and self._norm is not None
        if self._pts is None or len(self._pts) < MIN_CORNERS:
            self.homographies.append(np.eye(3))
            self.status.append(3)
            return
        nxt, ok, _ = cv2.calcOpticalFlowPyrLK(self._prev, gray, self._pts, None, winSize=(15, 15), maxLevel=3)
        ok = ok.reshape(-1).astype(bool)
        p0, p1 = self._pts[ok], nxt.reshape(-1, 2)[ok]
        h, w = gray.shape
        inside = (p1[:, 0] >= 0) & (p1[:, 0] < w) & (p1[:, 1] >= 0) & (p1[:, 1] < h)
        p0, p1 = p0[inside], p1[inside]
        keep = mask[p1[:, 1].astype(int), p1[:, 0].astype(int)] > 0  # a person walked onto the corner
        p0, p1 = p0[keep], p1[keep]
        if len(p0) < MIN_CORNERS:
            self._pts = None
            self.homographies.append(np.eye(3))
            self.status.append(3)
            return
        if float(np.median(np.linalg.norm(p1 - p0, axis=1))) < STILL_PX:
            self._pts = p1
            self.homographies.append(np.eye(3))
            self.status.append(1)
            return
        H, inl = cv2.findHomography(p0, p1, cv2.RANSAC, 1.0)
        if H is None or inl is None or int(inl.sum()) < MIN_CORNERS:
            self._pts = None
            self.homographies.append(np.eye(3))
            self.status.append(3)
            return
        self._pts = p1[inl.reshape(-1).astype(bool)]
        Hn = self._norm @ H @ np.linalg.inv(self._norm)
        self.homographies.append(Hn / Hn[2, 2])
        self.status.append(2)

    def result(self) -> dict[str, list]:
        """JSON-able record: ``frame_idx`` (F,), ``pts`` (F,), ``H`` (F, 9) previous->this frame, normalised
        coordinates, and ``status`` (F,): 0 first, 1 still, 2 moving, 3 failed (identity)."""
        return {
            "frame_idx": list(self.frame_idx),
            "pts": list(self.pts),
            "H": [np.round(h.reshape(-1), 8).tolist() for h in self.homographies],
            "status": list(self.status),
        }


def rotations_from_homographies(
    H: np.ndarray, focal_rel: float, principal_rel: tuple[float, float] = (0.0, 0.0)
) -> np.ndarray:
    """Camera rotations of every frame relative to the first.

    H: (F, 3, 3) previous->this frame homographies in normalised coordinates (H[0] unused).
    focal_rel: focal length in image heights; principal_rel: principal point in normalised
    coordinates (0, 0 = image centre).  Returns (F, 3, 3) float64 ``R_t`` with
    ``x_cam_t = R_t @ x_cam_0`` (rotation only); each step is the rotation nearest to
    ``K^-1 H K`` (scale removed).
    """
    import torch

    from hmrflow.priors.rotations import nearest_rotation

    K = np.array([[focal_rel, 0.0, principal_rel[0]], [0.0, focal_rel, principal_rel[1]], [0.0, 0.0, 1.0]])
    Ki = np.linalg.inv(K)
    M = Ki[None] @ np.asarray(H, np.float64) @ K[None]
    M = M / np.cbrt(np.linalg.det(M))[:, None, None]
    steps = nearest_rotation(torch.from_numpy(M)).numpy()
    steps[0] = np.eye(3)
    out = np.empty_like(steps)
    acc = np.eye(3)
    for i, r in enumerate(steps):
        acc = r @ acc
        out[i] = acc
    return out
