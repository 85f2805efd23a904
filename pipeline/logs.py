"""Logging set-up for the CLI (library code only calls ``logging.getLogger``)."""

from __future__ import annotations

import logging
import warnings


def setup_logging(verbosity: int = 0) -> None:
    """Configure the root logger: 0 = INFO, 1+ = DEBUG, -1 = WARNING."""
    level = logging.DEBUG if verbosity > 0 else logging.WARNING if verbosity < 0 else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", force=True)
    logging.captureWarnings(True)
    # Third-party deprecation chatter is not actionable for users.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    for noisy in ("ray", "urllib3", "PIL", "matplotlib"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
