"""Analyses of trained (and pruned) flows: the loss-surface Hessian (:mod:`.hessian`)."""
from .hessian import (HessianOperator, KeptParameters, Spectrum, TraceEstimate, condition_number,
                      dense_hessian, hessian_summary, hutchinson_trace, lambda_max, positive_threshold,
                      rademacher, slq_spectrum)

__all__ = [
    "HessianOperator", "KeptParameters", "Spectrum", "TraceEstimate", "condition_number", "dense_hessian",
    "hessian_summary", "hutchinson_trace", "lambda_max", "positive_threshold", "rademacher", "slq_spectrum",
]
