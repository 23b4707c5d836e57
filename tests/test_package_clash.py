"""torchprune's distributions and ours in one virtual environment (regular installs).

Both install a top-level ``experiment``: torchprune's is a regular package, ours a namespace
portion with entry modules only. In one venv they share the folder without sharing a file, each
runner works, and uninstalling either leaves the other working.
"""
import glob
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from conftest import REPO_ROOT, tiny_config_dict


def _run(args, cwd, env, check=True, timeout=600):
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return proc


def _record(site, distribution):
    (info,) = glob.glob(os.path.join(site, f"{distribution}-*.dist-info"))
    with open(os.path.join(info, "RECORD")) as handle:
        return {line.split(",")[0] for line in handle if line.strip()}


@pytest.fixture
def shared_venv(real_torchprune, tmp_path):
    """A venv (reusing this one's packages through a .pth) with torchprune, its runner and us."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (site,) = glob.glob(str(venv / "lib" / "python*" / "site-packages"))
    outer = [p for p in sys.path if p.endswith("site-packages") and os.path.isdir(p)]
    with open(os.path.join(site, "outer_packages.pth"), "w") as handle:
        handle.write("\n".join(outer) + "\n")  # torch & co.; our editable install there is not active
    python = str(venv / "bin" / "python")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", PIP_NO_INDEX="1",
               PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.pop("PYTHONPATH", None)
    ours = tmp_path / "ours"  # build from a copy: nothing written into the checkout
    shutil.copytree(REPO_ROOT, ours, ignore=shutil.ignore_patterns(".venv", ".git", "results", "build", "*.egg-info",
                                                                   "__pycache__", ".pytest_cache"))
    pip = [python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--ignore-installed",
           "--ignore-requires-python"]
    _run(pip + [real_torchprune.torchprune_src, real_torchprune.experiment_src, str(ours)], str(tmp_path), env)
    # torchprune's repository lacks FFJORD's lib/ (see ../shared/vendor/README.md): add it by hand,
    # as its users must, and stub its heavy import-time dependencies
    installed_ffjord = os.path.join(site, "torchprune", "util", "external", "ffjord")
    shutil.copytree(os.path.join(real_torchprune.ffjord, "lib"), os.path.join(installed_ffjord, "lib"))
    env["PYTHONPATH"] = os.pathsep.join([real_torchprune.stubs, installed_ffjord])
    config = tiny_config_dict()
    config["training"]["numEpochs"] = 1
    config["experiments"]["spacing"] = [{"type": "manual", "values": [0.5]}]
    config["experiments"].update(plotting={"minVal": 0.4, "maxVal": 0.9}, numNets=1, numRepetitions=1,
                                 retrainIterations=-1)  # what torchprune's runner requires
    config["training"].update(transformsTrain=[], transformsTest=[], transformsFinal=[], lossKwargs={},
                              lrSchedulers=[])
    config["retraining"] = {"startEpoch": 0}
    config["training"].pop("datasetKwargs")  # ours only: torchprune passes no dataset arguments
    config["training"]["batchSize"] = 500
    config["coresets"] = {"deltaS": 0.5}
    config["directories"] = {"results": "./tp_results", "trained_networks": "./tp_trained",
                             "training_data": "./training", "local_data": "./local"}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    return {"python": python, "site": site, "env": env, "cwd": str(tmp_path), "ours": str(ours),
            "pip": pip, "bin": str(venv / "bin")}


def _our_runner_works(venv, out):
    proc = _run([venv["python"], "-m", "experiment", "tiny.yaml", "--out", out], venv["cwd"], venv["env"])
    assert os.path.isfile(os.path.join(venv["cwd"], out, "results.csv")), proc.stderr[-2000:]
    proc = _run([os.path.join(venv["bin"], "torchprune-flows"), "tiny.yaml", "--out", out + "_cmd"],
                venv["cwd"], venv["env"])
    assert os.path.isfile(os.path.join(venv["cwd"], out + "_cmd", "results.csv"))


def test_one_venv_two_experiment_distributions(shared_venv):
    venv = shared_venv
    site = venv["site"]
    theirs, ours = _record(site, "experiment"), _record(site, "torchprune_flows")
    assert not theirs & ours  # pip reports no file owned by both
    assert "experiment/__init__.py" in theirs and "experiment/__main__.py" in ours
    assert not any(path.startswith("experiment/") and path.endswith("__init__.py") for path in ours)

    _our_runner_works(venv, "ours_out")  # python -m experiment is ours, in the shared folder
    proc = _run([venv["python"], "-m", "experiment", "tiny.yaml", "--engine", "torchprune"], venv["cwd"], venv["env"])
    assert glob.glob(os.path.join(venv["cwd"], "tp_results", "**", "data", "*.npz"), recursive=True), proc.stdout[-2000:]

    # uninstalling ours leaves torchprune's runner whole
    _run([venv["python"], "-m", "pip", "uninstall", "-y", "-q", "torchprune-flows"], venv["cwd"], venv["env"])
    assert os.path.isfile(os.path.join(site, "experiment", "__init__.py"))
    _run([venv["python"], "-c", "import experiment.main, experiment.evaluator; assert experiment.Evaluator"],
         venv["cwd"], venv["env"])
    assert not os.path.exists(os.path.join(site, "experiment", "__main__.py"))

    # uninstalling torchprune's runner leaves ours whole
    _run(venv["pip"] + [venv["ours"]], venv["cwd"], venv["env"])
    _run([venv["python"], "-m", "pip", "uninstall", "-y", "-q", "experiment"], venv["cwd"], venv["env"])
    assert not os.path.exists(os.path.join(site, "experiment", "__init__.py"))
    _our_runner_works(venv, "ours_alone")
