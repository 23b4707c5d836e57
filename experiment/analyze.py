"""``python -m experiment.analyze SUBCOMMAND RUN_DIR ...``: see :mod:`torchprune_flows.runner.commands`."""
import sys

from torchprune_flows.runner.commands import main

if __name__ == "__main__":
    sys.exit(main())
