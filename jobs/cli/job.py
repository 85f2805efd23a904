"""Scheduled runs from a job spec: ``hmrflow job run SPEC.yaml`` (safe to start from cron).

The spec (see :mod:`hmrflow.jobs.batch.job_spec`) names input folders/patterns or manifests, a
config preset, the output root, strictness and a run name.  A run that finds the previous
one still going (the output root's lock is held) does nothing and exits 0; otherwise it
processes what is new or unfinished (the ledger makes runs idempotent) and writes a QC
report.  ``hmrflow job check SPEC.yaml`` validates a spec and lists its inputs.
"""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="job_command", metavar="ACTION", required=True)
    r = sub.add_parser("run", help="run a job spec (idempotent; exits 0 when a previous run still holds the lock)")
    r.add_argument("spec", metavar="SPEC.yaml")
    r.add_argument("--no-progress", action="store_true", help="no progress bars (cron)")
    c = sub.add_parser("check", help="validate a job spec and count its inputs")
    c.add_argument("spec", metavar="SPEC.yaml")


def run(args: argparse.Namespace) -> int:
    from hmrflow.jobs.batch.inputs import check_windows
    from hmrflow.jobs.batch.job_spec import job_inputs, load_job_spec
    from hmrflow.jobs.batch.locking import LockHeld
    from hmrflow.jobs.batch.run import BatchOptions, run_batch
    from hmrflow.jobs.pipelines import build_spec
    from hmrflow.pipeline.config import load_config
    from hmrflow.pipeline.provenance import config_hash

    spec_file = load_job_spec(args.spec)
    cfg = load_config(spec_file.preset, spec_file.config_overrides())
    if args.job_command == "check":
        inputs = job_inputs(spec_file)
        check_windows(inputs, cfg.decode.window)
        own = sum(1 for v in inputs if v.window.is_set)
        window = f"; window {cfg.decode.window}" if cfg.decode.window.is_set else ""
        print(
            f"{args.spec}: valid; {len(inputs)} videos ({own} with their own window); preset {cfg.preset} "
            f"(config {cfg.config_hash()}); output {spec_file.output}; strict {spec_file.strict}{window}"
        )
        return 0
    from hmrflow.jobs.batch.locking import JobLock
    from hmrflow.jobs.batch.run import lock_path

    try:  # cheap early check: a cron start during a long run should not even enumerate inputs
        JobLock(lock_path(spec_file.output)).acquire().release()
    except LockHeld as exc:
        log.info("nothing to do: %s", exc)
        print(f"hmrflow job: previous run still going; nothing done ({exc.holder.get('what', '')})")
        return 0
    inputs = job_inputs(spec_file)
    check_windows(inputs, cfg.decode.window)
    pipe = build_spec(cfg, spec_file.output, spec_file.pipeline)
    job_hash = config_hash({"config": pipe.config, "pipeline": spec_file.pipeline}) if spec_file.pipeline else None
    options = BatchOptions(
        runner=spec_file.runner,
        max_attempts=spec_file.max_attempts,
        strict=spec_file.strict,
        stall_timeout_s=spec_file.stall_timeout_s,
        video_timeout_s=spec_file.video_timeout_s,
        address=spec_file.address,
        run_name=spec_file.name,
        progress=not args.no_progress,
    )
    try:
        summary = run_batch(inputs, pipe, spec_file.output, options, job_hash=job_hash)
    except LockHeld as exc:
        log.info("nothing to do: %s", exc)
        print(f"hmrflow job: previous run still going; nothing done ({exc.holder.get('what', '')})")
        return 0
    print(summary.table())
    return summary.exit_code
