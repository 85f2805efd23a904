"""Identity tracking: per-frame people (MeshEstimates) -> tracks -> SMPLSequence per person.

Public API::

    TrackStage(cfg: TrackConfig)(est: MeshEstimates) -> TrackedEstimates
    track_video(est, cfg) -> (track_id (N,) int64 with -1 for untracked rows, TrackStats)
    tracks_to_sequences(tracked: TrackedEstimates) -> list[SMPLSequence]
"""

from hmrflow.stages.track.sequences import tracks_to_sequences, weighted_median
from hmrflow.stages.track.tracker import TrackStage, TrackStats, attach_track_ids, track_video

__all__ = ["TrackStage", "TrackStats", "attach_track_ids", "track_video", "tracks_to_sequences", "weighted_median"]
