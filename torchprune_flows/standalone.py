"""A loader for flows written by :func:`torchprune_flows.export_flow`: needs only torch and torchdiffeq.

This file imports nothing from torchprune_flows; its source travels inside every exported file
(key ``"loader"``), so a user without the package runs::

    import torch
    exported = torch.load("flow.pt", weights_only=True)   # plain tensors, numbers and strings
    namespace = {}
    exec(exported["loader"], namespace)
    flow = namespace["StandaloneFlow"](exported)
    flow.log_prob(x)                              # (N,) log-densities in nats; divergence="exact" optional
    flow.sample(100, generator=torch.Generator().manual_seed(0))

On a GPU, load the tensors there (``torch.load(path, map_location="cuda", weights_only=True)``)
and pass data on it: every tensor the flow makes goes on its data's (or, sampling, its weights')
device; a CPU generator draws on the CPU, so a seed gives the same probes and samples anywhere.

The dynamics are those of the package's CNF blocks (time rescaled to s in [0, 1], the state
packed as ``[z.flatten(1), delta_logp]``, the same solver options), so log-densities and samples
match. Format ``/2`` holds ``stages``: lists of layers (CNF blocks with an MLP, concatsquash or
concat-conv vector field; ``logit`` and ``squeeze``), and between consecutive stages the second
half of the channels is factored out to the latent (the multiscale image flows); toy and tabular
flows are one stage of CNF blocks. Format ``/1`` files (``blocks``: one chain of CNF blocks) load too.
The kinds this loader reads are the keys of :data:`FIELD_KINDS` and :data:`LAYER_KINDS`.

``log_prob`` is the log-density in nats per sample (per image for image flows: of the image
scaled to [0, 1], including the logit transform's log-determinant); ``bits_per_dim`` converts it
for 8-bit data. Blocks that use Hutchinson's estimator (the image flows) draw one probe per block
and call, from ``generator`` or else torch's global random stream as the package does, so
``torch.manual_seed(s)`` before both gives the package's own estimate; it is unbiased, and its
spread shrinks when several calls are averaged. ``divergence="exact"`` costs one backward pass
per data dimension and function evaluation: fine for tabular data, very slow for images.
"""
import math

import torch
import torchdiffeq
from torch.nn import functional as F

FORMAT = "torchprune_flows.standalone/2"
READABLE_FORMATS = ("torchprune_flows.standalone/1", FORMAT)
#: the activations of the package's vector fields, by name (this file imports nothing from the
#: package: tests check that this equals its table, torchprune_flows.cnf.activations)
ACTIVATIONS = {"sigmoid": torch.sigmoid, "softplus": F.softplus, "tanh": torch.tanh, "relu": torch.relu,
               "elu": F.elu, "swish": F.silu}


def _mlp(layer, t, z):
    return F.linear(z, layer["weight"], layer["bias"])


def _concatsquash(layer, t, z):  # main(z) * sigmoid(gate(t)) + shift(t)
    tt = t.reshape(1, 1).to(z.dtype)
    return (F.linear(z, layer["weight"], layer["bias"])
            * torch.sigmoid(F.linear(tt, layer["gate_weight"], layer["gate_bias"]))
            + F.linear(tt, layer["shift_weight"]))


def _concatconv(layer, t, z):  # conv(z) + a bias-free conv over one channel that holds t everywhere
    tt = t.to(z.dtype).expand(1, 1, *z.shape[2:])
    return (F.conv2d(z, layer["weight"], layer["bias"], padding=layer["padding"])
            + F.conv2d(tt, layer["time_weight"], padding=layer["padding"]))


#: the vector fields of CNF blocks, by the block's ``kind``: one layer ``(layer, t, z) -> z``; the
#: block's activation goes between consecutive layers (the package's side: export.FIELD_EXPORTS)
FIELD_KINDS = {"mlp": _mlp, "concatsquash": _concatsquash, "concatconv": _concatconv}


def _squeeze(layer, x, delta_logp, reverse):  # every 2x2 patch into the channels: (C, H, W) -> (4C, H/2, W/2)
    b, c, h, w = x.shape
    if reverse:
        x = x.reshape(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c // 4, 2 * h, 2 * w)
    else:
        x = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, 4 * c, h // 2, w // 2)
    return x, delta_logp


def _logit(layer, x, delta_logp, reverse):  # y = logit(alpha + (1 - 2 alpha) x); delta_logp -= log |dy/dx|
    alpha = layer["alpha"]
    s = torch.sigmoid(x) if reverse else alpha + (1 - 2 * alpha) * x
    log_det = (math.log(1 - 2 * alpha) - torch.log(s) - torch.log1p(-s)).reshape(x.shape[0], -1).sum(dim=1)
    if reverse:
        return (s - alpha) / (1 - 2 * alpha), delta_logp + log_det
    return torch.log(s) - torch.log1p(-s), delta_logp - log_det


#: the other layers, by ``kind``: ``(apply, shape)``, ``apply(layer, x, delta_logp, reverse) -> (x,
#: delta_logp)`` in the density direction (``reverse=False``) or the sampling one, ``shape(c, h, w)``
#: the shape it makes of one sample's (the package's side: export.LAYER_EXPORTS)
LAYER_KINDS = {"squeeze": (_squeeze, lambda c, h, w: (4 * c, h // 2, w // 2)),
               "logit": (_logit, lambda *shape: shape)}


def _check_layer(layer):
    """Raise ``ValueError`` unless this loader knows the layer's kind and (CNF blocks) activation."""
    kind = layer.get("kind")
    if kind in FIELD_KINDS:
        if len(layer["layers"]) > 1 and layer.get("activation") not in ACTIVATIONS:
            raise ValueError(f"unknown activation {layer.get('activation')!r} in a {kind} block; this loader "
                             f"reads {', '.join(ACTIVATIONS)}")
    elif kind not in LAYER_KINDS:
        raise ValueError(f"unknown layer kind {kind!r}; this loader reads {', '.join([*FIELD_KINDS, *LAYER_KINDS])}")


class StandaloneFlow:
    """Stages of flow layers over N(0, I), from the dict an exported file holds."""

    def __init__(self, exported):
        if exported.get("format") not in READABLE_FORMATS:
            raise ValueError(f"not a {FORMAT} file (format {exported.get('format')!r})")
        self.data_shape = tuple(exported["data_shape"])
        self.stages = exported["stages"] if "stages" in exported else [exported["blocks"]]
        # the shape at the end of every stage, before its second half of channels is factored out
        shape, self.stage_shapes = list(self.data_shape), []
        for stage in self.stages:
            for layer in stage:
                _check_layer(layer)
                if layer["kind"] in LAYER_KINDS:
                    shape = list(LAYER_KINDS[layer["kind"]][1](*shape))
            self.stage_shapes.append(tuple(shape))
            shape[0] //= 2

    @staticmethod
    def _field(block, t, z):
        layer_map, layers = FIELD_KINDS[block["kind"]], block["layers"]
        for i, layer in enumerate(layers):
            z = layer_map(layer, t, z)
            if i < len(layers) - 1:
                z = ACTIVATIONS[block["activation"]](z)
        return z

    @staticmethod
    def _probe(block, z, generator):
        device = z.device if generator is None else generator.device
        if block.get("probe", "gaussian") == "rademacher":
            probe = torch.randint(0, 2, z.shape, generator=generator, device=device).to(z.dtype).mul_(2).sub_(1)
        else:
            probe = torch.randn(z.shape, generator=generator, dtype=z.dtype, device=device)
        return probe.to(z.device)

    @property
    def device(self):
        """The device of the flow's weights (where :meth:`sample` puts its draws)."""
        for stage in self.stages:
            for layer in stage:
                for block_layer in layer.get("layers", []):
                    for tensor in block_layer.values():
                        if torch.is_tensor(tensor):
                            return tensor.device
        return torch.device("cpu")

    def _solve(self, block, z, delta_logp, reverse, divergence, generator):
        shape, end_time = z.shape, block["end_time"]
        probe = self._probe(block, z, generator).reshape(shape[0], -1) if divergence == "hutchinson" else None

        def dynamics(s, state):
            with torch.enable_grad():
                x = state[:, :-1].detach().requires_grad_(True)
                f = self._field(block, s * end_time, x.reshape(shape)).reshape(shape[0], -1)
                if divergence == "exact":
                    div = sum(torch.autograd.grad(f[:, i].sum(), x, retain_graph=True)[0][:, i]
                              for i in range(f.shape[1]))
                elif divergence == "hutchinson":
                    div = (torch.autograd.grad(f, x, probe)[0] * probe).sum(dim=1)
                else:
                    div = f.new_zeros(f.shape[0])
            return torch.cat([f * end_time, (-div * end_time).reshape(-1, 1)], dim=1).detach()

        solver = block["solver"]
        times = torch.tensor([1.0, 0.0] if reverse else [0.0, 1.0], dtype=z.dtype, device=z.device)
        state = torch.cat([z.reshape(shape[0], -1), delta_logp.reshape(-1, 1)], dim=1)
        options = dict(solver["options"])
        if "step_size" not in options:  # adaptive: step exactly onto the end time, as the package does
            options["step_t"] = times[-1:]
        out = torchdiffeq.odeint(dynamics, state, times, method=solver["method"], atol=solver["atol"],
                                 rtol=solver["rtol"], options=options)[-1]
        return out[:, :-1].reshape(shape), out[:, -1]

    def _layer(self, layer, x, delta_logp, reverse, divergence, generator):
        """One layer in the density direction (``reverse=False``) or the sampling direction."""
        if layer["kind"] in LAYER_KINDS:
            return LAYER_KINDS[layer["kind"]][0](layer, x, delta_logp, reverse)
        return self._solve(layer, x, delta_logp, reverse, divergence or layer["divergence"], generator)

    @torch.no_grad()
    def log_prob(self, x, divergence=None, generator=None):
        """log p(x) in nats per sample, shape (N,).

        ``divergence`` ("exact" / "hutchinson") overrides each block's own; Hutchinson probes
        come from ``generator`` (default: torch's global random stream).
        """
        delta_logp = x.new_zeros(x.shape[0])
        latents = []
        for i, stage in enumerate(self.stages):
            for layer in stage:
                x, delta_logp = self._layer(layer, x, delta_logp, False, divergence, generator)
            if i < len(self.stages) - 1:  # factor out the second half of the channels
                half = x.shape[1] // 2
                latents.append(x[:, half:].reshape(x.shape[0], -1))
                x = x[:, :half]
        z = torch.cat(latents + [x.reshape(x.shape[0], -1)], dim=1)
        log_normal = -0.5 * math.log(2 * math.pi) - 0.5 * z.pow(2)
        return log_normal.sum(dim=1) - delta_logp

    def bits_per_dim(self, x, divergence=None, generator=None):
        """-(log p(x) / D - ln 256) / ln 2 per sample: bits per dimension of 8-bit data scaled to [0, 1]."""
        dims = math.prod(self.data_shape)
        return -(self.log_prob(x, divergence, generator) / dims - math.log(256.0)) / math.log(2.0)

    @torch.no_grad()
    def sample(self, num_samples, generator=None, z=None):
        """z ~ N(0, I) (or the given ``z``, (N, *data_shape) or flat) mapped to data by the flow run backwards."""
        if z is None:
            device = self.device if generator is None else generator.device
            z = torch.randn((num_samples, *self.data_shape), generator=generator, device=device).to(self.device)
        z = z.reshape(z.shape[0], -1)
        sizes = [(c - c // 2) * math.prod(rest) for c, *rest in self.stage_shapes[:-1]]
        parts = torch.split(z, sizes + [z.shape[1] - sum(sizes)], dim=1)
        delta_logp = z.new_zeros(z.shape[0])
        x = None
        for i in reversed(range(len(self.stages))):
            c, *rest = self.stage_shapes[i]
            part = parts[i].reshape(z.shape[0], c if x is None else c - c // 2, *rest)
            x = part if x is None else torch.cat([x, part], dim=1)
            for layer in reversed(self.stages[i]):
                x, delta_logp = self._layer(layer, x, delta_logp, True, "none", None)
        return x
