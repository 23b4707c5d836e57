"""Follow the README's "Using it with torchprune" lines, one by one, in a fresh virtual environment.

    python scripts/follow_torchprune_install.py [--workdir DIR] [--torchprune-src DIR] [--ffjord-src DIR]

A copy of this checkout (tracked files, as a user's clone) is made in ``DIR/repo``; a fresh venv
(with pip) is created in ``DIR/venv``; then every line of the README's first ``bash`` block in that
section runs in one bash session in ``DIR/repo``, with the venv first on ``PATH``: ``pip`` installs
from the package index, ``git clone URL`` clones, unless ``--torchprune-src`` / ``--ffjord-src``
name local copies to use instead (this machine has no GitHub access: the pristine snapshots in
``shared/vendor`` stand in for the clones). The last line is the launcher on the quickstart. The
script prints, per line, its exit code and seconds, then the launcher's result: its exit code,
wall time and the unpruned net's test NLL from torchprune's results file.

:func:`readme_install_lines` and :func:`shell_line` are shared with
``tests/test_torchprune_install.py``, which runs the same lines offline.
"""
import argparse
import glob
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTION = "## Using it with torchprune"


def readme_install_lines(readme=os.path.join(REPO_ROOT, "README.md")):
    """The command lines of the first ``bash`` block under :data:`SECTION` (comments dropped)."""
    with open(readme) as handle:
        text = handle.read()
    section = text[text.index(SECTION):]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.strip() for line in block.splitlines() if line.strip() and not line.strip().startswith("#")]


def shell_line(line, clones=None, pip_options=(), config=None):
    """``line`` as the bash line to run: ``git clone URL`` copies ``clones[repository name]`` when
    given, ``pip install`` gets ``pip_options``, the launcher line runs ``config`` when given.
    Raises ValueError for a line of a kind this does not know (the README changed: look at it)."""
    words = shlex.split(line)
    if words[:2] == ["git", "clone"]:
        name = words[2].rstrip("/").split("/")[-1]
        if clones and name in clones:
            return f"cp -r {shlex.quote(clones[name])} {shlex.quote(name)} && chmod -R u+w {shlex.quote(name)}"
        return line
    if words[:2] == ["pip", "install"]:
        return " ".join(["python -m pip install", *map(shlex.quote, pip_options), line[len("pip install "):]])
    if words[0] == "export":
        return line
    if words[0] == "torchprune-flows":
        return line if config is None else " ".join(["torchprune-flows", shlex.quote(config), *map(shlex.quote, words[2:])])
    raise ValueError(f"a README line of an unknown kind: {line!r}")


def unpruned_nll(results_dir):
    """The unpruned net's test loss from torchprune's statistics file (``data/*.npz``), or None."""
    import numpy as np

    files = glob.glob(os.path.join(results_dir, "**", "data", "*.npz"), recursive=True)
    if not files:
        return None
    stats = np.load(files[0], allow_pickle=True)
    methods = list(stats["methods"])
    loss = np.asarray(stats["loss"])
    return float(loss[..., methods.index("ReferenceNet")].ravel()[0])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", help="where the copy and the venv go (default: a new temporary folder)")
    parser.add_argument("--torchprune-src", help="a local copy of github.com/lucaslie/torchprune to use for its clone")
    parser.add_argument("--ffjord-src", help="a local copy of github.com/rtqichen/ffjord to use for its clone")
    parser.add_argument("--python", default=sys.executable, help="the Python that creates the venv")
    args = parser.parse_args(argv)
    work = os.path.abspath(args.workdir or tempfile.mkdtemp(prefix="tpf-install-"))
    repo, venv = os.path.join(work, "repo"), os.path.join(work, "venv")
    os.makedirs(repo)
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-C", REPO_ROOT, "--null", "-T", "-", "-cf", os.path.join(work, "repo.tar")],
                   input=files, check=True)
    subprocess.run(["tar", "-C", repo, "-xf", os.path.join(work, "repo.tar")], check=True)
    subprocess.run([args.python, "-m", "venv", venv], check=True)
    env = dict(os.environ, PATH=os.path.join(venv, "bin") + os.pathsep + os.environ["PATH"], VIRTUAL_ENV=venv,
               PIP_DISABLE_PIP_VERSION_CHECK="1", OMP_NUM_THREADS="1")
    env.pop("PYTHONPATH", None)
    clones = {k: os.path.abspath(v) for k, v in (("torchprune", args.torchprune_src),
                                                  ("ffjord", args.ffjord_src)) if v}
    setuptools = subprocess.run([os.path.join(venv, "bin", "python"), "-m", "pip", "show", "setuptools"], env=env,
                                capture_output=True, text=True).stdout
    print(f"fresh venv {venv}: setuptools {re.search(r'Version: (.*)', setuptools).group(1) if setuptools else 'none'}")
    lines = [shell_line(line, clones) for line in readme_install_lines(os.path.join(repo, "README.md"))]
    script = os.path.join(work, "lines.sh")
    with open(script, "w") as handle:  # one session (an export carries over); each line timed
        handle.write("set -u\n")
        for i, line in enumerate(lines):
            handle.write(f"echo {shlex.quote('+ ' + line)} >&2; start=$(date +%s%N); {line}; code=$?\n"
                         f"echo \"line {i + 1}: exit $code, $(( ($(date +%s%N) - start) / 1000000 )) ms\" >&2\n"
                         "[ $code = 0 ] || exit $code\n")
    started = time.time()
    proc = subprocess.run(["bash", script], cwd=repo, env=env)
    wall = time.time() - started
    print(f"all lines: exit {proc.returncode}, {wall:.0f} s")
    nll = unpruned_nll(os.path.join(repo, "data", "results"))  # the quickstart's directories.results: torchprune's default
    print(f"unpruned test NLL from torchprune's results: {nll}")
    check = subprocess.run([os.path.join(venv, "bin", "python"), "-c", "import pkg_resources, setuptools; "
                            "print('setuptools', setuptools.__version__, 'pkg_resources importable')"],
                           env=env, capture_output=True, text=True)
    print((check.stdout or check.stderr).strip().splitlines()[-1])
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
