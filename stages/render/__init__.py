"""Rendering: a vectorised torch rasteriser and flat Lambert shading (used by the synthetic world)."""

from hmrflow.stages.render.raster import RasterOutput, face_normals, project, rasterize, shade_faces

__all__ = ["RasterOutput", "face_normals", "project", "rasterize", "shade_faces"]
