"""The augmented dynamics of a CNF: the state and the change of its log-density."""
import math

import torch
from torch import nn

from .divergence import DIVERGENCES, sample_probe


class AugmentedDynamics(nn.Module):
    """d/ds [z, delta_logp] = T * [f(s T, z), -div f(s T, z)] for s in [0, 1].

    Integrating over s in [0, 1] with the vector field scaled by the end time T makes T an
    ordinary parameter (``sqrt_end_time``, T = sqrt_end_time^2) for every solver and backend.
    The state travels packed as one tensor ``[z.flatten(1), delta_logp]`` of shape (B, n + 1).
    ``num_evals`` counts calls of the vector field; the probe is fixed for the whole solve.
    ``divergence="none"`` integrates the state alone (a neural ODE that is not a density).
    """

    def __init__(self, vector_field, divergence="hutchinson", probe="gaussian", end_time=1.0,
                 train_end_time=False):
        super().__init__()
        if divergence not in DIVERGENCES:
            raise ValueError(f"unknown divergence '{divergence}'; choose from {', '.join(DIVERGENCES)}")
        self.vector_field = vector_field
        self.divergence = divergence
        self.probe_kind = probe
        sqrt_t = torch.tensor(math.sqrt(end_time))
        if train_end_time:
            self.sqrt_end_time = nn.Parameter(sqrt_t)
        else:
            self.register_buffer("sqrt_end_time", sqrt_t)
        self.num_evals = 0
        self.state_shape = None
        self.probe = None

    @property
    def end_time(self):
        return self.sqrt_end_time * self.sqrt_end_time

    def begin_solve(self, z):
        """Fix the shape of z and the Hutchinson probe for the coming solve."""
        self.state_shape = z.shape[1:]
        self.probe = sample_probe(z, self.probe_kind) if DIVERGENCES[self.divergence].uses_probe else None

    def pack(self, z, delta_logp):
        return torch.cat([z.reshape(z.shape[0], -1), delta_logp.reshape(-1, 1)], dim=1)

    def unpack(self, state):
        return state[:, :-1].reshape(state.shape[0], *self.state_shape), state[:, -1]

    def forward(self, t, x):
        # (t, x) are the names torchdyn looks for; t is the rescaled time s, x the packed state
        s, state = t, x
        self.num_evals += 1
        create_graph = torch.is_grad_enabled()
        end_time = self.end_time
        with torch.enable_grad():
            z, _ = self.unpack(state)
            if not z.requires_grad:
                z = z.detach().requires_grad_(True)
            f = self.vector_field(s * end_time, z)
            div = DIVERGENCES[self.divergence].function(f, z, create_graph, probe=self.probe)
        dz = f * end_time
        d_logp = -div * end_time
        out = torch.cat([dz.reshape(dz.shape[0], -1), d_logp.reshape(-1, 1)], dim=1)
        return out if create_graph else out.detach()
