"""Person detection: boxes, scores and box-relative masks for every frame.

    from hmrflow.stages.detect import DetectStage
    stage = DetectStage(DetectConfig())      # kind: bundled | file | maskrcnn
    stage.setup(); detected = stage(frame_batch)   # -> DetectedFrames

Modules: :mod:`.model` (the dense network), :mod:`.decode_boxes` (maps -> boxes + masks),
:mod:`.stage` (the Stage, letterboxing, factories), :mod:`.file_adapter` (MOT txt / JSON),
:mod:`.maskrcnn_adapter` (torchvision, optional), :mod:`.train` (targets, loss, trainer, F1).
"""

from hmrflow.stages.detect.stage import DetectStage

__all__ = ["DetectStage"]
