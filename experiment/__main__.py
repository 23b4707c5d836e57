"""``python -m experiment CONFIG.yaml``: torchprune-flows' runner (see :mod:`torchprune_flows.runner.cli`).

This top-level ``experiment`` folder is a namespace-package portion with entry modules only, so
that it can share one ``site-packages/experiment/`` folder with torchprune's own ``experiment``
package (``__init__``, ``main``, ``evaluator``, ``logger``, ``util``, ``param``) without owning
any of its files. The code lives in :mod:`torchprune_flows.runner`.
"""
import sys

from torchprune_flows.runner.cli import run_from_command_line

if __name__ == "__main__":
    sys.exit(run_from_command_line())
