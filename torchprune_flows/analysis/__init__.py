"""Analyses of trained (and pruned) flows: the loss-surface Hessian (:mod:`.hessian`), mode
coverage of samples from Gaussian mixtures (:mod:`.modes`) and a 2-D flow's density and vector
field on a grid (:mod:`.grid`), the FLOPs of one vector-field evaluation (:mod:`.flops`) and the peak memory of a call
(:mod:`.memory`)."""
from .flops import vector_field_flops
from .grid import density_on_grid, field_on_grid
from .memory import peak_memory_mib
from .hessian import (HessianOperator, KeptParameters, Spectrum, TraceEstimate, condition_number,
                      dense_hessian, hessian_summary, hutchinson_trace, lambda_max, positive_threshold,
                      rademacher, slq_spectrum)
from .modes import gaussian_mass_within, mode_coverage

__all__ = [
    "HessianOperator", "KeptParameters", "Spectrum", "TraceEstimate", "condition_number", "dense_hessian", "density_on_grid", "field_on_grid",
    "hessian_summary", "gaussian_mass_within", "hutchinson_trace", "lambda_max",
    "mode_coverage", "peak_memory_mib", "positive_threshold", "rademacher", "slq_spectrum", "vector_field_flops",
]
