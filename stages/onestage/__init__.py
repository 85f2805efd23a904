"""One-stage multi-person estimation (SAT-HMR, issue 20): so far the scale-adaptive tokens."""
