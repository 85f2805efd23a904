"""Estimator acceleration: Mask-ToMe token merging and ECLM layer merging.

* :mod:`.merge`: bipartite soft matching as pure functions (with protected tokens).
* :mod:`.tome`: :func:`apply_mask_tome` (person-protecting token merging, proportional attention).
* :mod:`.eclm`: error-constrained layer merging, merged checkpoints.
* :mod:`.flops`: analytic FLOPs of the estimator per variant.
"""
