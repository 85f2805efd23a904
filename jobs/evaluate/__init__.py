"""Score hmrflow outputs against synthetic ground truth (``hmrflow eval``).

    from hmrflow.jobs.evaluate import evaluate
    report = evaluate("out/", "synth_set/")      # EvalReport
    print(report.to_markdown()); report.per_video; report.overall; report.people

Modules: :mod:`.metrics` (pure NumPy pose/motion/box metrics, metres in, mm out),
:mod:`.matching` (per-frame Hungarian matching, motmetrics tracking metrics),
:mod:`.loading` (gt.npz / tracks.parquet readers; the only user of a body model),
:mod:`.report` (per-video and overall tables, JSON and markdown).
"""

from hmrflow.jobs.evaluate.loading import EvalInputError, GroundTruth, MeshFn, Predictions
from hmrflow.jobs.evaluate.report import EvalReport, evaluate, evaluate_video

__all__ = ["EvalInputError", "EvalReport", "GroundTruth", "MeshFn", "Predictions", "evaluate", "evaluate_video"]
