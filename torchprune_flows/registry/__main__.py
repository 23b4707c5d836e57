"""``python -m torchprune_flows.registry [KIND ...] [--pattern WILDCARD]``: list registered names.

Families are listed by template, each followed by its examples (small members that build fast,
with the keyword arguments a quick build needs); ``--pattern`` keeps entries matching a shell
wildcard (an entry or one of its examples), e.g. ``--pattern 'ffjord_*'``.
"""
import argparse
import sys

import torchprune_flows  # noqa: F401  (registers the built-in entries)
from torchprune_flows.errors import UserError, reports_user_errors
from torchprune_flows.registry import REGISTRIES, load_entry_point_plugins
from torchprune_flows.registry.core import PLURALS


def listing(registry, pattern=None):
    """The listing lines of one registry (without its heading)."""
    families = registry.families(pattern)
    names = [n for n in registry.names() if n in families or (pattern is None or n in registry.names(pattern))]
    lines = []
    for name in names:
        alias = getattr(registry._entry(name), "alias", None)  # pruning methods: their short name
        lines.append(f"  {name}" + (f" ({alias})" if alias else ""))
        lines.extend(f"      e.g. {example}" for example in families.get(name, ()))
    return lines


@reports_user_errors
def main(argv=None):
    singular = {many: one for one, many in PLURALS.items()}
    parser = argparse.ArgumentParser(prog="python -m torchprune_flows.registry",
                                     description="List registered networks, datasets, losses and metrics.")
    parser.add_argument("kinds", nargs="*", metavar="KIND", help=f"any of {', '.join(singular)} (default: all)")
    parser.add_argument("--pattern", "-p", default=None, help="shell wildcard, e.g. 'ffjord_*'")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    kinds = [singular.get(k, k) for k in args.kinds] or list(REGISTRIES)
    unknown = [k for k in args.kinds if singular.get(k, k) not in REGISTRIES]
    if unknown:  # before any listing is printed
        raise UserError(f"unknown kind '{unknown[0]}'; choose from {', '.join(singular)}")
    load_entry_point_plugins()
    for kind in kinds:
        print(f"{PLURALS.get(kind, kind)}:")
        for line in listing(REGISTRIES[kind], args.pattern):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
