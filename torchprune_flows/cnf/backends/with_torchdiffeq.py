"""``backend: torchdiffeq``: ``torchdiffeq.odeint`` / ``odeint_adjoint`` for every method it has."""
import torch

#: torchdiffeq's methods (it has no tsit5, which torchdyn has)
METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun",
           "euler", "midpoint", "rk4", "heun3", "explicit_adams", "implicit_adams")


def integrate(func, y0, t0, t1, spec, adjoint_params):
    import torchdiffeq

    t = torch.tensor([t0, t1], dtype=y0.dtype, device=y0.device)
    options = {"step_size": spec.step_size} if spec.fixed_step else {"max_num_steps": spec.max_num_steps}
    if not spec.fixed_step:
        # step exactly onto the end time: by default torchdiffeq steps past it and returns its
        # 4th-order dense output there (z(T) 6.7e-5 off on the MINIBOONE net instead of 1.6e-9)
        options["step_t"] = t[-1:]
    kwargs = dict(rtol=spec.rtol, atol=spec.atol, method=spec.method, options=options)
    if spec.adjoint:
        # the backward solve gets the forward's options (torchdiffeq copies them only when
        # adjoint_options is None): without step_size a fixed-step adjoint takes one step over the
        # whole interval; a seminorm only matters to adaptive steps
        adjoint_options = dict(options, norm="seminorm") if spec.seminorm and not spec.fixed_step else dict(options)
        if "step_t" in adjoint_options:
            # the backward solve ends at the start time; for a decreasing t torchdiffeq runs the
            # adjoint in its own reversed time (-t) without reversing adjoint_options, so give -t0
            adjoint_options["step_t"] = t[:1] if t[-1] > t[0] else -t[:1]
        adjoint_atol, adjoint_rtol = spec.adjoint_tolerances
        return torchdiffeq.odeint_adjoint(
            func, y0, t, adjoint_params=tuple(adjoint_params), adjoint_options=adjoint_options,
            adjoint_atol=adjoint_atol, adjoint_rtol=adjoint_rtol, **kwargs
        )[-1]
    return torchdiffeq.odeint(func, y0, t, **kwargs)[-1]
