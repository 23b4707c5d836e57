"""Shared fixtures: a tiny, fast experiment config written as YAML into a temporary folder."""
import copy
import os
import sys

import pytest
import torch
import yaml

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _find_shared_data():
    """The real offline data (MNIST test split, MINIBOONE rows): ``$TORCHPRUNE_FLOWS_SHARED_DATA``,
    else the first ``shared/data`` beside the repository or one of its parent folders."""
    if os.environ.get("TORCHPRUNE_FLOWS_SHARED_DATA"):
        return os.environ["TORCHPRUNE_FLOWS_SHARED_DATA"]
    folder = REPO_ROOT
    while True:
        candidate = os.path.join(os.path.dirname(folder), "shared", "data")
        if os.path.isdir(candidate) or os.path.dirname(folder) == folder:
            return candidate
        folder = os.path.dirname(folder)


#: where tests look for the real offline data; tests using it skip when it is absent
SHARED_DATA = _find_shared_data()

#: 2-D CNF with exact trace, 2 Linear layers of 16 hidden units (82 parameters), dopri5 at 1e-4.
TINY_NETWORK = "cnf_l2_h16_tanh_high_tol"

_TINY_CONFIG = {
    "network": {"name": TINY_NETWORK, "dataset": "ToyGaussians", "outputSize": 2},
    "training": {
        "loss": "NLLPriorLoss",
        "metricsTest": [{"type": "NLLPrior", "kwargs": {}}, {"type": "Dummy", "kwargs": {}}],
        "batchSize": 100,
        "optimizer": "AdamW",
        "optimizerKwargs": {"lr": 1.0e-2, "weight_decay": 1.0e-5},
        "numEpochs": 2,
        "enableAMP": False,
        "datasetKwargs": {"num_train": 300, "num_test": 200},
    },
    "experiments": {
        "methods": ["ThresNet", "FilterThresNet"],
        "mode": "cascade",
        "spacing": [{"type": "manual", "values": [0.6, 0.3]}],
    },
    "seed": 0,
}


def tiny_config_dict():
    """A fresh deep copy of the tiny config (a plain dict, no defaults filled in)."""
    return copy.deepcopy(_TINY_CONFIG)


def write_yaml(path, data):
    """Write ``data`` (a dict dumped as YAML, or raw text) to ``path``; return ``path`` as str."""
    path = str(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


class TinyExperiment:
    """A folder with a tweakable tiny config; ``run()`` writes it and calls the CLI in-process."""

    def __init__(self, root, cfg=None):
        self.root = str(root)
        self.cfg = tiny_config_dict() if cfg is None else cfg

    def path(self, *parts):
        return os.path.join(self.root, *parts)

    def write(self, name="config.yaml", cfg=None):
        """Write ``cfg`` (default: ``self.cfg``) as YAML into the folder; return its path."""
        return write_yaml(self.path(name), self.cfg if cfg is None else cfg)

    def run(self, *extra, out="out", name="config.yaml"):
        """``main([config, --out, out, *extra])`` after writing the config; returns the exit code."""
        from torchprune_flows.runner.cli import main

        config = self.write(name)
        return main([config, "--out", self.path(out), *extra])

    def subprocess_env(self):
        """Environment for ``python -m experiment`` in a child process (repo importable, 1 thread)."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([REPO_ROOT] + [p for p in [env.get("PYTHONPATH")] if p])
        env["OMP_NUM_THREADS"] = "1"
        env["MKL_NUM_THREADS"] = "1"
        return env


@pytest.fixture
def in_repo(monkeypatch):
    """The repository root as the working directory (config include paths are relative to it)."""
    monkeypatch.chdir(REPO_ROOT)


class NaNGradient(torch.autograd.Function):
    """Identity forward; NaN gradient backward: a failure only a backward (adjoint) pass sees."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


def one_error_line(capsys, *words):
    """The single line a command wrote to stderr: it starts with ``error: `` and names ``words``."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    for word in words:
        assert word in err[0], err[0]
    return err[0]


def linear_field(matrix):
    """``f(t, z) = A z`` with ``A`` a parameter, counting its calls in ``.calls``: the vector field
    with closed-form solutions ``z(T) = e^{AT} z(0)`` and divergence ``tr A``."""
    from torch import nn

    class LinearField(nn.Module):
        def __init__(self):
            super().__init__()
            self.A = nn.Parameter(matrix.clone())
            self.calls = 0

        def forward(self, t, z):
            self.calls += 1
            return z @ self.A.T

    return LinearField()


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A :class:`TinyExperiment` in ``tmp_path``, which is also made the working directory."""
    monkeypatch.chdir(tmp_path)
    return TinyExperiment(tmp_path)


@pytest.fixture(scope="session")
def tiny_experiment_class():
    """The :class:`TinyExperiment` class, for module-scoped fixtures that cannot use ``tiny``."""
    return TinyExperiment


@pytest.fixture(scope="module")
def torch_single_thread():
    """Run torch on one intra-op thread for the module, then restore.

    The tiny networks are dominated by per-op overhead; on a small, shared machine the default
    thread pool makes them 10-100x slower through contention.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def clean_modules():
    """Names appended to the returned list are dropped from ``sys.modules`` after the test."""
    names = []
    yield names
    for name in names:
        sys.modules.pop(name, None)


@pytest.fixture(scope="module")
def cascade_run(tmp_path_factory, tiny_experiment_class, torch_single_thread):
    """The tiny config run once per test module (WT and FT at keep 0.6 and 0.3); read-only."""
    exp = tiny_experiment_class(tmp_path_factory.mktemp("cascade"))
    rc = exp.run()
    return exp, exp.path("out"), rc


# ---------------------------------------------------------------------------------------------
# The real torchprune v2.2.0 (../shared/vendor), for the tests of running under its runner
# ---------------------------------------------------------------------------------------------

#: torchprune's import-time dependencies that no code path of ours uses: stubbed in the child
#: processes that import torchprune (torch.utils.tensorboard checks tensorboard's version).
TORCHPRUNE_STUBS = ("transformers", "datasets", "cvxpy", "imagecorruptions", "seaborn", "tensorboard",
                    "torch.utils.tensorboard")

_STUB_SITECUSTOMIZE = '''
"""Test fixture: stub modules for torchprune's heavy import-time dependencies."""
import importlib.abc
import importlib.machinery
import sys

STUBS = %r


class _Anything(type):
    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return Stub


class Stub(metaclass=_Anything):
    """Any attribute, call or subclass works and does nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        return Stub()

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return Stub()


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path, target=None):
        if any(fullname == s or fullname.startswith(s + ".") for s in STUBS):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        module.__path__ = []
        module.__getattr__ = _module_getattr


def _module_getattr(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return Stub


sys.meta_path.insert(0, _StubFinder())
'''


#: the pristine upstream snapshots, beside the shared data (tests using them skip without them)
SHARED_VENDOR = os.path.join(os.path.dirname(SHARED_DATA), "vendor")


class RealTorchprune:
    """A copy of the vendored torchprune (+ FFJORD's ``lib/``) in a temporary folder, importable
    in child processes through :meth:`env`; the vendored files themselves are never touched."""

    def __init__(self, root):
        import shutil

        src = os.path.join(root, "src")
        shutil.copytree(os.path.join(SHARED_VENDOR, "torchprune-v2.2.0", "src"), src)
        self.ffjord = os.path.join(src, "torchprune", "torchprune", "util", "external", "ffjord")
        shutil.copytree(os.path.join(SHARED_VENDOR, "ffjord", "lib"), os.path.join(self.ffjord, "lib"))
        for folder, _, _ in os.walk(root):
            os.chmod(folder, 0o755)
        self.stubs = os.path.join(root, "stubs")
        os.makedirs(self.stubs)
        with open(os.path.join(self.stubs, "sitecustomize.py"), "w") as handle:
            handle.write(_STUB_SITECUSTOMIZE % (TORCHPRUNE_STUBS,))
        self.torchprune_src = os.path.join(src, "torchprune")
        self.experiment_src = os.path.join(src, "experiment")

    def env(self, with_runner=True, **extra):
        """Environment for a child process: stubs, torchprune (and its runner) importable."""
        env = dict(os.environ)
        paths = [self.stubs, self.torchprune_src, self.ffjord] + ([self.experiment_src] if with_runner else [])
        env["PYTHONPATH"] = os.pathsep.join(paths + [REPO_ROOT])
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore")
        env.pop("TORCHPRUNE_FLOWS_NO_BRIDGE", None)
        env.pop("TORCHPRUNE_FLOWS_KEEP_TORCHPRUNE", None)
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def python(self, code_or_args, cwd, timeout=600, check=True, **env):
        """Run ``python -c CODE`` (a string) or ``python ARGS`` (a list) in ``cwd``."""
        import subprocess

        args = ["-c", code_or_args] if isinstance(code_or_args, str) else list(code_or_args)
        proc = subprocess.run([sys.executable, *args], cwd=cwd, env=self.env(**env), capture_output=True,
                              text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"child failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
        return proc


@pytest.fixture(scope="session")
def real_torchprune(tmp_path_factory):
    if not os.path.isdir(os.path.join(SHARED_VENDOR, "torchprune-v2.2.0")):
        pytest.skip(f"the vendored torchprune is not at {SHARED_VENDOR} (../shared/vendor)")
    return RealTorchprune(str(tmp_path_factory.mktemp("torchprune")))
