"""Motion-prior diffusion: a denoiser over windows of SMPL motion, conditioned on per-frame
estimates (pose space), with DDPM training and few-step DDIM / DPM-Solver sampling.

Design choice: the diffusion runs directly in pose space (6D rotations + root position) and is
conditioned on the per-frame estimates themselves, not on a motion-VAE latent conditioned on
image-encoder features (FastHMR).  The refine stage only receives SMPL parameters (images are
dropped after the mesh stage), so estimate-space conditioning needs no extra features to be
carried between stages, a single model is trained (no VAE stage), filled frames are plain
"unobserved" positions of the same model, and the output is directly the refined motion.

Modules: :mod:`.representation` (features, canonical frames), :mod:`.denoiser`,
:mod:`.noise_model`, :mod:`.sampling`, :mod:`.train`.
"""

from __future__ import annotations

from pathlib import Path

from hmrflow.pipeline.errors import CheckpointError

#: the bundled checkpoint folder (config.json + weights, train_config.json, validation.json)
BUNDLED_PRIOR = Path(__file__).resolve().parent.parent / "weights" / "prior"


def load_prior(path: str | Path | None = None, device: str = "cpu"):
    """Load a :class:`~.denoiser.MotionDenoiser` from a folder (default: the bundled prior), eval mode.

    Raises :class:`FileNotFoundError` naming the folder when it holds no config.json.
    """
    from hmrflow.priors.motion_diffusion.denoiser import MotionDenoiser

    folder = Path(path) if path is not None else BUNDLED_PRIOR
    if not (folder / "config.json").is_file():
        raise CheckpointError(
            f"{folder}: no motion prior here (config.json missing); train one with 'hmrflow train prior --out FOLDER'"
        )
    model = MotionDenoiser.from_pretrained(str(folder), local_files_only=True, low_cpu_mem_usage=False)
    return model.to(device).eval()


def load_schedule(path: str | Path | None = None) -> dict:
    """The training schedule stored beside the weights (scheduler_config.json), or the default."""
    import json

    from hmrflow.priors.motion_diffusion.sampling import TRAIN_SCHEDULE

    folder = Path(path) if path is not None else BUNDLED_PRIOR
    f = folder / "scheduler_config.json"
    if f.is_file():
        cfg = json.loads(f.read_text(encoding="utf-8"))
        return {k: v for k, v in cfg.items() if not k.startswith("_")}
    return dict(TRAIN_SCHEDULE)
