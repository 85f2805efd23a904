"""Run the pipeline over many videos: resumable, with a job ledger, per-video errors and a QC report.

INPUT is a folder (searched recursively for video files), a glob ("clips/**/*.mp4"), a
CSV/Parquet manifest with a ``path`` column (optional ``start``/``end`` columns: each video's
time window; other columns are carried into each output's manifest as metadata), or one video.
``--start/--end`` set the window of every video whose manifest cells are empty.  Re-running
the same command resumes: done videos are skipped, failed ones retried (``--max-attempts``),
interrupted ones redone.  The ledger is
``OUT/_job/ledger.sqlite``; QC reports go to ``OUT/_job/reports/<run>/``.
Exit code: 0 all done, 1 some videos failed, 2 usage/config error, 3 strict stop.
"""

from __future__ import annotations

import argparse
import logging

from hmrflow.jobs.cli.options import add_preset_arguments, add_window_arguments, window_overrides

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="INPUT", help="folder, glob, CSV/Parquet manifest (path column) or video file")
    parser.add_argument("-o", "--out", required=True, metavar="DIR", help="output root (OUT/<video_id>/ per video)")
    add_preset_arguments(parser, "archive")
    add_window_arguments(parser, per_video="; a manifest's start/end columns win where they are filled")
    parser.add_argument(
        "--address",
        default=None,
        metavar="ADDR",
        help="run on this Ray cluster (e.g. ray://head:10001 or auto); implies --ray",
    )
    parser.add_argument(
        "--ray", action="store_true", help="use the Ray runner (a local Ray instance without --address)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="Ray: decode+model actors (default: as many as the cluster holds: one per GPU, or one "
        "per CPU when no stage runs on a GPU)",
    )
    parser.add_argument(
        "--gpus-per-worker",
        type=float,
        default=None,
        metavar="X",
        help="Ray: GPUs each decode+model actor asks for; a fraction shares a GPU (e.g. 0.5: two "
        "actors per GPU). Default: one GPU per actor when the cluster has GPUs, none otherwise",
    )
    parser.add_argument(
        "--videos-per-pass",
        type=int,
        default=256,
        metavar="N",
        help="Ray: videos per pass (results of a pass are committed together; default 256)",
    )
    parser.add_argument("--num-cpus", type=int, default=None, metavar="N", help="Ray: CPUs of a local Ray instance")
    parser.add_argument(
        "--max-attempts", type=int, default=3, metavar="N", help="starts per video before it stays failed (default 3)"
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="clinical mode: damaged files are errors and the first failure stops the run",
    )
    parser.add_argument(
        "--stall-timeout",
        type=float,
        default=600.0,
        metavar="S",
        help="fail a video whose decoder/stages make no progress for S seconds (default 600)",
    )
    parser.add_argument(
        "--video-timeout",
        type=float,
        default=None,
        metavar="S",
        help="fail a video that takes longer than S seconds in total (default: no limit)",
    )
    parser.add_argument(
        "--no-isolate", action="store_true", help="run in this process (no hang timeouts; for debugging)"
    )
    parser.add_argument(
        "--pipeline",
        default=None,
        metavar="MODULE:FUNCTION",
        help="advanced: function (cfg, out_root) -> PipelineSpec with custom stages",
    )
    parser.add_argument("--name", default="batch", help="run name (prefix of the run id / report folder)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from hmrflow.jobs.batch.inputs import check_windows, enumerate_inputs
    from hmrflow.jobs.batch.run import BatchOptions, run_batch
    from hmrflow.jobs.pipelines import build_spec
    from hmrflow.pipeline.config import load_config
    from hmrflow.pipeline.provenance import config_hash

    overrides = [*window_overrides(args), *args.overrides]
    if args.strict:
        overrides.append("decode.allow_truncated=false")
    cfg = load_config(args.preset, overrides)
    inputs = enumerate_inputs(args.input)
    check_windows(inputs, cfg.decode.window)
    spec = build_spec(cfg, args.out, args.pipeline)
    job_hash = config_hash({"config": spec.config, "pipeline": args.pipeline}) if args.pipeline else None
    options = BatchOptions(
        runner="ray" if (args.ray or args.address) else "local",
        max_attempts=args.max_attempts,
        strict=args.strict,
        stall_timeout_s=args.stall_timeout,
        video_timeout_s=args.video_timeout,
        isolate=not args.no_isolate,
        address=args.address,
        ray_workers=args.workers,
        ray_num_cpus=args.num_cpus,
        ray_gpus_per_worker=args.gpus_per_worker,
        videos_per_pass=args.videos_per_pass,
        run_name=args.name,
        progress=not args.no_progress,
    )
    log.info(
        "%d videos from %s -> %s (%s runner, preset %s)", len(inputs), args.input, args.out, options.runner, cfg.preset
    )
    summary = run_batch(inputs, spec, args.out, options, job_hash=job_hash)
    print(summary.table())
    return summary.exit_code
