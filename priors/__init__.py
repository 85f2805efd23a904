"""hmrflow.priors: pure torch body model, rotations, motion library, motion diffusion. No pipeline types."""
