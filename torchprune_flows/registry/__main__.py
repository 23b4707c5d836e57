"""``python -m torchprune_flows.registry [KIND ...]``: list registered names."""
import sys

import torchprune_flows  # noqa: F401  (registers the built-in entries)
from torchprune_flows.registry import REGISTRIES, load_entry_point_plugins


def main(argv=None):
    plural = {"networks": "network", "datasets": "dataset", "losses": "loss", "metrics": "metric"}
    kinds = [plural.get(k, k) for k in (argv if argv is not None else sys.argv[1:])] or list(REGISTRIES)
    load_entry_point_plugins()
    for kind in kinds:
        if kind not in REGISTRIES:
            print(f"unknown kind '{kind}'; choose from {', '.join(plural)}", file=sys.stderr)
            return 2
        print(f"{kind}s:")
        for name in REGISTRIES[kind].names():
            print(f"  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
