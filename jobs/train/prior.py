"""``hmrflow train prior``: train the motion-prior diffusion denoiser (resumable).

Trains on the procedural motion library (plus AMASS-style ``.npz`` files with
``--amass-dir``) with simulated per-frame estimates as conditioning
(:mod:`hmrflow.priors.motion_diffusion.train`), checkpoints every epoch to
``WORK/resume.pt`` (``--resume`` continues), exports the model to ``--out`` after every epoch
(``config.json`` + safetensors weights, ``scheduler_config.json``, ``train_config.json``), then
validates the refine stage with it on held-out synthetic tracks and writes ``validation.json``
beside the weights (:mod:`hmrflow.jobs.bench.refine_eval`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=None, help="output folder (default: the bundled prior folder in the package)")
    p.add_argument("--work-dir", default="prior_train", help="resume checkpoint folder")
    p.add_argument("--resume", action="store_true", help="continue from WORK/resume.pt")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--steps-per-epoch", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--max-minutes", type=float, default=None, help="stop after the epoch that passes this")
    p.add_argument("--motions", type=int, default=None, help="library motions in the training bank")
    p.add_argument(
        "--amass",
        "--amass-dir",
        dest="amass_dir",
        default=None,
        help="also train on AMASS .npz files under this folder (SMPL-H 156-d or SMPL 72-d poses, any fps)",
    )
    p.add_argument(
        "--pairs",
        nargs="+",
        default=None,
        help="folders written by `hmrflow train prior-pairs`: condition on image features, train on real tracks",
    )
    p.add_argument("--init-from", default=None, help="start from this prior folder (its weights are copied)")
    p.add_argument("--real-fraction", type=float, default=None, help="share of each batch from --pairs windows")
    p.add_argument("--joint-weight", type=float, default=None, help="weight of the joint-position loss")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument(
        "--feature-estimator",
        default="auto",
        help="comma-separated estimator ids whose features the pairs hold (auto: the bundled plain and ECLM "
        "tiny estimators; '' for any)",
    )
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--val-tracks", type=int, default=12, help="held-out tracks for validation.json (0 = skip)")
    p.add_argument("--val-seconds", type=float, default=10.0)
    p.add_argument(
        "--val-pairs",
        default=None,
        help="pairs of held-out clips (hmrflow train prior-pairs): also score refinement on them in validation.json",
    )


def validate(out: Path, tracks: int, seconds: float, threads: int, val_pairs: str | None = None) -> dict:
    """Score the refine stage with the prior in ``out``; write ``out/validation.json``."""
    from hmrflow.jobs.bench.refine_eval import evaluate, format_report, make_tracks
    from hmrflow.pipeline.config import EstimateConfig, RefineConfig
    from hmrflow.stages.mesh.stage import estimator_feature_id

    cfg = RefineConfig(weights=str(out), device="cpu")
    res = evaluate(make_tracks(tracks, seconds), cfg, threads)
    res["note"] = (
        "noise-model tracks: held-out library seeds 200000+, noise model defaults, no image features; "
        "per-frame figures on observed frames; fps measured on the shared build machine"
    )
    if val_pairs:
        from hmrflow.jobs.bench.refine_pairs import evaluate_pairs, format_sets

        pr = evaluate_pairs(val_pairs, cfg, feature_source=estimator_feature_id(EstimateConfig()), threads=threads)
        res["pipeline_pairs"] = {
            "folder": str(val_pairs),
            "sets": pr["sets"],
            "fps": pr["fps"],
            "note": "the pipeline's own tracks on rendered clips not used for training, paired with ground truth "
            "(hmrflow bench refine-pairs); mm",
        }
        log.info("validation on pipeline pairs:\n%s", format_sets(pr))
    tmp = out / "validation.json.tmp"
    tmp.write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, out / "validation.json")
    log.info("validation:\n%s", format_report(res))
    return res


def _feature_estimators(value: str) -> str | None:
    """``auto`` -> the ids of the bundled tiny estimator files (plain and ECLM); else ``value``."""
    if value != "auto":
        return value or None
    from hmrflow.pipeline.config import EstimateConfig
    from hmrflow.stages.mesh.stage import estimator_feature_id

    ids = [estimator_feature_id(EstimateConfig(eclm=e)) for e in (False, True)]
    return ",".join(i for i in ids if i) or None


def run(args: argparse.Namespace) -> int:
    from hmrflow.priors.motion_diffusion import BUNDLED_PRIOR
    from hmrflow.priors.motion_diffusion.train import TrainConfig, train_prior

    cfg = TrainConfig()
    changes = {
        k: v
        for k, v in dict(
            epochs=args.epochs,
            steps_per_epoch=args.steps_per_epoch,
            batch_size=args.batch_size,
            max_minutes=args.max_minutes,
            n_motions=args.motions,
            amass_dir=args.amass_dir,
            seed=args.seed,
            threads=args.threads,
            pairs_dirs=tuple(args.pairs) if args.pairs else None,
            init_from=args.init_from,
            real_fraction=args.real_fraction,
            joint_weight=args.joint_weight,
            lr=args.lr,
        ).items()
        if v is not None
    }
    if args.pairs:
        changes["feature_estimator"] = _feature_estimators(args.feature_estimator)
    cfg = TrainConfig.from_dict({**cfg.to_dict(), **changes})
    out = Path(args.out) if args.out else BUNDLED_PRIOR
    train_prior(cfg, out, Path(args.work_dir), resume=args.resume)
    if args.val_tracks > 0:
        validate(out, args.val_tracks, args.val_seconds, args.threads, args.val_pairs)
    print(f"prior written to {out}")
    return 0
