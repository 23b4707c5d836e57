"""Analyses of trained (and pruned) flows: the loss-surface Hessian (:mod:`.hessian`) and mode
coverage of samples from Gaussian mixtures (:mod:`.modes`)."""
from .hessian import (HessianOperator, KeptParameters, Spectrum, TraceEstimate, condition_number,
                      dense_hessian, hessian_summary, hutchinson_trace, lambda_max, positive_threshold,
                      rademacher, slq_spectrum)
from .modes import gaussian_mass_within, mode_coverage

__all__ = [
    "HessianOperator", "KeptParameters", "Spectrum", "TraceEstimate", "condition_number", "dense_hessian",
    "hessian_summary", "gaussian_mass_within", "hutchinson_trace", "lambda_max",
    "mode_coverage", "positive_threshold", "rademacher", "slq_spectrum",
]
