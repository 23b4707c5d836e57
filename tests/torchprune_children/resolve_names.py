"""Child process: which implementation torchprune's own lookups return; JSON on stdout.

argv[1]: "torchprune_first" (torchprune imported before torchprune_flows) or "ours_first".
"""
import importlib
import json
import sys

if sys.argv[1] == "torchprune_first":
    import torchprune.util.models  # noqa: F401

import torchprune_flows  # noqa: E402,F401
from torchprune_flows.registry import register_network  # noqa: E402
from torchprune_flows.integrations.torchprune.bridge import TARGETS  # noqa: E402

LACKING = {"network": ["ffjord_l3_h7_tanh", "cnf_l3_h9_relu_high_tol", "ffjord_l1_hm3_f2_tanh"],
           "dataset": [], "loss": [], "metric": []}

report = {}
for registry, module_name in TARGETS:
    module = importlib.import_module(module_name)
    state = vars(module).get("__torchprune_flows_bridge__", {"ours": set(), "theirs": {}})
    native = {n for n in vars(module) if n not in state["ours"] and not n.startswith("_")} | set(state["theirs"])
    ours = {n for n in registry.names() if "{" not in n}
    shared = sorted(n for n in native if n in ours or registry.parses(n))
    entry = {"exact_shared": sorted(n for n in shared if n in ours),
             "family_shared": sorted(n for n in shared if n not in ours),
             "ours": sorted(n for n in shared + LACKING[registry.kind]
                            if getattr(module, n) is registry.get(n)),
             "unbuildable": []}
    if registry.kind == "network":
        for name in entry["family_shared"]:
            try:
                getattr(module, name)(num_classes=3)
            except Exception as err:  # noqa: BLE001
                entry["unbuildable"].append(f"{name}: {err}")
    report[registry.kind] = entry

# an entry registered after the install reaches torchprune too
models = importlib.import_module("torchprune.util.models")


@register_network("late_plugin_flow")
def late_plugin_flow(num_classes, **kwargs):
    return "late"


report["late_registration"] = models.late_plugin_flow(num_classes=2)
try:
    _ = models.fjord_l2_h64_sigmoid_da  # a typo: must raise AttributeError
    report["unknown"] = None
except AttributeError as err:
    report["unknown"] = str(err)
print(json.dumps(report))
