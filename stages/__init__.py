"""hmrflow.stages: decode, detect, mesh estimation, track, refine, write."""
