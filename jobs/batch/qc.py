"""Quality-control report of a batch run: per video, what was found and how smooth it is.

For every video of the run (done, failed or skipped because already done) the report
lists status, attempts and error, frames decoded, people (most tracks present at once) and
tracks found, observed vs refinement-filled track frames, and the root jitter: the mean
norm of the third finite difference of each track's translation (the SMPL root, camera
frame) times fps^3, in m/s^3 (same definition as :func:`hmrflow.priors.metrics.jitter`,
on the root only, weighted by samples over the tracks).  Computed from the written
``tracks.parquet`` (no model needed).

:func:`write_qc` writes ``qc.json`` (everything), ``qc.csv`` (one row per video) and
``qc.md`` (a readable table, failures first) atomically.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from hmrflow.jobs.batch.ledger import LedgerEntry
from hmrflow.pipeline.atomic import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

TRACKS_FILE = "tracks.parquet"


@dataclass(frozen=True)
class VideoQC:
    """QC numbers of one video (``jitter_m_s3`` None when no track is long enough)."""

    video_id: str
    path: str
    status: str
    attempts: int
    error: str
    frames: int
    people: int
    tracks: int
    observed: int
    filled: int
    filled_frac: float
    jitter_m_s3: float | None
    seconds: float
    output: str


@dataclass
class QCReport:
    """The run's report: ``videos`` plus totals in ``summary``."""

    run_id: str
    videos: list[VideoQC]
    summary: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "summary": self.summary, "videos": [asdict(v) for v in self.videos]}


def root_jitter(out_dir: str | Path) -> float | None:
    """Mean root jerk (m/s^3) over every track of ``OUT/<video_id>/tracks.parquet``; None if unavailable."""
    from hmrflow.priors.metrics import jitter

    path = Path(out_dir) / TRACKS_FILE
    if not path.is_file():
        return None
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["track_id", "frame_idx", "pts_s", "transl"])
    if table.num_rows == 0:
        return None
    tid = table.column("track_id").to_numpy()
    fidx = table.column("frame_idx").to_numpy()
    pts = table.column("pts_s").to_numpy()
    transl = np.asarray(table.column("transl").combine_chunks().flatten().to_numpy(), np.float64).reshape(-1, 3)
    samples = []
    for k in np.unique(tid):
        rows = np.flatnonzero(tid == k)
        rows = rows[np.argsort(fidx[rows], kind="stable")]
        steps = np.diff(pts[rows])
        steps = steps[steps > 0]
        if steps.size == 0:
            continue
        fps = float(np.median(1.0 / steps))
        samples.append(jitter(transl[rows][:, None, :], fidx[rows], fps))
    values = np.concatenate(samples) if samples else np.zeros(0)
    return float(values.mean()) if values.size else None


def build_qc(entries: Sequence[LedgerEntry], run_id: str, summary: Mapping[str, Any] | None = None) -> QCReport:
    """The report of ``entries`` (ledger rows of the run's inputs)."""
    videos = []
    for e in entries:
        jit = None
        if e.status == "done" and e.output:
            try:
                jit = root_jitter(e.output)
            except Exception as exc:  # a damaged output must not stop the report
                log.warning("%s: cannot compute jitter (%s)", e.video_id, exc)
        total = e.observed + e.filled
        videos.append(
            VideoQC(
                video_id=e.video_id,
                path=e.path,
                status=e.status,
                attempts=e.attempts,
                error=e.error,
                frames=e.frames,
                people=e.people,
                tracks=e.tracks,
                observed=e.observed,
                filled=e.filled,
                filled_frac=round(e.filled / total, 6) if total else 0.0,
                jitter_m_s3=None if jit is None or not math.isfinite(jit) else round(jit, 6),
                seconds=round(e.seconds, 3),
                output=e.output,
            )
        )
    done = [v for v in videos if v.status == "done"]
    totals = {
        "videos": len(videos),
        "done": len(done),
        "failed": sum(v.status == "failed" for v in videos),
        "other": sum(v.status not in ("done", "failed") for v in videos),
        "frames": sum(v.frames for v in done),
        "people": sum(v.people for v in done),
        "tracks": sum(v.tracks for v in done),
        "observed": sum(v.observed for v in done),
        "filled": sum(v.filled for v in done),
    }
    return QCReport(run_id=run_id, videos=videos, summary={**dict(summary or {}), "qc_totals": totals})


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v).replace("|", "\\|")


_MD_COLUMNS = (
    "video_id",
    "status",
    "attempts",
    "frames",
    "people",
    "tracks",
    "observed",
    "filled",
    "jitter_m_s3",
    "seconds",
    "error",
)


def qc_markdown(report: QCReport) -> str:
    """A readable Markdown page: totals, then one table row per video (failures first)."""
    t = report.summary.get("qc_totals", {})
    lines = [
        f"# hmrflow QC report: {report.run_id}",
        "",
        f"videos {t.get('videos', 0)}, done {t.get('done', 0)}, failed {t.get('failed', 0)}, "
        f"not finished {t.get('other', 0)}; frames {t.get('frames', 0)}, people {t.get('people', 0)}, "
        f"tracks {t.get('tracks', 0)}, observed/filled track frames {t.get('observed', 0)}/{t.get('filled', 0)}",
        "",
        "jitter: mean root jerk of the written tracks, m/s^3 (lower is smoother).",
        "",
        "| " + " | ".join(_MD_COLUMNS) + " |",
        "|" + "---|" * len(_MD_COLUMNS),
    ]
    order = {"failed": 0, "running": 1, "queued": 2, "done": 3}
    for v in sorted(report.videos, key=lambda v: (order.get(v.status, 9), v.video_id)):
        d = asdict(v)
        lines.append("| " + " | ".join(_fmt(d[c]) for c in _MD_COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def qc_csv(report: QCReport) -> str:
    """One CSV row per video, every :class:`VideoQC` field."""
    buf = io.StringIO()
    names = list(VideoQC.__dataclass_fields__)
    w = csv.DictWriter(buf, fieldnames=names, lineterminator="\n")
    w.writeheader()
    for v in report.videos:
        w.writerow({k: ("" if x is None else x) for k, x in asdict(v).items()})
    return buf.getvalue()


def write_qc(report: QCReport, folder: str | Path) -> Path:
    """Write ``qc.json``, ``qc.csv`` and ``qc.md`` into ``folder`` (created); returns it."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "qc.json", report.to_dict())
    atomic_write_text(out / "qc.csv", qc_csv(report))
    atomic_write_text(out / "qc.md", qc_markdown(report))
    return out
