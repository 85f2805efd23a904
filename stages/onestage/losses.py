"""Training targets, Hungarian matching and losses of the one-stage estimator.

Losses (SAT-HMR's list, our weights): focal + L1 on the scale map, a detection loss on the
queries, box L1 + generalised IoU, pelvis position L1, normalised depth L1, pose
(rotation-matrix L2), shape L2, 3D joints (pelvis-relative) L1 and 2D joints L1, plus the
token objectness that picks the queries.  Queries and people are matched one-to-one by the
Hungarian algorithm (scipy) on detection, box and pelvis costs, as in DETR.

hmrflow's change for a 2-core training budget (hybrid matching): besides its Hungarian match,
every query whose token lies inside a person's box also learns that person, and the detection
loss is a quality focal loss towards the IoU of the query's box (0 for unassigned queries), so
the score ranks one person's duplicate queries and NMS keeps the best.  With one-to-one
matching alone the tiny model's scores stayed flat (about 0.3 on every query near a person)
after 700 steps: one of several queries on a person is the match by chance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from hmrflow.stages.onestage.model import OneStageOutput

WEIGHTS: dict[str, float] = {
    "cls": 4.0,
    "box": 5.0,
    "giou": 2.0,
    "root": 5.0,
    "depth": 1.0,
    "pose": 1.0,
    "betas": 0.01,
    "j3d": 5.0,
    "j2d": 5.0,
    "scale_c": 1.0,
    "scale_s": 2.0,
    "token_obj": 1.0,
}


@dataclass
class PeopleTargets:
    """The people of one image, in the model's input units.

    boxes: (P, 4) (cx, cy, w, h) 0..1 of the input; root_uv: (P, 2) pelvis projection 0..1;
    log_depth: (P,) log(pelvis depth / relative focal); rotmats: (P, 24, 3, 3); betas: (P, 10);
    joints: (P, 24, 3) camera-frame joints (metres); joints2d: (P, 24, 2) 0..1 of the input.
    """

    boxes: torch.Tensor
    root_uv: torch.Tensor
    log_depth: torch.Tensor
    rotmats: torch.Tensor
    betas: torch.Tensor
    joints: torch.Tensor
    joints2d: torch.Tensor

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


def cxcywh_to_xyxy(b: torch.Tensor) -> torch.Tensor:
    """(..., 4) centre-size -> corners."""
    c, s = b[..., :2], b[..., 2:] / 2
    return torch.cat([c - s, c + s], -1)


def generalized_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise GIoU of xyxy boxes a (N, 4) and b (M, 4) -> (N, M)."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = area_a[:, None] + area_b[None] - inter
    iou = inter / union.clamp(min=1e-9)
    lt_c = torch.min(a[:, None, :2], b[None, :, :2])
    rb_c = torch.max(a[:, None, 2:], b[None, :, 2:])
    hull = (rb_c - lt_c).clamp(min=0).prod(-1)
    return iou - (hull - union) / hull.clamp(min=1e-9)


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Sigmoid focal loss (RetinaNet), summed; logits and targets of one shape."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    pt = p * targets + (1 - p) * (1 - targets)
    w = alpha * targets + (1 - alpha) * (1 - targets)
    return (w * ce * (1 - pt) ** gamma).sum()


def quality_focal_loss(logits: torch.Tensor, quality: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Quality focal loss (Generalised Focal Loss): BCE towards a soft target in [0, 1] weighted
    by ``|sigmoid - target| ** gamma``, summed."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, quality, reduction="none")
    return (ce * (p - quality).abs() ** gamma).sum()


@torch.no_grad()
def containing_person(ref: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """(Q,) index of the smallest target box (cx, cy, w, h) (P, 4) holding each reference point
    ref (Q, 2), -1 for none: the one-to-many assignment (a query on a person learns that person)."""
    if len(boxes) == 0:
        return torch.full((ref.shape[0],), -1, dtype=torch.long)
    xyxy = cxcywh_to_xyxy(boxes)
    inside = (
        (ref[:, None, 0] >= xyxy[None, :, 0])
        & (ref[:, None, 0] <= xyxy[None, :, 2])
        & (ref[:, None, 1] >= xyxy[None, :, 1])
        & (ref[:, None, 1] <= xyxy[None, :, 3])
    )
    area = (boxes[:, 2] * boxes[:, 3])[None].expand_as(inside).masked_fill(~inside, float("inf"))
    best = area.argmin(1)
    return torch.where(inside.any(1), best, torch.full_like(best, -1))


def assign_queries(out: OneStageOutput, targets: list[PeopleTargets]) -> list[torch.Tensor]:
    """Per image, (Q,) the person each query learns (-1: none): the Hungarian one-to-one match,
    plus every other query whose token lies inside a person's box (hybrid matching: the extra
    one-to-many assignments give all queries on a person a training signal, which a small model on
    a short budget needs; duplicates are left to NMS and to the quality score)."""
    result = []
    for i, (q, k) in enumerate(hungarian_match(out, targets)):
        a = containing_person(out.ref[i], targets[i].boxes)
        a[torch.from_numpy(q)] = torch.from_numpy(k)
        result.append(a)
    return result


@torch.no_grad()
def hungarian_match(out: OneStageOutput, targets: list[PeopleTargets]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per image, (query indices, person indices) of the minimum-cost one-to-one matching."""
    result = []
    for i, t in enumerate(targets):
        if len(t) == 0:
            result.append((np.zeros(0, np.int64), np.zeros(0, np.int64)))
            continue
        p = torch.sigmoid(out.logits[i].float())
        cls_cost = (0.75 * p**2 * -torch.log(1 - p + 1e-8)) - (0.25 * (1 - p) ** 2 * -torch.log(p + 1e-8))
        box_cost = torch.cdist(out.boxes[i].float(), t.boxes, p=1)
        giou = generalized_iou(cxcywh_to_xyxy(out.boxes[i].float()), cxcywh_to_xyxy(t.boxes))
        root_cost = torch.cdist(out.root_uv[i].float(), t.root_uv, p=1)
        cost = 2.0 * cls_cost[:, None] + 5.0 * box_cost - 2.0 * giou + 5.0 * root_cost
        q, k = linear_sum_assignment(cost.cpu().numpy())
        result.append((q.astype(np.int64), k.astype(np.int64)))
    return result


def pelvis_camera(
    root_uv: torch.Tensor, log_depth: torch.Tensor, K: torch.Tensor, input_wh: tuple[int, int]
) -> torch.Tensor:
    """Back-project the pelvis: root_uv (N, 2) 0..1 of the input, log_depth (N,), K (N, 3, 3)
    intrinsics of the input -> (N, 3) camera-frame pelvis (metres)."""
    w, h = input_wh
    z = torch.exp(log_depth) * (K[:, 0, 0] / max(w, h))
    u = root_uv[:, 0] * w
    v = root_uv[:, 1] * h
    x = (u - K[:, 0, 2]) / K[:, 0, 0] * z
    y = (v - K[:, 1, 2]) / K[:, 1, 1] * z
    return torch.stack([x, y, z], -1)


def project(points: torch.Tensor, K: torch.Tensor, input_wh: tuple[int, int]) -> torch.Tensor:
    """Camera-frame points (N, J, 3), K (N, 3, 3) -> (N, J, 2) in 0..1 of the input."""
    uvw = torch.einsum("nij,nkj->nki", K, points)
    uv = uvw[..., :2] / uvw[..., 2:].clamp(min=1e-3)
    return uv / torch.tensor([float(input_wh[0]), float(input_wh[1])])


def onestage_losses(
    out: OneStageOutput,
    targets: list[PeopleTargets],
    K: torch.Tensor,
    scale_maps: tuple[torch.Tensor, torch.Tensor],
    token_targets: torch.Tensor,
    body_model: Any,
    input_wh: tuple[int, int],
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total weighted loss and its parts (floats, for the log).

    K: (B, 3, 3) intrinsics of each input image; scale_maps: target (conf, scale) (B, gh, gw);
    token_targets: (B, M) 1 where the token's centre lies in a person box (padding ignored);
    body_model: the differentiable body model (rotmats, betas, transl) -> joints.
    """
    b = out.logits.shape[0]
    assigned = assign_queries(out, targets)
    n_people = max(sum(len(t) for t in targets), 1)
    qi = torch.cat([torch.full((int((a >= 0).sum()),), i, dtype=torch.long) for i, a in enumerate(assigned)])
    qq = torch.cat([torch.nonzero(a >= 0).flatten() for a in assigned])
    n_pairs = max(len(qq), 1)
    # quality target: the IoU of a query's box with its person (0 for unassigned queries), so the
    # score ranks the duplicates of one person and NMS keeps the best box
    quality = torch.zeros_like(out.logits)
    parts: dict[str, torch.Tensor] = {}
    if len(qq):
        tgt = {
            f: torch.cat([getattr(t, f)[a[a >= 0]] for t, a in zip(targets, assigned)])
            for f in ("boxes", "root_uv", "log_depth", "rotmats", "betas", "joints", "joints2d")
        }
        pb = out.boxes[qi, qq]
        giou = torch.diag(generalized_iou(cxcywh_to_xyxy(pb), cxcywh_to_xyxy(tgt["boxes"])))
        with torch.no_grad():
            a, bb = cxcywh_to_xyxy(pb), cxcywh_to_xyxy(tgt["boxes"])
            inter = (torch.min(a[:, 2:], bb[:, 2:]) - torch.max(a[:, :2], bb[:, :2])).clamp(min=0).prod(-1)
            union = (a[:, 2:] - a[:, :2]).prod(-1) + (bb[:, 2:] - bb[:, :2]).prod(-1) - inter
            quality[qi, qq] = (inter / union.clamp(min=1e-9)).clamp(0, 1)
        parts["box"] = (pb - tgt["boxes"]).abs().sum() / n_pairs
        parts["giou"] = (1 - giou).sum() / n_pairs
        parts["root"] = (out.root_uv[qi, qq] - tgt["root_uv"]).abs().sum() / n_pairs
        parts["depth"] = (out.log_depth[qi, qq] - tgt["log_depth"]).abs().sum() / n_pairs
        rot = out.rotmats[qi, qq]
        parts["pose"] = ((rot - tgt["rotmats"]) ** 2).sum() / n_pairs / 24
        betas = out.betas[qi, qq]
        parts["betas"] = ((betas - tgt["betas"]) ** 2).sum() / n_pairs
        body = body_model(rot, betas, torch.zeros(len(qq), 3))
        joints = body.joints  # (N, 24, 3) at zero translation
        pel = pelvis_camera(out.root_uv[qi, qq], out.log_depth[qi, qq], K[qi], input_wh)
        rel = joints - joints[:, :1]
        trel = tgt["joints"] - tgt["joints"][:, :1]
        parts["j3d"] = (rel - trel).abs().sum(-1).mean(-1).sum() / n_pairs
        cam = rel + pel[:, None]
        j2d = (project(cam, K[qi], input_wh) - tgt["joints2d"]).abs().sum(-1).mean(-1)
        parts["j2d"] = j2d.clamp(max=1.0).sum() / n_pairs
    parts["cls"] = quality_focal_loss(out.logits, quality) / n_people
    conf_t, scale_t = scale_maps
    n_cells = max(float(conf_t.sum()), 1.0)
    parts["scale_c"] = focal_loss(out.scale_conf, conf_t) / n_cells
    parts["scale_s"] = ((out.scale - scale_t).abs() * conf_t).sum() / n_cells
    valid = out.tokens.valid
    obj = out.token_obj[valid]
    parts["token_obj"] = focal_loss(obj, token_targets[valid].float()) / max(float(token_targets[valid].sum()), 1.0)
    total = sum(WEIGHTS[k] * v for k, v in parts.items())
    return total, {k: float(v.detach()) for k, v in parts.items()} | {
        "people": float(n_people) / b,
        "pairs": float(len(qq)) / b,
    }
