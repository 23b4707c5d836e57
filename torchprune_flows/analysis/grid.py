"""A 2-D flow evaluated on a grid: its density and its vector field (the panels of Figure S1)."""
import numpy as np
import torch

from ..cnf import cnf_blocks, with_divergence


def density_on_grid(net, xs, ys, batch=5000, divergence="exact", seed=0):
    """``exp(log p)`` of ``net`` at the grid points, shape (len(ys), len(xs)) (rows = y)."""
    param = next(net.parameters())
    grid_x, grid_y = np.meshgrid(xs, ys)
    points = torch.as_tensor(np.stack([grid_x.ravel(), grid_y.ravel()], axis=1), dtype=param.dtype)
    out = []
    with torch.random.fork_rng(devices=[]), with_divergence(net, divergence), torch.no_grad():
        torch.manual_seed(seed)
        for start in range(0, len(points), batch):
            out.append(net.log_prob(points[start:start + batch].to(param.device)).double().cpu())
    log_p = torch.cat(out).numpy().reshape(grid_x.shape)
    return np.exp(np.where(np.isnan(log_p), -np.inf, log_p))


def field_on_grid(net, xs, ys, time_fraction=0.0):
    """``(U, V, number of CNF blocks)``: ``-f(x, t)`` of the first CNF block on the grid, or None."""
    blocks = cnf_blocks(net)
    if not blocks:
        return None
    block = blocks[0]
    param = next(net.parameters())
    grid_x, grid_y = np.meshgrid(xs, ys)
    z = torch.as_tensor(np.stack([grid_x.ravel(), grid_y.ravel()], axis=1), dtype=param.dtype, device=param.device)
    with torch.no_grad():
        t = (time_fraction * block.odefunc.end_time).to(param.device, param.dtype)
        f = block.vector_field(t, z).reshape(len(z), -1).double().cpu().numpy()
    return -f[:, 0].reshape(grid_x.shape), -f[:, 1].reshape(grid_x.shape), len(blocks)
