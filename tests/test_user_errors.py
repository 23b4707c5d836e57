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

    from torchprune_flows.runner.commands.sample import main as sample

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


# -- issue 18: bad values that used to surface mid-run, and the file system ---------------------

def _nothing_written(tiny):
    return not os.path.exists(tiny.path("out"))


@pytest.mark.parametrize("override,words", [
    ("training.datasetKwargs.num_train=3", ["the validation split of ToyGaussians", "no rows",
                                            "training 3, validation 0, test 200"]),
    ("training.datasetKwargs.num_test=0", ["'training.datasetKwargs.num_test' must be an integer >= 1"]),
    ("training.datasetKwargs.num_train=0", ["'training.datasetKwargs.num_train' must be an integer >= 1", "got 0"]),
])
def test_splits_without_rows_are_refused_before_anything_trains(tiny, capsys, override, words):
    assert tiny.run("--set", override) == 2
    one_error_line(capsys, *words)
    assert _nothing_written(tiny)


def test_toy_datasets_take_no_size_zero():
    from torchprune_flows.data.toy import ToyGaussians

    with pytest.raises(ValueError, match="num_train must be a positive integer"):
        ToyGaussians(split="train", num_train=0)
    assert len(ToyGaussians(split="test", num_test=7)) == 7


@pytest.mark.parametrize("override,words", [
    ("training.optimizerKwargs={lr: -0.01}", ["'training.optimizerKwargs'", "AdamW", "Invalid learning rate: -0.01"]),
    ("training.optimizer=Adam", None),  # valid: the betas below make it invalid
    ("training.lrSchedulers=[{type: StepLR, stepKwargs: {step_size: 0}}]", ["'training.lrSchedulers[0]'", "StepLR"]),
    ("retraining.optimizerKwargs={betas: [1.5, 0.9]}", ["'retraining.optimizerKwargs'", "Invalid beta parameter"]),
])
def test_optimizer_and_scheduler_arguments_are_tried_before_anything_is_written(tiny, capsys, override, words):
    if words is None:
        tiny.cfg["experiments"]["methods"] = ["ThresNet"]
        tiny.cfg["training"]["numEpochs"] = 1
        assert tiny.run("--set", override, "--set", "experiments.spacing=[{type: manual, values: [0.5]}]") == 0
        return
    assert tiny.run("--set", override) == 2
    one_error_line(capsys, *words)
    assert _nothing_written(tiny)


def test_a_folder_without_a_finished_step_is_taken_over_by_another_config(tiny, capsys):
    """A run stopped in its first training (a partial checkpoint, a log, config.yaml) is no run yet:
    another config starts afresh there (its partial state is dropped, not resumed) and says so."""
    from torchprune_flows.runner.config import load_config
    from torchprune_flows.runner.runs import RunFolder

    tiny.cfg["experiments"]["methods"] = ["ThresNet"]
    tiny.cfg["experiments"]["spacing"] = [{"type": "manual", "values": [0.5]}]
    tiny.cfg["training"]["numEpochs"] = 1
    assert tiny.run(out="fresh") == 0
    earlier = load_config(tiny.write(), ["training.optimizerKwargs={lr: 0.05}"])
    RunFolder(tiny.path("out")).write_config(earlier)
    os.makedirs(tiny.path("out", "checkpoints"))
    os.makedirs(tiny.path("out", "logs"))
    with open(tiny.path("out", "checkpoints", "net0_ReferenceNet.partial.pt"), "wb") as handle:
        handle.write(b"a partial checkpoint of the other config")
    with open(tiny.path("out", "logs", "net0_ReferenceNet.jsonl"), "w") as handle:
        handle.write('{"epoch": 0}\n')
    capsys.readouterr()
    assert tiny.run() == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: {tiny.path('out')} held no finished step of another config (it differs in "
                        "training.optimizerKwargs.lr); this run takes it over from the start"]
    with open(tiny.path("out", "results.csv")) as a, open(tiny.path("fresh", "results.csv")) as b:
        drop = lambda rows: [r.split(",")[:14] for r in rows]  # noqa: E731  (up to the wall-clock columns)
        assert drop(a.read().splitlines()) == drop(b.read().splitlines())
    # once a step has finished, the folder is a run: another config is refused
    assert tiny.run("--set", "seed=1") == 2
    assert "holds a run of a different config" in capsys.readouterr().err


def test_an_out_folder_that_cannot_be_written_is_one_line(tiny, capsys):
    with open(tiny.path("taken"), "w") as handle:
        handle.write("x")
    assert tiny.run(out=os.path.join("taken", "run")) == 2
    one_error_line(capsys, f"cannot write to {tiny.path('taken', 'run')}: Not a directory")
    if os.geteuid() != 0:  # root writes anywhere
        os.makedirs(tiny.path("locked"))
        os.chmod(tiny.path("locked"), 0o500)
        assert tiny.run(out=os.path.join("locked", "run")) == 2
        one_error_line(capsys, "cannot write to", "Permission denied")
    probe = "/sys/fs/torchprune_flows_probe"  # sysfs: read-only, or refusing new folders, even to root
    if os.path.isdir("/sys/fs") and not os.path.exists(probe):
        try:
            os.makedirs(probe)
        except OSError:
            from torchprune_flows.runner.cli import main

            assert main([tiny.write(), "--out", os.path.join(probe, "run")]) == 2
            one_error_line(capsys, f"cannot write to {probe}/run")
        else:
            os.rmdir(probe)


def test_a_file_size_limit_while_writing_the_plots_is_one_line_and_the_rerun_completes(tiny):
    """RLIMIT_FSIZE below a plot's size (the checkpoints, records and tables are smaller): one error
    line naming the file, a non-zero exit, finished steps kept; the rerun writes what was missing."""
    import resource
    import subprocess
    import sys

    tiny.cfg["experiments"]["methods"] = ["ThresNet"]
    tiny.cfg["experiments"]["spacing"] = [{"type": "manual", "values": [0.5]}]
    tiny.cfg["training"]["numEpochs"] = 1
    config = tiny.write()
    command = [sys.executable, "-m", "experiment", config, "--out", tiny.path("out")]
    limit = 12_000  # bytes: a tiny run's checkpoints are ~5 kB, its plots ~20-40 kB

    def cap():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    capped = subprocess.run(command, env=tiny.subprocess_env(), cwd=tiny.root, capture_output=True, text=True,
                            timeout=300, preexec_fn=cap)
    lines = [line for line in capped.stderr.splitlines() if line.startswith("error:")]
    assert capped.returncode == 2 and len(lines) == 1 and "Traceback" not in capped.stderr, capped.stderr[-2000:]
    assert f"cannot write {tiny.path('out', 'plots')}" in lines[0] and "File too large" in lines[0], lines
    assert "rerun the same command" in lines[0]
    finished = sorted(os.listdir(tiny.path("out", "steps")))
    assert finished == ["net0_ReferenceNet.json", "net0_rep0_ThresNet_00.json"]
    assert not [name for name in os.listdir(tiny.path("out", "plots")) if name.startswith(".tmp-")]
    rerun = subprocess.run(command, env=tiny.subprocess_env(), cwd=tiny.root, capture_output=True, text=True,
                           timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert sorted(os.listdir(tiny.path("out", "steps"))) == finished  # nothing recomputed
    assert all(os.path.getsize(tiny.path("out", "plots", name)) > limit for name in os.listdir(tiny.path("out", "plots")))


def test_an_empty_spacing_trains_the_base_net_and_says_nothing_is_pruned(tiny, capsys):
    tiny.cfg["experiments"]["spacing"] = []
    tiny.cfg["training"]["numEpochs"] = 1
    assert tiny.run() == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: experiments.spacing gives no keep ratio: only the base nets are trained, "
                        "nothing is pruned"]
    assert os.listdir(tiny.path("out", "steps")) == ["net0_ReferenceNet.json"]


# -- issue 18: a plugin may be a file, and a module in the current folder ----------------------

@pytest.mark.filterwarnings("ignore:.*registered again")  # the plugin file is imported afresh
@pytest.mark.parametrize("how", ["relative", "absolute"])
def test_a_plugin_file_path_is_imported_recorded_and_loaded_again(tiny, capsys, monkeypatch, clean_modules, how):
    import sys

    from test_experiment import write_plugin

    from torchprune_flows.runner.commands import main as analyze
    from torchprune_flows.runner.runs import RunFolder

    os.makedirs(tiny.path("flows"))
    module, name = write_plugin(tiny.path("flows"), clean_modules)  # not importable by its name
    path = tiny.path("flows", module + ".py")
    given = os.path.join(".", "flows", module + ".py") if how == "relative" else path
    tiny.cfg["network"]["name"] = name
    tiny.cfg["training"]["numEpochs"] = 1
    tiny.cfg["experiments"]["methods"] = ["ThresNet"]
    tiny.cfg["experiments"]["spacing"] = [{"type": "manual", "values": [0.5]}]
    assert tiny.run("--plugin", given) == 0
    assert RunFolder(tiny.path("out")).read_config()["plugins"] == [path]  # from any folder, the same file
    monkeypatch.delitem(sys.modules, module)
    monkeypatch.chdir(tiny.path("flows"))  # elsewhere: sample and analyze find the file from config.yaml
    assert analyze(["sample", tiny.path("out"), "-n", "5", "--out", tiny.path("s.npy")]) == 0
    assert module in sys.modules and sys.modules[module].__file__ == path
    monkeypatch.delitem(sys.modules, module)
    assert analyze(["modes", tiny.path("out"), "-n", "20", "--methods", "WT", "--keep", "0.5",
                    "--out", tiny.path("modes")]) == 0
    capsys.readouterr()
    from torchprune_flows.registry import load_plugins

    with pytest.raises(Exception, match=r"plugin file .*missing_flows\.py does not exist"):
        load_plugins([tiny.path("missing_flows.py")])


@pytest.mark.filterwarnings("ignore:.*registered again")
def test_a_plugin_module_in_the_current_folder_is_found_without_python_m(tiny, monkeypatch, clean_modules):
    """``torchprune-flows`` (a console script) has its own folder on sys.path, not the current
    one; ``python -m experiment`` has the current folder: a plugin there is found either way."""
    import sys

    from test_experiment import write_plugin

    module, name = write_plugin(tiny.root, clean_modules)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", tiny.root, os.getcwd())])
    tiny.cfg["network"]["name"] = name
    tiny.cfg["training"]["numEpochs"] = 1
    tiny.cfg["experiments"]["methods"] = ["ThresNet"]
    tiny.cfg["experiments"]["spacing"] = [{"type": "manual", "values": [0.5]}]
    assert tiny.run("--plugin", module) == 0
    assert sys.modules[module].__file__ == tiny.path(module + ".py")
