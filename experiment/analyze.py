"""``python -m experiment.analyze SUBCOMMAND RUN_DIR ...``: see :mod:`torchprune_flows.runner.analyze`."""
import sys

from torchprune_flows.runner.analyze import main

if __name__ == "__main__":
    sys.exit(main())
