"""hmrflow.jobs: the CLI, batch jobs, scheduled job specs, reports."""
