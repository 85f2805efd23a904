"""Trainers behind ``hmrflow train TARGET`` (one module per target: detector, estimator, ...)."""
