"""The error every solver backend raises when it cannot integrate."""


class SolverError(RuntimeError):
    """The solver could not integrate (step size underflow, too many steps, non-finite state)."""
