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
#: goodFeaturesToTrack's quality level: corners weaker than this fraction of the best are
#: dropped (edges of stripes and other one-directional texture slide along themselves).
CORNER_QUALITY = 0.05
#: Corners whose flow, tracked back, misses its start by more than this (pixels) are dropped.
FB_MAX_PX = 0.5
#: Box margin (fraction of the box size) masked around each person.
PERSON_MARGIN = 0.1


def _to_norm(width: int, height: int) -> np.ndarray:
    """(3, 3) pixels -> normalised coordinates (centre origin, units of the image height)."""
    return np.array([[1.0 / height, 0.0, -width / (2.0 * height)], [0.0, 1.0 / height, -0.5], [0.0, 0.0, 1.0]])


@dataclass
class MotionTracker:
    """Follows one clip frame by frame; :meth:`add` each frame in order, then :meth:`result`.

    Corners are found in a *keyframe* and followed into every later frame (each frame starts
    from where the corners were in the frame before), and the homography is fitted between
    the keyframe and the frame; so errors do not pile up frame after frame, only from one
    keyframe to the next.  A new keyframe is taken when fewer than half of its corners
    still fit, or a fit fails.

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
    _norm: np.ndarray | None = None
    _key: np.ndarray | None = None  # keyframe corners (K, 2), keyframe pixels
    _cur: np.ndarray | None = None  # where they are in the previous frame (K, 2)
    _key_from_0: np.ndarray = field(default_factory=lambda: np.eye(3))  # frame 0 -> keyframe, normalised
    _prev_from_0: np.ndarray = field(default_factory=lambda: np.eye(3))  # frame 0 -> previous frame

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

    def _new_key(self, gray: np.ndarray, mask: np.ndarray, from_0: np.ndarray) -> None:
        import cv2

        pts = cv2.goodFeaturesToTrack(gray, self.max_corners, CORNER_QUALITY, 7, mask=mask, blockSize=5)
        self._key = None if pts is None else pts.reshape(-1, 2).astype(np.float32)
        self._cur = None if self._key is None else self._key.copy()
        self._key_from_0 = from_0

    def add(self, frame_idx: int, pts: float, image: np.ndarray, boxes: np.ndarray) -> None:
        """One frame (H, W, 3) uint8 RGB at ``pts`` seconds with its people's boxes (K, 4) xyxy in the frame's pixels."""
        gray, s = self._small(image)
        mask = self._mask(gray.shape, boxes, s)
        self.frame_idx.append(int(frame_idx))
        self.pts.append(float(pts))
        if self._prev is None:
            self._norm = _to_norm(gray.shape[1], gray.shape[0])
            self.homographies.append(np.eye(3))
            self.status.append(0)
            self._new_key(gray, mask, np.eye(3))
        else:
            from_0, status = self._track(gray, mask)
            step = from_0 @ np.linalg.inv(self._prev_from_0)
            self.homographies.append(step / step[2, 2])
            self.status.append(status)
            self._prev_from_0 = from_0
        self._prev = gray

    def _track(self, gray: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, int]:
        """(frame 0 -> this frame homography, status); renews the keyframe when needed."""
        import cv2

        assert self._prev is not None and self._norm is not None
        if self._key is None or len(self._key) < MIN_CORNERS:
            self._new_key(gray, mask, self._prev_from_0)
            return self._prev_from_0, 3
        nxt, ok, _ = cv2.calcOpticalFlowPyrLK(
            self._prev,
            gray,
            self._cur,
            self._cur.copy(),
            winSize=(15, 15),
            maxLevel=3,
            flags=cv2.OPTFLOW_USE_INITIAL_FLOW,
        )
        p1 = nxt.reshape(-1, 2)
        back, ok_b, _ = cv2.calcOpticalFlowPyrLK(gray, self._prev, nxt, None, winSize=(15, 15), maxLevel=3)
        fb = np.linalg.norm(back.reshape(-1, 2) - self._cur, axis=1)  # forward-backward check
        h, w = gray.shape
        ok = ok.reshape(-1).astype(bool) & ok_b.reshape(-1).astype(bool) & (fb < FB_MAX_PX)
        ok &= (p1[:, 0] >= 0) & (p1[:, 0] < w) & (p1[:, 1] >= 0) & (p1[:, 1] < h)
        ok[ok] = mask[p1[ok, 1].astype(int), p1[ok, 0].astype(int)] > 0  # a person walked onto the corner
        moved = np.linalg.norm(p1[ok] - self._cur[ok], axis=1)
        self._key, self._cur, p1 = self._key[ok], self._cur[ok], p1[ok]
        if len(p1) < MIN_CORNERS:
            self._new_key(gray, mask, self._prev_from_0)
            return self._prev_from_0, 3
        if float(np.median(moved)) < STILL_PX:
            self._cur = p1
            return self._prev_from_0, 1
        H, inl = cv2.findHomography(self._key, p1, cv2.RANSAC, 1.0)
        if H is None or inl is None or int(inl.sum()) < MIN_CORNERS:
            self._new_key(gray, mask, self._prev_from_0)
            return self._prev_from_0, 3
        inl = inl.reshape(-1).astype(bool)
        from_0 = self._norm @ H @ np.linalg.inv(self._norm) @ self._key_from_0
        from_0 = from_0 / from_0[2, 2]
        if inl.sum() < max(MIN_CORNERS, self.max_corners // 4) or inl.mean() < 0.5:
            self._new_key(gray, mask, from_0)
        else:
            self._key, self._cur = self._key[inl], p1[inl]
        return from_0, 2

    def result(self) -> dict[str, list]:
        """JSON-able record: ``frame_idx`` (F,), ``pts`` (F,), ``H`` (F, 9) previous->this frame, normalised
        coordinates, and ``status`` (F,): 0 first, 1 still, 2 moving, 3 failed (identity)."""
        return {
            "frame_idx": list(self.frame_idx),
            "pts": list(self.pts),
            "H": [np.round(h.reshape(-1), 10).tolist() for h in self.homographies],
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
