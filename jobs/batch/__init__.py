"""The batch job: many videos through one pipeline, resumable and auditable.

* :mod:`.inputs` -- which videos a job covers (folder, glob, CSV/Parquet manifest);
* :mod:`.job_spec` -- scheduled-run specs (``hmrflow job run SPEC.yaml``);
* :mod:`.locking` -- one job per output folder (cron-safe lock);
* :mod:`.ledger` -- the SQLite ledger of what is queued, running, done or failed;
* :mod:`.run` -- :func:`~.run.run_batch`, which ``hmrflow batch`` and ``hmrflow job`` execute;
* :mod:`.qc` -- the run's QC report.
"""
