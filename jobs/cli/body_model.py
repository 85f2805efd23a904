"""Make or check body model files (``hmrflow body-model make DIR`` / ``check PATH``).

``make DIR [--seed N]`` writes ``DIR/SMPL_NEUTRAL.pkl``: the procedural synthetic body in
SMPL's pickle format, loadable by smplx and by ``--body-model DIR``.
``check PATH`` loads a folder (``SMPL_{NEUTRAL,MALE,FEMALE}.pkl`` or the official
``basicModel_*`` names) or one ``.pkl``/``.npz`` file and prints vertex count, joints and hash.
"""

from __future__ import annotations

import argparse
import logging
import time

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``make`` and ``check`` sub-actions."""
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    mk = sub.add_parser("make", help="write the synthetic body model as DIR/SMPL_NEUTRAL.pkl")
    mk.add_argument("dir", metavar="DIR", help="output folder (created if missing)")
    mk.add_argument("--seed", type=int, default=0, help="0 = the canonical synthetic body (default)")
    ck = sub.add_parser("check", help="load a body model folder or file and print its facts")
    ck.add_argument("path", metavar="PATH", help="folder with SMPL_NEUTRAL.pkl etc., or one .pkl file")
    ck.add_argument("--gender", choices=("neutral", "male", "female"), default="neutral")


def run(args: argparse.Namespace) -> int:
    """Execute ``make`` or ``check``; errors surface as HmrflowError (one line)."""
    import os

    if args.action == "make":
        from hmrflow.priors.body_model import arrays_sha256, validate_smpl_arrays
        from hmrflow.priors.synthetic_body import make_synthetic_body_model, write_smpl_pickle

        t0 = time.perf_counter()
        arrays = make_synthetic_body_model(seed=args.seed)
        out = os.path.join(args.dir, "SMPL_NEUTRAL.pkl")
        write_smpl_pickle(arrays, out)
        sha = arrays_sha256(validate_smpl_arrays(arrays, out))
        print(
            f"{out}: synthetic body (seed {args.seed}), {arrays['v_template'].shape[0]} vertices, "
            f"{arrays['f'].shape[0]} faces, sha256 {sha} ({time.perf_counter() - t0:.1f} s)"
        )
        return 0

    import torch

    from hmrflow.priors.body_model import load_body_model
    from hmrflow.priors.skeleton import JOINT_NAMES

    bm = load_body_model("smpl", path=args.path, gender=args.gender)
    with torch.no_grad():
        j = bm.rest_joints(batch=1)[0]
        verts = bm.layer.v_template
    height = float(verts[:, 1].max() - verts[:, 1].min())
    print(
        f"{bm.source}: {bm.n_vertices} vertices, {len(bm.faces)} faces, {len(bm.parents)} joints "
        f"({', '.join(JOINT_NAMES[:3])}, ...), rest height {height:.3f} m, sha256 {bm.sha256}"
    )
    log.debug("rest joints:\n%s", j.numpy())
    return 0
