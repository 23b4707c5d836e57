"""Solver options encoded in network-name suffixes (``_da``, ``_high_tol``, ``_rk4_autograd``, ...).

Suffixes combine left to right, later ones overriding earlier options (``_da_autograd``).
"""
from ..registry import Choices

SUFFIX_OPTIONS = {
    "da": dict(method="dopri5", adjoint=True),
    "high_tol": dict(atol=1e-4, rtol=1e-4),
    "dopri_adjoint": dict(method="dopri5", adjoint=True),
    "dopri_autograd": dict(method="dopri5", adjoint=False),
    "rk4_adjoint": dict(method="rk4", adjoint=True),
    "rk4_autograd": dict(method="rk4", adjoint=False),
    "euler_adjoint": dict(method="euler", adjoint=True),
    "euler_autograd": dict(method="euler", adjoint=False),
    "autograd": dict(adjoint=False),  # after "_da": torchprune's "_da_autograd" = dopri5, backprop
}


def parse_solver_suffix(suffix):
    """Solver options from a suffix such as ``"da"`` or ``"da_high_tol"`` (None -> {})."""
    options, rest = {}, suffix or ""
    while rest:
        for key in sorted(SUFFIX_OPTIONS, key=len, reverse=True):
            if rest == key or rest.startswith(key + "_"):
                options.update(SUFFIX_OPTIONS[key])
                rest = rest[len(key) + 1:]
                break
        else:
            raise ValueError(
                f"unknown network suffix '_{rest}'; valid suffixes: "
                + ", ".join("_" + k for k in SUFFIX_OPTIONS)
            )
    return options


#: the ``{suffix}`` field of the network families' names: suffixes joined by "_"
SUFFIX_CHOICES = Choices(SUFFIX_OPTIONS, joined="_", check=parse_solver_suffix)
