"""Bad input and damaged files: one ``error:`` line naming the problem, exit code 2 (issue 12)."""
import os
import stat

import pytest

from conftest import one_error_line


def _last_error(capsys):
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), lines[-3:]
    return lines[-1]


def test_config_that_is_a_folder(tiny, capsys):
    os.makedirs(tiny.path("configs"))
    tiny.write(os.path.join("configs", "a.yaml"))
    from torchprune_flows.runner.cli import main

    assert main([tiny.path("configs"), "--out", tiny.path("out")]) == 2
    one_error_line(capsys, "is a folder", "configs/a.yaml")
    assert not os.path.exists(tiny.path("out"))


def test_out_that_is_a_file(tiny, capsys):
    with open(tiny.path("taken"), "w") as handle:
        handle.write("x")
    assert tiny.run(out="taken") == 2
    one_error_line(capsys, "--out", "taken", "is a file")


def test_plugin_that_raises_at_import(tiny, capsys, monkeypatch, clean_modules):
    with open(tiny.path("broken_plugin_xyz.py"), "w") as handle:
        handle.write("raise RuntimeError('no GPU driver found')\n")
    monkeypatch.syspath_prepend(tiny.root)
    clean_modules.append("broken_plugin_xyz")
    assert tiny.run("--plugin", "broken_plugin_xyz") == 2
    one_error_line(capsys, "plugin module 'broken_plugin_xyz' failed to import: RuntimeError: no GPU driver found")
    assert not os.path.exists(tiny.path("out"))


@pytest.fixture
def finished(tiny):
    tiny.cfg["experiments"]["methods"] = ["ThresNet"]
    assert tiny.run() == 0
    return tiny


def test_results_files_have_the_usual_permissions(finished):
    mask = os.umask(0)
    os.umask(mask)
    for name in ("results.csv", "report.md", "config.yaml"):
        mode = stat.S_IMODE(os.stat(finished.path("out", name)).st_mode)
        assert mode == 0o666 & ~mask, (name, oct(mode))


def test_truncated_step_record_is_named(finished, capsys):
    path = finished.path("out", "steps", "net0_rep0_ThresNet_01.json")
    with open(path) as handle:
        text = handle.read()
    with open(path, "w") as handle:
        handle.write(text[: len(text) // 2])
    capsys.readouterr()
    assert finished.run() == 2
    line = _last_error(capsys)
    assert path in line and "corrupt or truncated" in line and "delete it and rerun" in line


def test_truncated_checkpoint_is_named(finished, capsys):
    path = finished.path("out", "checkpoints", "net0_rep0_ThresNet_00.pt")
    with open(path, "rb") as handle:
        data = handle.read()
    with open(path, "wb") as handle:
        handle.write(data[: len(data) // 2])
    os.remove(finished.path("out", "steps", "net0_rep0_ThresNet_01.json"))  # the next step needs it
    capsys.readouterr()
    assert finished.run() == 2
    line = _last_error(capsys)
    assert path in line and "corrupt or truncated" in line
    os.remove(path)  # the advertised fix: delete it and rerun; the lost steps are recomputed
    os.remove(finished.path("out", "steps", "net0_rep0_ThresNet_00.json"))
    assert finished.run() == 0


@pytest.mark.filterwarnings("ignore:.*registered again")  # the plugin module is imported afresh
def test_plugins_travel_with_the_run(tiny, capsys, monkeypatch, clean_modules):
    from test_experiment import use_plugin_flow

    from torchprune_flows.runner.analyze.sample import main as sample

    module, name = use_plugin_flow(tiny, monkeypatch, clean_modules)
    tiny.cfg["experiments"]["methods"] = ["ThresNet"]
    tiny.cfg["experiments"]["spacing"] = [{"type": "manual", "values": [0.5]}]
    assert tiny.run("--plugin", module) == 0
    from torchprune_flows.runner.runs import RunFolder

    assert RunFolder(tiny.path("out")).read_config()["plugins"] == [module]
    import sys

    for registry_module in [m for m in sys.modules if m == module]:
        monkeypatch.delitem(sys.modules, registry_module)  # sampling imports it again from config.yaml
    assert sample([tiny.path("out"), "-n", "5", "--out", tiny.path("s.npy"), "--plugin", module]) == 0
    assert os.path.exists(tiny.path("s.npy"))


def test_results_are_written_after_every_step(tiny, monkeypatch):
    """A crash after the first finished steps leaves their rows in results.csv and report.md."""
    from torchprune_flows.runner import pipeline

    original, calls = pipeline.Experiment.prune_sweep, []

    def crash_after_first_method(self, *args):
        calls.append(args)
        if len(calls) > 1:
            raise RuntimeError("power cut")
        return original(self, *args)

    monkeypatch.setattr(pipeline.Experiment, "prune_sweep", crash_after_first_method)
    with pytest.raises(RuntimeError, match="power cut"):
        tiny.run()
    with open(tiny.path("out", "results.csv")) as handle:
        lines = handle.read().strip().splitlines()
    assert len(lines) == 1 + 1 + 2  # header, the base net, ThresNet at both keep ratios
    assert "ThresNet" in lines[-1]
    with open(tiny.path("out", "report.md")) as handle:
        report = handle.read()
    assert "WT" in report or "ThresNet" in report
