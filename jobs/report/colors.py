"""Stable per-track colours shared by the overlay video and the QC report."""

from __future__ import annotations

import colorsys

_GOLDEN = 0.6180339887498949


def track_color(track_id: int) -> tuple[int, int, int]:
    """RGB 0-255 colour of a track: hue from the golden-ratio sequence of the id.

    The same id always gets the same colour (in every video and every run); consecutive
    ids get well separated hues.
    """
    h = (0.13 + int(track_id) * _GOLDEN) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.7, 0.95)
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


def hex_color(rgb: tuple[int, int, int]) -> str:
    """``#rrggbb``."""
    return "#%02x%02x%02x" % rgb
