"""``python -m experiment.sample RUN_DIR ...``: see :mod:`torchprune_flows.runner.sample`."""
import sys

from torchprune_flows.runner.sample import main

if __name__ == "__main__":
    sys.exit(main())
