"""``python -m hmrflow.jobs.cli`` is the ``hmrflow`` command."""

import sys

from hmrflow.jobs.cli import main

sys.exit(main())
