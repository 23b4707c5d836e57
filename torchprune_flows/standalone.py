"""A loader for flows written by :func:`torchprune_flows.export_flow`: needs only torch and torchdiffeq.

This file imports nothing from torchprune_flows; its source travels inside every exported file
(key ``"loader"``), so a user without the package runs::

    import torch
    exported = torch.load("flow.pt")            # plain tensors, numbers and strings
    namespace = {}
    exec(exported["loader"], namespace)
    flow = namespace["StandaloneFlow"](exported)
    flow.log_prob(x)                              # (N,) log-densities; divergence="exact" optional
    flow.sample(100, generator=torch.Generator().manual_seed(0))

The dynamics are those of the package's CNF blocks (time rescaled to s in [0, 1], the state
packed as ``[z, delta_logp]``, the same solver options), so log-densities and samples match.
"""
import torch
import torchdiffeq
from torch.nn import functional as F

FORMAT = "torchprune_flows.standalone/1"
ACTIVATIONS = {"sigmoid": torch.sigmoid, "softplus": F.softplus, "tanh": torch.tanh, "relu": torch.relu,
               "elu": F.elu, "swish": F.silu}


class StandaloneFlow:
    """A chain of CNF blocks over N(0, I) from the dict an exported file holds."""

    def __init__(self, exported):
        if exported.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} file (format {exported.get('format')!r})")
        self.data_shape = tuple(exported["data_shape"])
        self.blocks = exported["blocks"]

    @staticmethod
    def _field(block, t, z):
        act = ACTIVATIONS[block["activation"]]
        layers = block["layers"]
        for i, layer in enumerate(layers):
            if block["kind"] == "mlp":
                z = F.linear(z, layer["weight"], layer["bias"])
            else:  # concatsquash: main(z) * sigmoid(gate(t)) + shift(t)
                tt = t.reshape(1, 1).to(z.dtype)
                z = (F.linear(z, layer["weight"], layer["bias"])
                     * torch.sigmoid(F.linear(tt, layer["gate_weight"], layer["gate_bias"]))
                     + F.linear(tt, layer["shift_weight"]))
            if i < len(layers) - 1:
                z = act(z)
        return z

    def _solve(self, block, z, delta_logp, reverse, divergence):
        end_time = block["end_time"]
        probe = torch.randn_like(z) if divergence == "hutchinson" else None

        def dynamics(s, state):
            with torch.enable_grad():
                x = state[:, :-1].detach().requires_grad_(True)
                f = self._field(block, s * end_time, x)
                if divergence == "exact":
                    div = sum(torch.autograd.grad(f[:, i].sum(), x, retain_graph=True)[0][:, i]
                              for i in range(f.shape[1]))
                elif divergence == "hutchinson":
                    div = (torch.autograd.grad(f, x, probe)[0] * probe).sum(dim=1)
                else:
                    div = torch.zeros(f.shape[0], dtype=f.dtype)
            return torch.cat([f * end_time, (-div * end_time).reshape(-1, 1)], dim=1).detach()

        solver = block["solver"]
        times = torch.tensor([1.0, 0.0] if reverse else [0.0, 1.0], dtype=z.dtype)
        state = torch.cat([z, delta_logp.reshape(-1, 1)], dim=1)
        out = torchdiffeq.odeint(dynamics, state, times, method=solver["method"], atol=solver["atol"],
                                 rtol=solver["rtol"], options=dict(solver["options"]))[-1]
        return out[:, :-1], out[:, -1]

    @torch.no_grad()
    def log_prob(self, x, divergence=None):
        """log p(x) per sample; ``divergence`` ("exact" / "hutchinson") overrides each block's own."""
        z = x.reshape(x.shape[0], -1)
        delta_logp = torch.zeros(z.shape[0], dtype=z.dtype)
        for block in self.blocks:
            z, delta_logp = self._solve(block, z, delta_logp, False, divergence or block["divergence"])
        log_normal = -0.5 * torch.log(torch.tensor(2 * torch.pi, dtype=z.dtype)) - 0.5 * z.pow(2)
        return log_normal.sum(dim=1) - delta_logp

    @torch.no_grad()
    def sample(self, num_samples, generator=None, z=None):
        """z ~ N(0, I) (or the given ``z``) mapped to data by the flow run backwards."""
        if z is None:
            z = torch.randn((num_samples, *self.data_shape), generator=generator)
        z = z.reshape(z.shape[0], -1)
        delta_logp = torch.zeros(z.shape[0], dtype=z.dtype)
        for block in reversed(self.blocks):
            z, delta_logp = self._solve(block, z, delta_logp, True, "none")
        return z.reshape(z.shape[0], *self.data_shape)
