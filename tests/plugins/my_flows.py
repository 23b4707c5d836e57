# my_flows.py
from torch import nn
from torchprune_flows import register_network
from torchprune_flows.cnf import CNF, FlowNetwork, SolverSpec
from torchprune_flows.pruning import PrunableMixin


class Field(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.inp, self.out = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, t, z):
        return self.out(self.inp(z).tanh())

    def structured_chains(self):          # prunable layers in order, with their input offsets
        return [[(self.inp, 0), (self.out, 0)]]


class MyFlow(PrunableMixin, FlowNetwork):
    def __init__(self, dim, hidden):
        super().__init__([CNF(Field(dim, hidden), solver=SolverSpec(atol=1e-4, rtol=1e-4))], (dim,))


@register_network("myflow_h{hidden:d}", examples=[("myflow_h8", {"num_classes": 2})])  # myflow_h32, ...
def myflow(hidden, num_classes, **kwargs):
    return MyFlow(num_classes, hidden)
