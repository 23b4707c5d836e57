"""Child process: torchprune's own FilterThresNet on our toy flow while tensors refuse NumPy
conversion, as CUDA tensors do (torchprune's filter allocator hands SciPy's brentq tensor values,
and brentq calls np.isnan on them). With ``compat`` argv[1] the launcher's patches are applied
first. Prints JSON: the achieved keep ratio, or the error."""
import json
import sys

import torch

import torchprune as tp
import torchprune_flows as tf
from torchprune.util.net import NetHandle
from torchprune_flows.objectives import NLLPriorLoss
from torchprune_flows.integrations.torchprune import compat

if sys.argv[1] == "compat":
    compat.apply()


def refuse(self, *args, **kwargs):  # what a CUDA tensor says to np.asarray
    raise TypeError(f"can't convert {self.device} device type tensor to numpy")


torch.Tensor.__array__ = refuse
torch.manual_seed(0)
torch.set_grad_enabled(False)
net = tf.build_network("ffjord_l2_h16_sigmoid_da", num_classes=2)
data = torch.randn(64, 2)
handle = NetHandle(net, "ffjord_l2_h16_sigmoid_da")
loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data, torch.zeros(len(data))), batch_size=32)
handle(data[:4])
try:
    pruned = tp.FilterThresNet(handle, loader, NLLPriorLoss())
    pruned.compress(keep_ratio=0.5)
    print(json.dumps({"keep": pruned.size() / handle.size()}))
except TypeError as err:
    print(json.dumps({"error": str(err)}))
