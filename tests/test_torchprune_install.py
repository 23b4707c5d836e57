"""The README's "Using it with torchprune" lines, run as written in a new venv, end with a working
install and the launcher running a toy config (offline, issue 18).

The venv is built as ``tests/test_package_clash.py`` builds its own (this environment's packages
through a .pth, no pip of its own). What needs the network is replaced, and only that: the two
``git clone`` lines copy the pristine snapshots (``shared/vendor``); ``pip install`` finds
packages in a local folder of small stand-ins for torchprune's heavy import-time dependencies
(import-time stubs, as in ``conftest.py``; ``imagecorruptions`` imports ``pkg_resources`` at
import as the real one does) and for setuptools, whose question here is only which version pip
leaves installed and whether it has ``pkg_resources`` (65.5, what a fresh Python 3.11 venv
holds, and 80.10.2 have it, 84.2.1 does not; the builds use this environment's real setuptools);
the launcher line runs a tiny config instead of the quickstart. ``scripts/follow_torchprune_install.py``
runs the same lines online in a fresh venv.
"""
import base64
import glob
import hashlib
import importlib.util
import os
import subprocess
import sys
import zipfile

import pytest
import yaml

from conftest import _STUB_SITECUSTOMIZE, REPO_ROOT, SHARED_VENDOR, tiny_config_dict

SCRIPT = os.path.join(REPO_ROOT, "scripts", "follow_torchprune_install.py")

#: the stand-in for imagecorruptions: what the real one imports at module level
IMAGECORRUPTIONS = '''"""Stand-in for imagecorruptions 1.1.2: like it, it imports pkg_resources at import time."""
from pkg_resources import resource_filename  # noqa: F401


def get_corruption_names(subset="common"):
    return []


def corrupt(image, *args, **kwargs):
    return image
'''

PKG_RESOURCES = '''"""Stand-in for setuptools' pkg_resources (what imagecorruptions uses of it)."""
import importlib
import os


def resource_filename(package, name):
    return os.path.join(os.path.dirname(importlib.import_module(package).__file__), name)
'''


def _script():
    spec = importlib.util.spec_from_file_location("follow_torchprune_install", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _wheel(folder, name, version, files, entry_points=None):
    """A pure-Python wheel of distribution ``name`` holding ``files`` ({path: text})."""
    dist = f"{name.replace('-', '_')}-{version}"
    files = dict(files)
    if entry_points:
        files[f"{dist}.dist-info/entry_points.txt"] = entry_points
    files[f"{dist}.dist-info/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    files[f"{dist}.dist-info/WHEEL"] = "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{dist}.dist-info/RECORD,,")
    files[f"{dist}.dist-info/RECORD"] = "\n".join(record) + "\n"
    path = os.path.join(folder, f"{dist}-py3-none-any.whl")
    with zipfile.ZipFile(path, "w") as archive:
        for name_in_wheel, text in files.items():
            archive.writestr(name_in_wheel, text)
    return path


def _stub_wheel(folder, name, version, modules, **extra_files):
    """A distribution whose import names ``modules`` are stubs (any attribute, any submodule)."""
    finder = f"_{name.replace('-', '_')}_stub_finder"
    files = {f"{finder}.py": _STUB_SITECUSTOMIZE % (tuple(modules),), f"{finder}.pth": f"import {finder}\n"}
    files.update(extra_files)
    return _wheel(folder, name, version, files)


def _wheelhouse(folder):
    os.makedirs(folder)
    for name in ("transformers", "datasets", "cvxpy", "seaborn"):
        _stub_wheel(folder, name, "99.0", [name])
    _stub_wheel(folder, "tensorboard", "2.20.0", ["tensorboard", "torch.utils.tensorboard"])
    _wheel(folder, "imagecorruptions", "1.1.2", {"imagecorruptions/__init__.py": IMAGECORRUPTIONS})
    for version, has_pkg_resources in (("80.10.2", True), ("84.2.1", False)):
        _setuptools_wheel(folder, version, has_pkg_resources)
    return folder


def _setuptools_wheel(folder, version, has_pkg_resources):
    """setuptools' version and (or not) pkg_resources; its code stays this environment's, and so
    must its entry points, which is where setuptools finds its own commands."""
    import importlib.metadata

    files = {"pkg_resources/__init__.py": PKG_RESOURCES} if has_pkg_resources else \
        {"setuptools_stand_in.txt": "setuptools 81 and later have no pkg_resources\n"}
    return _wheel(folder, "setuptools", version, files,
                  entry_points=importlib.metadata.distribution("setuptools").read_text("entry_points.txt"))


def _run(args, cwd, env, timeout=900):
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def new_venv(tmp_path):
    """A venv as test_package_clash builds it, holding the setuptools of a fresh Python 3.11 venv."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (site,) = glob.glob(str(venv / "lib" / "python*" / "site-packages"))
    outer = [p for p in sys.path if p.endswith("site-packages") and os.path.isdir(p)]
    with open(os.path.join(site, "outer_packages.pth"), "w") as handle:
        handle.write("\n".join(outer) + "\n")  # torch & co.; our editable install there is not active
    wheels = _wheelhouse(str(tmp_path / "wheels"))
    fresh = _setuptools_wheel(str(tmp_path), "65.5.0", True)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", PIP_DISABLE_PIP_VERSION_CHECK="1",
               PATH=str(venv / "bin") + os.pathsep + os.environ["PATH"], VIRTUAL_ENV=str(venv))
    for key in ("PYTHONPATH", "TORCHPRUNE_FLOWS_NO_BRIDGE", "TORCHPRUNE_FLOWS_KEEP_TORCHPRUNE",
                "TORCHPRUNE_FLOWS_FFJORD_LIB", "PIP_CONSTRAINT"):
        env.pop(key, None)
    python = str(venv / "bin" / "python")
    proc = _run([python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", fresh], str(tmp_path), env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {"python": python, "env": env, "wheels": wheels, "site": site}


def _toy_config(path):
    """The tiny config, as torchprune's runner needs it (its required keys, no keys of ours only)."""
    config = tiny_config_dict()
    config["training"]["numEpochs"] = 1
    config["training"].pop("datasetKwargs")
    config["training"].update(transformsTrain=[], transformsTest=[], transformsFinal=[], lossKwargs={},
                              lrSchedulers=[], batchSize=500)
    config["experiments"].update(plotting={"minVal": 0.4, "maxVal": 0.9}, numNets=1, numRepetitions=1,
                                 retrainIterations=-1, spacing=[{"type": "manual", "values": [0.5]}])
    config["retraining"] = {"startEpoch": 0}
    config["coresets"] = {"deltaS": 0.5}
    config["directories"] = {"results": "./tp_results", "trained_networks": "./tp_trained",
                             "training_data": "./training", "local_data": "./local"}
    with open(path, "w") as handle:
        yaml.safe_dump(config, handle)
    return str(path)


def test_the_readme_lines_end_with_the_launcher_running_a_toy_config(new_venv, tmp_path):
    for name in ("torchprune-v2.2.0", "ffjord"):
        if not os.path.isdir(os.path.join(SHARED_VENDOR, name)):
            pytest.skip(f"the vendored {name} is not at {SHARED_VENDOR}")
    script = _script()
    repo = tmp_path / "repo"  # a user's checkout of ours: a copy, nothing written into this one
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True).stdout
    if not files:
        pytest.skip("not a git checkout")
    for path in files.decode().split("\0"):
        if path and os.path.isfile(os.path.join(REPO_ROOT, path)):
            os.makedirs(repo / os.path.dirname(path), exist_ok=True)
            with open(os.path.join(REPO_ROOT, path), "rb") as src, open(repo / path, "wb") as dst:
                dst.write(src.read())
    clones = {"torchprune": os.path.join(SHARED_VENDOR, "torchprune-v2.2.0"),
              "ffjord": os.path.join(SHARED_VENDOR, "ffjord")}
    offline = ["--no-index", "--find-links", new_venv["wheels"], "--no-build-isolation"]
    lines = script.readme_install_lines(str(repo / "README.md"))
    assert lines[-1].startswith("torchprune-flows ") and "--engine torchprune" in lines[-1]
    config = _toy_config(repo / "toy.yaml")
    commands = [script.shell_line(line, clones, offline, config) for line in lines]
    proc = _run(["bash", "-e", "-c", "\n".join(commands)], str(repo), new_venv["env"])
    assert proc.returncode == 0, f"{commands}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    assert glob.glob(str(repo / "tp_results" / "**" / "data" / "*.npz"), recursive=True), proc.stderr[-3000:]
    # the install is consistent (pip's next run would change nothing) and torchprune imports
    python, env = new_venv["python"], new_venv["env"]
    check = _run([python, "-m", "pip", "check"], str(repo), env)
    assert "setuptools" not in check.stdout, check.stdout
    version = _run([python, "-c", "import importlib.metadata as m; print(m.version('setuptools'))"], str(repo), env)
    assert version.stdout.strip() == "80.10.2"
    imported = _run([python, "-c", "import imagecorruptions, torchprune"], str(repo), dict(
        env, TORCHPRUNE_FLOWS_FFJORD_LIB=str(repo / "ffjord" / "lib")))
    assert "No module named 'pkg_resources'" not in imported.stderr, imported.stderr[-2000:]


def test_the_dependency_line_also_holds_when_ours_is_installed_after_it(new_venv, tmp_path):
    """A new venv's setuptools (65) meets a bare "setuptools<81"; installing ours (torch: setuptools
    >= 77.0.3) afterwards then upgraded it to the newest, without pkg_resources. The README's range
    holds in either order."""
    script = _script()
    lines = script.readme_install_lines()
    (dependencies,) = [line for line in lines if line.startswith("pip install") and "imagecorruptions" in line]
    ours = "pip install -e ."
    assert ours in lines
    copy = tmp_path / "ours"
    for path in ("setup.py", "README.md"):
        os.makedirs(copy, exist_ok=True)
        with open(os.path.join(REPO_ROOT, path)) as src, open(copy / path, "w") as dst:
            dst.write(src.read())
    for package in ("torchprune_flows", "experiment"):  # the sources setup.py lists
        subprocess.run(["cp", "-r", os.path.join(REPO_ROOT, package), str(copy / package)], check=True)
    offline = ["--no-index", "--find-links", new_venv["wheels"], "--no-build-isolation"]
    for line in (dependencies, ours):
        proc = _run(["bash", "-e", "-c", script.shell_line(line, pip_options=offline)], str(copy), new_venv["env"])
        assert proc.returncode == 0, proc.stderr[-3000:]
    python, env = new_venv["python"], new_venv["env"]
    version = _run([python, "-c", "import importlib.metadata as m; print(m.version('setuptools'))"], str(copy), env)
    assert version.stdout.strip() == "80.10.2"
    assert _run([python, "-c", "import imagecorruptions"], str(copy), env).returncode == 0


def test_every_line_of_the_section_is_one_the_test_knows():
    script = _script()
    for line in script.readme_install_lines():
        script.shell_line(line)  # ValueError for a new kind of line: the tests above need a look then
