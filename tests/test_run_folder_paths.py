"""The run folder's layout lives in one place, :class:`torchprune_flows.runner.runs.RunFolder`
(issue 20 item 5): no other module of the package joins a path from its names."""
import ast

import pytest

from test_import_cycles import package_modules

#: the names of a run folder's files and folders (runs.py's docstring lists them)
LAYOUT = {"config.yaml", "results.csv", "report.md", "plots", "steps", "checkpoints", "logs", "samples",
          "analysis", "export", ".lock"}


def _joined_layout_names(path):
    with open(path) as handle:
        tree = ast.parse(handle.read(), path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("join", "path"):
            found += [(node.lineno, arg.value) for arg in node.args
                      if isinstance(arg, ast.Constant) and arg.value in LAYOUT]
    return found


def test_only_run_folder_joins_the_layout():
    stray = {name: found for name, path in package_modules().items()
             if name != "torchprune_flows.runner.runs" and (found := _joined_layout_names(path))}
    assert not stray, f"use RunFolder's properties and methods instead: {stray}"


def test_run_folder_paths(tmp_path):
    from torchprune_flows.runner.runs import RunFolder

    folder = RunFolder(str(tmp_path))
    expected = {"config_path": "config.yaml", "results_path": "results.csv", "report_path": "report.md",
                "plots_dir": "plots", "analysis_dir": "analysis", "lock_path": ".lock", "steps_dir": "steps",
                "checkpoints_dir": "checkpoints", "logs_dir": "logs"}
    for attribute, name in expected.items():
        assert getattr(folder, attribute) == str(tmp_path / name), attribute
    assert folder.export("s") == str(tmp_path / "export" / "s.pt")
    assert folder.checkpoint("s") == str(tmp_path / "checkpoints" / "s.pt")
    assert folder.record("s") == str(tmp_path / "steps" / "s.json")
    assert folder.subfolder("a").config_path == str(tmp_path / "a" / "config.yaml")


@pytest.mark.parametrize("source, hits", [("os.path.join(d, 'report.md')", 1), ("f.path('x.md')", 0)])
def test_the_scan_sees_joins(tmp_path, source, hits):
    path = tmp_path / "m.py"
    path.write_text(source + "\n")
    assert len(_joined_layout_names(str(path))) == hits
