from setuptools import find_packages, setup

setup(
    name="torchprune-flows",
    version="0.1.0",
    description="Sparse Flows: pruning continuous normalizing flows and neural ODEs",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    # ``experiment`` is a namespace-package portion (entry modules only, no ``__init__.py``), so it
    # can share a folder with torchprune's own ``experiment`` package without owning its files.
    packages=find_packages(include=["torchprune_flows", "torchprune_flows.*"]) + ["experiment"],
    # the supplement's tables (torchprune_flows.paper) are data files: a regular install needs them
    package_data={"torchprune_flows.paper": ["tables/*.csv", "tables/README.md"]},
    install_requires=[
        "torch>=2.1",
        "torchvision",
        "torchdiffeq>=0.2.3",
        "torchdyn>=1.0.6",
        "numpy",
        "pyyaml",
        "tqdm",
        "matplotlib",
        "pandas",
        "h5py",
    ],
    # six and requests: imported by the vendored torchprune that the tests run against; ray: --workers
    extras_require={"test": ["pytest", "pytest-benchmark", "six", "requests", "ray>=2.9", "ruff"], "ray": ["ray>=2.9"]},
    entry_points={"console_scripts": ["torchprune-flows=torchprune_flows.runner.cli:run_from_command_line"]},
)
