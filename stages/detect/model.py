"""The bundled person detector: a small conv net with one attention block, dense outputs.

Design (CenterNet-style boxes + Panoptic-DeepLab-style instance masks, small enough to
train on a 2-core CPU):

* backbone: a patchify stem (pixel-unshuffle 4x4 + conv, as a ViT patch embedding but
  convolutional), residual conv stages at strides 8 and 16, and one transformer block
  over the stride-16 tokens (global context: which pixels belong to which of several
  overlapping people);
* a top-down path (FPN-like) back to stride 8 and, with ``spec.stride == 4``, on to stride 4
  by adding the stem's stride-4 features (colour and edges at twice the resolution: two
  people whose centres are a few pixels apart get centres in different cells);
* dense heads at the output stride ``s = spec.stride`` (8 or 4), every map ``(B, C, H/s, W/s)``:

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
``[j * s, (j + 1) * s)``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

#: Output stride of the dense maps of a default :class:`DetectorSpec`.
STRIDE = 8
#: Output strides a detector can have.
STRIDES = (4, 8)
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
    stride: int = STRIDE

    def __post_init__(self) -> None:
        if self.stride not in STRIDES:
            raise ValueError(f"detector output stride must be one of {STRIDES}, got {self.stride}")

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

    def _attend(self, y: torch.Tensor) -> torch.Tensor:
        """Self-attention of ``self.attn``'s weights over tokens (B, N, C) -> (B, N, C).

        The same sums as ``self.attn(y, y, y)`` (no dropout), through the fused attention
        kernel: ``nn.MultiheadAttention`` falls back to bmm + softmax here."""
        a = self.attn
        b, n, c = y.shape
        qkv = F.linear(y, a.in_proj_weight, a.in_proj_bias).reshape(b, n, 3, a.num_heads, c // a.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q, k, v)
        return a.out_proj(o.transpose(1, 2).reshape(b, n, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, h, w) -> (B, C, h, w)."""
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)
        # learned-free position signal: the conv features already encode position via padding
        t = t + self._attend(self.norm1(t))
        t = t + self.mlp(self.norm2(t))
        return t.transpose(1, 2).reshape(b, c, h, w)


class DenseDetector(nn.Module):
    """Image ``(B, 3, H, W)`` (normalised, H and W multiples of 16) -> dense maps at ``spec.stride``."""

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
        if spec.stride == 4:
            self.lat4 = nn.Conv2d(c1, f, 1)
            with torch.no_grad():  # starts as the upsampled stride-8 path (see convert_to_stride4)
                self.lat4.weight.zero_()
                self.lat4.bias.zero_()
        self.head = conv_bn(f, f)
        self.out = nn.Conv2d(f, 8, 1)
        with torch.no_grad():  # start with a low centre probability (focal-loss practice)
            self.out.bias.zero_()
            self.out.bias[0] = -2.2

    @property
    def stride(self) -> int:
        """Output stride of the dense maps."""
        return self.spec.stride

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, fpn, H/s, W/s) features, s = ``spec.stride``."""
        s4 = self.stem(x)
        s8 = self.stage8(s4)
        s16 = self.tokens(self.stage16(s8))
        p = self.lat16(s16)
        p8 = self.smooth8(self.lat8(s8) + F.interpolate(p, size=s8.shape[-2:], mode="nearest"))
        if self.spec.stride == 8:
            return p8
        return self.lat4(s4) + F.interpolate(p8, size=s4.shape[-2:], mode="bilinear", align_corners=False)

    def forward_head(self, feats: torch.Tensor) -> dict[str, torch.Tensor]:
        """Features -> dict of raw maps (h, w = H/s, W/s): heat (B,1,h,w) logits, size (B,2,h,w),
        offset (B,2,h,w), fg (B,1,h,w) logits, vote (B,2,h,w)."""
        o = self.out(self.head(feats))
        return {"heat": o[:, 0:1], "size": o[:, 1:3], "offset": o[:, 3:5], "fg": o[:, 5:6], "vote": o[:, 6:8]}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.forward_head(self.forward_features(x))


def _fuse_conv_bn(module: nn.Module) -> nn.Module:
    """``module`` with every eval-mode ``Conv2d -> BatchNorm2d`` pair of a Sequential (at any
    depth) folded into one conv."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    if isinstance(module, nn.Sequential):
        mods, out, i = list(module), [], 0
        while i < len(mods):
            if i + 1 < len(mods) and isinstance(mods[i], nn.Conv2d) and isinstance(mods[i + 1], nn.BatchNorm2d):
                out.append(fuse_conv_bn_eval(mods[i], mods[i + 1]))
                i += 2
            else:
                out.append(_fuse_conv_bn(mods[i]))
                i += 1
        return nn.Sequential(*out)
    for name, child in list(module.named_children()):
        setattr(module, name, _fuse_conv_bn(child))
    return module


def for_inference(model: DenseDetector) -> DenseDetector:
    """An eval-only copy of ``model`` computing the same maps faster on CPU.

    * every conv + batch norm pair becomes one conv;
    * the stem's pixel-unshuffle (4x4) + 3x3 conv becomes one 12x12 conv of stride 4 on the
      image (the same sums: unshuffled channel ``c * 16 + 4 i + j`` of cell ``(y, x)`` is pixel
      ``(4 y + i, 4 x + j)`` of colour ``c``), which skips writing the unshuffled copy;
    * weights in channels-last layout, which oneDNN's convolutions run without reordering
      (feed it channels-last images: :func:`~hmrflow.stages.detect.stage.letterbox` does).

    Not for training: batch-norm statistics are frozen into the convs.
    """
    import copy

    m = _fuse_conv_bn(copy.deepcopy(model).eval())
    unshuffle, stem_conv = m.stem[0], m.stem[1][0]
    assert isinstance(unshuffle, nn.PixelUnshuffle) and unshuffle.downscale_factor == 4
    w = stem_conv.weight.detach()  # (c1, 48, 3, 3) over (colour, i, j) x (dy, dx)
    c1 = w.shape[0]
    big = nn.Conv2d(3, c1, 12, stride=4, padding=4, bias=True)
    with torch.no_grad():
        big.weight.copy_(w.reshape(c1, 3, 4, 4, 3, 3).permute(0, 1, 4, 2, 5, 3).reshape(c1, 3, 12, 12))
        big.bias.copy_(stem_conv.bias.detach())
    m.stem = nn.Sequential(big, *list(m.stem[1])[1:])
    return m.to(memory_format=torch.channels_last)


def convert_to_stride4(state: dict[str, torch.Tensor], model: DenseDetector) -> None:
    """Load a stride-8 detector's ``state`` into a stride-4 ``model`` (fine-tuning start).

    Every layer is shared; the new stride-4 lateral starts at zero, so the stride-4 features
    are the bilinearly upsampled stride-8 ones, and the output layer is rescaled to the new
    cell size: sizes are ``log(w / stride)`` (+ log 2), offsets and votes are in cells (x 2).
    """
    if model.spec.stride != 4:
        raise ValueError("convert_to_stride4 needs a stride-4 model")
    state = {k: v.clone() for k, v in state.items()}
    w, b = state["out.weight"], state["out.bias"]
    b[1:3] += math.log(2.0)
    for rows in (slice(3, 5), slice(6, 8)):
        w[rows] *= 2.0
        b[rows] *= 2.0
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) != {"lat4.weight", "lat4.bias"}:
        raise ValueError(f"not a stride-8 detector state (missing {missing}, unexpected {unexpected})")
    with torch.no_grad():
        model.lat4.weight.zero_()
        model.lat4.bias.zero_()


def normalise(images_uint8: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float32 normalised."""
    # one conversion, then in place: the frames are the largest tensors this model sees
    return images_uint8.permute(0, 3, 1, 2).float().sub_(PIXEL_MEAN).div_(PIXEL_STD)
