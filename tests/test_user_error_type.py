"""One user-error type (issue 20 item 4): every error the package raises for bad input derives
from :class:`torchprune_flows.errors.UserError`, and every command line turns one into a single
``error:`` line with exit code 2 (one ``except``, in :func:`~torchprune_flows.errors.reports_user_errors`)."""
import importlib
import inspect
import os
import subprocess
import sys

import pytest

import torchprune_flows
from torchprune_flows.errors import UserError, check_keep_ratio, error_line
from torchprune_flows.registry.suggest import close_matches, did_you_mean

from conftest import REPO_ROOT, one_error_line
from test_import_cycles import package_modules

#: exceptions that are no user's fault, each with why: they are handled inside the package
INTERNAL = {
    "torchprune_flows.cnf.errors.SolverError": "a solve that failed; training and sampling turn it into a result or a RunError",
    "torchprune_flows.runner.training.DidNotConverge": "a step that diverged; recorded as converged: false",
    "torchprune_flows.runner.distributed.RankZeroError": "rank 0's exception carried to the other ranks",
}


def _package_exceptions():
    found = {}
    for name in package_modules():
        if name.endswith("__main__"):
            continue
        module = importlib.import_module(name)
        for _, value in vars(module).items():
            if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == name:
                found[f"{name}.{value.__qualname__}"] = value
    return found


def test_every_error_class_of_the_package_is_a_user_error_or_named_internal():
    found = _package_exceptions()
    assert len(found) >= 15, sorted(found)
    stray = sorted(name for name, cls in found.items() if not issubclass(cls, UserError) and name not in INTERNAL)
    assert not stray, f"derive these from torchprune_flows.errors.UserError (or list them in INTERNAL): {stray}"
    assert set(INTERNAL) <= set(found), "INTERNAL lists a class that no longer exists"


def test_the_old_names_keep_their_builtin_bases():
    from torchprune_flows.data.checks import DataFileError
    from torchprune_flows.pruning import PruningError
    from torchprune_flows.registry import InvalidFieldError, PluginImportError, UnknownNameError
    from torchprune_flows.runner.atomic_files import CorruptFileError
    from torchprune_flows.runner.config import ConfigError
    from torchprune_flows.runner.runs import RunError

    for cls, base in ((DataFileError, ValueError), (PruningError, ValueError), (RunError, ValueError),
                      (CorruptFileError, ValueError), (UnknownNameError, KeyError), (InvalidFieldError, ValueError),
                      (PluginImportError, ImportError), (ConfigError, UserError)):
        assert issubclass(cls, UserError) and issubclass(cls, base), cls
    assert str(UnknownNameError("unknown network 'x'")) == "unknown network 'x'"  # no KeyError quotes


def test_one_keep_ratio_check_and_message():
    assert check_keep_ratio(1.0) == 1.0 and check_keep_ratio(0.01) == 0.01
    with pytest.raises(UserError) as err:
        check_keep_ratio(1.5, where="experiments.spacing[1]")
    assert str(err.value).startswith("keep ratio 1.5 from experiments.spacing[1] is outside (0, 1]; ")
    with pytest.raises(KeyError):
        check_keep_ratio(0, name="--keep", error=KeyError)
    with pytest.raises(UserError, match=r"^--keep 7 is outside \(0, 1\]; a keep ratio is the fraction"):
        check_keep_ratio(7, name="--keep")


def test_one_close_match_helper():
    assert did_you_mean("ThresNett", ["ThresNet", "FilterThresNet", "WT", "FT"]) == "did you mean ThresNet or FilterThresNet?"
    assert did_you_mean("ThresNett", ["ThresNet", "WT"]) == "did you mean ThresNet?"
    assert did_you_mean("zzz", ["ThresNet"]) == ""
    assert did_you_mean("adamw", ["AdamW", "Adam"], ignore_case=True, quote=True) == "did you mean 'AdamW' or 'Adam'?"
    assert len(close_matches("ab", ["ab1", "ab2", "ab3", "ab4"], n=3)) == 3
    assert error_line(UserError("two\nlines")) == "error: two lines"


@pytest.fixture
def raises_user_error():
    class ANewKindOfUserError(UserError):
        pass

    def raise_it(*args, **kwargs):
        raise ANewKindOfUserError("something the user can fix, and how")

    return raise_it


def test_experiment_cli_reports_any_user_error(monkeypatch, capsys, tmp_path, raises_user_error):
    from torchprune_flows.runner import cli

    monkeypatch.setattr(cli, "resolve_config", raises_user_error)
    assert cli.run_from_command_line([str(tmp_path / "c.yaml"), "--out", str(tmp_path / "out")]) == 2
    one_error_line(capsys, "something the user can fix, and how")
    assert not os.listdir(tmp_path)


def test_torchprune_launcher_reports_any_user_error(monkeypatch, capsys, tmp_path, raises_user_error):
    from torchprune_flows.runner import cli
    from torchprune_flows.integrations.torchprune import engine

    monkeypatch.setattr(cli, "load_config", lambda *a: {"network": {}, "training": {}, "experiments": {}})
    monkeypatch.setattr(engine, "run", raises_user_error)
    assert cli.main([str(tmp_path / "c.yaml"), "--engine", "torchprune"]) == 2
    one_error_line(capsys, "something the user can fix")
    assert cli.main([str(tmp_path / "c.yaml"), "--engine", "torchprune", "--set", "seed=1"]) == 2
    one_error_line(capsys, "--set only apply to our runner")


@pytest.mark.parametrize("entry", ["analyze", "sample"])
def test_analyze_and_sample_report_any_user_error(monkeypatch, capsys, tmp_path, raises_user_error, entry):
    from torchprune_flows.runner.commands import main as analyze
    from torchprune_flows.runner.commands import sample

    monkeypatch.setattr(sample, "run", raises_user_error)
    main, argv = (analyze, ["sample", str(tmp_path)]) if entry == "analyze" else (sample.main, [str(tmp_path)])
    assert main(argv) == 2
    one_error_line(capsys, "something the user can fix")


def test_analyze_reports_a_missing_file_as_a_user_error(monkeypatch, capsys, tmp_path):
    from torchprune_flows.runner.commands import main as analyze
    from torchprune_flows.runner.commands import sample

    def missing(args):
        raise FileNotFoundError("MyData not found in /nowhere; download it first")

    monkeypatch.setattr(sample, "run", missing)
    assert analyze(["sample", str(tmp_path)]) == 2
    one_error_line(capsys, "MyData not found in /nowhere")


def test_registry_listing_reports_any_user_error(monkeypatch, capsys, raises_user_error):
    import torchprune_flows.registry.__main__ as listing

    assert listing.main(["datasets", "nonsense"]) == 2
    assert capsys.readouterr().out == ""  # nothing listed before the error
    monkeypatch.setattr(listing, "load_entry_point_plugins", raises_user_error)
    assert listing.main(["datasets"]) == 2
    one_error_line(capsys, "something the user can fix")


def test_the_installed_entry_points_print_one_line(tmp_path):
    """The real ``python -m`` entry points, in a fresh process."""
    env = {**os.environ, "PYTHONPATH": REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for argv in (["experiment.sample", str(tmp_path / "no_run")], ["torchprune_flows.registry", "nonsense"]):
        done = subprocess.run([sys.executable, "-m", *argv], cwd=str(tmp_path), env=env, capture_output=True,
                              text=True, timeout=300)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (argv, done.stderr)
    assert torchprune_flows.__file__.startswith(REPO_ROOT)
