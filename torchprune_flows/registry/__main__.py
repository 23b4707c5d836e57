"""``python -m torchprune_flows.registry [KIND ...]``: list registered names."""
import sys

import torchprune_flows  # noqa: F401  (registers the built-in entries)
from torchprune_flows.registry import REGISTRIES, load_entry_point_plugins
from torchprune_flows.registry.core import PLURALS


def main(argv=None):
    singular = {many: one for one, many in PLURALS.items()}
    kinds = [singular.get(k, k) for k in (argv if argv is not None else sys.argv[1:])] or list(REGISTRIES)
    load_entry_point_plugins()
    for kind in kinds:
        if kind not in REGISTRIES:
            print(f"unknown kind '{kind}'; choose from {', '.join(singular)}", file=sys.stderr)
            return 2
        print(f"{PLURALS.get(kind, kind)}:")
        for name in REGISTRIES[kind].names():
            print(f"  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
