"""The data package: offline extraction apart from downloading, no import cycle, one download hint."""
import ast
import gzip
import os
import subprocess
import sys
import tarfile

import pytest

from torchprune_flows.data import archive
from torchprune_flows.data.download import build_parser
from torchprune_flows.data.images import IMAGE_DATASETS
from torchprune_flows.data.tabular import TABULAR_DATASETS

from conftest import REPO_ROOT

DATA_PACKAGE = os.path.join(REPO_ROOT, "torchprune_flows", "data")


def _imported_data_modules(path):
    """Sibling modules of ``torchprune_flows.data`` that the file at ``path`` imports anywhere
    (top level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                found.add(node.module.split(".")[0])
            elif node.level == 1:
                found.update(alias.name for alias in node.names)
            elif node.level == 0 and (node.module or "").startswith("torchprune_flows.data."):
                found.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[2] for alias in node.names
                         if alias.name.startswith("torchprune_flows.data."))
    return found


def test_the_data_package_has_no_import_cycle():
    modules = {name[:-3] for name in os.listdir(DATA_PACKAGE) if name.endswith(".py") and name != "__init__.py"}
    graph = {m: _imported_data_modules(os.path.join(DATA_PACKAGE, m + ".py")) & modules for m in modules}
    assert graph["download"] >= {"archive", "tabular"}  # the graph is read, not empty

    def reaches(start, target, seen=()):
        return any(dep == target or (dep not in seen and reaches(dep, target, seen + (dep,)))
                   for dep in graph[start])

    cycles = sorted(m for m in modules if reaches(m, m))
    assert cycles == [], f"modules on an import cycle: {cycles}"
    readers = [m for m in modules if m != "download"]
    assert not [m for m in readers if reaches(m, "download")], "a dataset reader depends on the downloader"


def test_archive_is_offline():
    tree = ast.parse(open(os.path.join(DATA_PACKAGE, "archive.py")).read())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert not {name for name in imported if name.split(".")[0] in ("urllib", "http", "socket", "requests")}


def test_importing_the_package_leaves_the_downloader_unloaded():
    """``python -m torchprune_flows.data.download`` then runs without a double-import warning."""
    code = ("import sys, torchprune_flows, torchprune_flows.data.tabular, torchprune_flows.data.images;"
            "print('torchprune_flows.data.download' in sys.modules)")
    env = dict(os.environ, TORCHPRUNE_FLOWS_NO_BRIDGE="1", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, env=env,
                         check=True).stdout
    assert out.strip() == "False"


def test_every_dataset_kind_names_a_download_subcommand():
    subcommands = next(a for a in build_parser()._actions if a.dest == "dataset").choices
    kinds = {cls.command for cls in TABULAR_DATASETS + IMAGE_DATASETS}
    assert kinds == {"maf", "mnist", "cifar10"} and kinds <= set(subcommands)
    assert archive.download_hint("mnist", "/r") == "python -m torchprune_flows.data.download mnist --root /r"


@pytest.mark.parametrize("cls", TABULAR_DATASETS + IMAGE_DATASETS, ids=lambda c: c.__name__)
def test_missing_data_messages_carry_the_kinds_hint(tmp_path, cls):
    with pytest.raises(FileNotFoundError) as err:
        cls(root=str(tmp_path), split="test")
    message = str(err.value)
    assert message.startswith(f"{cls.name} data not found: expected ")
    assert f"run '{archive.download_hint(cls.command, str(tmp_path))}'" in message


def test_extract_members_is_atomic_and_names_the_kinds_command(tmp_path):
    source = tmp_path / "a.txt"
    source.write_bytes(b"alpha")
    with tarfile.open(tmp_path / "pack.tar.gz", "w:gz") as tar:
        tar.add(source, arcname="top/one/a.txt")
    root = tmp_path / "root"
    paths = archive.extract_members(str(tmp_path / "pack.tar.gz"), str(root), ["one/a.txt"], what="X")
    assert paths == [str(root / "one" / "a.txt")] and open(paths[0], "rb").read() == b"alpha"

    other = tmp_path / "other"
    with pytest.raises(FileNotFoundError) as err:
        archive.extract_members(str(tmp_path / "pack.tar.gz"), str(other), ["one/a.txt", "two/b.txt"],
                                what="CIFAR10", dataset="cifar10")
    assert "has no member two/b.txt" in str(err.value)
    assert archive.download_hint("cifar10", str(other)) in str(err.value)
    assert not other.exists()  # the folders it made and the member it had copied are gone

    (tmp_path / "broken.tar.gz").write_bytes(b"not an archive")
    with pytest.raises(OSError, match="cannot read the archive"):
        archive.extract_members(str(tmp_path / "broken.tar.gz"), str(other), ["one/a.txt"])
    assert not other.exists()


def test_gunzip_next_to(tmp_path):
    with gzip.open(tmp_path / "f.gz", "wb") as handle:
        handle.write(b"payload" * 100)
    assert archive.gunzip_next_to(str(tmp_path / "f.gz"), str(tmp_path / "f")) == str(tmp_path / "f")
    assert (tmp_path / "f").read_bytes() == b"payload" * 100
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"x" * 1000)[:-12])
    with pytest.raises(OSError, match="cannot decompress"):
        archive.gunzip_next_to(str(tmp_path / "bad.gz"), str(tmp_path / "bad"))
    assert sorted(os.listdir(tmp_path)) == ["bad.gz", "f", "f.gz"]
