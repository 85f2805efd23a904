"""The bundled person detector: a small conv net with one attention block, dense outputs.

Design (CenterNet-style boxes + Panoptic-DeepLab-style instance masks, small enough to
train on a 2-core CPU):

* backbone: a patchify stem (pixel-unshuffle 4x4 + conv, as a ViT patch embedding but
  convolutional), residual conv stages at strides 8 and 16, and one transformer block
  over the stride-16 tokens (global context: which pixels belong to which of several
  overlapping people);
* a top-down path (FPN-like) back to stride 8;
* dense heads at stride 8, every map ``(B, C, H/8, W/8)``:

  - ``heat`` (1): logit of "a person's visible-box centre is in this cell";
  - ``size`` (2): ``log(w / stride), log(h / stride)`` of that box;
  - ``offset`` (2): sub-cell position of the centre, in cells;
  - ``fg`` (1): logit of "this cell shows a person";
  - ``vote`` (2): vector from the cell centre to the centre of its person's box, in units
    of :data:`VOTE_SCALE` cells.

Separate masks for overlapping people come from the votes: each foreground pixel goes to
the detected centre nearest to where it votes (see :mod:`.decode_boxes`).

Coordinates: *edge coordinates* ``e = u + 0.5`` of the OpenCV pixel-centre convention
(pixel ``k`` spans ``[k, k + 1)``), so resizing is a pure scale; map cell ``j`` spans
``[j * STRIDE, (j + 1) * STRIDE)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

#: Output stride of the dense maps.
STRIDE = 8
#: Votes are stored divided by this many cells (keeps regression targets near unit scale).
VOTE_SCALE = 4.0
#: Mean and std used to normalise uint8 RGB (letterbox padding is 0 after normalising).
PIXEL_MEAN = 127.5
PIXEL_STD = 64.0


@dataclass(frozen=True)
class DetectorSpec:
    """Architecture and input size (saved beside the weights)."""

    input_w: int = 256
    input_h: int = 192
    widths: tuple[int, int, int] = (24, 32, 64)
    fpn: int = 32
    heads: int = 4

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "DetectorSpec":
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})


def conv_bn(cin: int, cout: int, stride: int = 1, k: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class ResBlock(nn.Module):
    """Two 3x3 convs with a skip connection."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = conv_bn(c, c)
        self.conv2 = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.conv2(self.conv1(x)))


class TokenBlock(nn.Module):
    """Pre-norm transformer block (norm1, attn, norm2, mlp) over the cells of a map."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, h, w) -> (B, C, h, w)."""
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)
        # learned-free position signal: the conv features already encode position via padding
        y = self.norm1(t)
        t = t + self.attn(y, y, y, need_weights=False)[0]
        t = t + self.mlp(self.norm2(t))
        return t.transpose(1, 2).reshape(b, c, h, w)


class DenseDetector(nn.Module):
    """Image ``(B, 3, H, W)`` (normalised, H and W multiples of 16) -> dense maps at stride 8."""

    def __init__(self, spec: DetectorSpec = DetectorSpec()) -> None:
        super().__init__()
        self.spec = spec
        c1, c2, c3 = spec.widths
        self.stem = nn.Sequential(nn.PixelUnshuffle(4), conv_bn(48, c1))
        self.stage8 = nn.Sequential(conv_bn(c1, c2, 2), ResBlock(c2), ResBlock(c2))
        self.stage16 = nn.Sequential(conv_bn(c2, c3, 2), ResBlock(c3), ResBlock(c3))
        self.tokens = TokenBlock(c3, spec.heads)
        f = spec.fpn
        self.lat16, self.lat8 = nn.Conv2d(c3, f, 1), nn.Conv2d(c2, f, 1)
        self.smooth8 = conv_bn(f, f)
        self.head = conv_bn(f, f)
        self.out = nn.Conv2d(f, 8, 1)
        with torch.no_grad():  # start with a low centre probability (focal-loss practice)
            self.out.bias.zero_()
            self.out.bias[0] = -2.2

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, fpn, H/8, W/8) features."""
        s8 = self.stage8(self.stem(x))
        s16 = self.tokens(self.stage16(s8))
        p = self.lat16(s16)
        return self.smooth8(self.lat8(s8) + F.interpolate(p, size=s8.shape[-2:], mode="nearest"))

    def forward_head(self, feats: torch.Tensor) -> dict[str, torch.Tensor]:
        """Features -> dict of raw maps: heat (B,1,h,w) logits, size (B,2,h,w), offset (B,2,h,w),
        fg (B,1,h,w) logits, vote (B,2,h,w)."""
        o = self.out(self.head(feats))
        return {"heat": o[:, 0:1], "size": o[:, 1:3], "offset": o[:, 3:5], "fg": o[:, 5:6], "vote": o[:, 6:8]}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.forward_head(self.forward_features(x))


def normalise(images_uint8: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float32 normalised."""
    return (images_uint8.permute(0, 3, 1, 2).float() - PIXEL_MEAN) / PIXEL_STD
