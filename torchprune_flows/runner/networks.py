"""The network of a resolved config, for the pipeline that trains it and the run folder that
loads its checkpoints (:meth:`.runs.RunFolder.load_network`)."""
import torch

from torchprune_flows.registry import NETWORKS


def build_network(cfg, device="cpu"):
    """The (untrained) network of a resolved config on ``device``."""
    net_cfg = cfg["network"]
    kwargs = dict(num_classes=net_cfg["outputSize"], **net_cfg["kwargs"])
    if "MNIST" in net_cfg["dataset"]:
        kwargs.setdefault("num_in_channels", 1)
    return NETWORKS.get(net_cfg["name"])(**kwargs).to(torch.device(device))
