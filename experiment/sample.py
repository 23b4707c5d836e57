"""``python -m experiment.sample RUN_DIR ...`` = ``python -m experiment.analyze sample RUN_DIR ...``:
see :mod:`torchprune_flows.runner.commands.sample`."""
import sys

from torchprune_flows.runner.commands.sample import main

if __name__ == "__main__":
    sys.exit(main())
