"""``python -m experiment.sample``: samples from the trained nets of a finished run."""
import os

import numpy as np
import pytest
import torch

from torchprune_flows.runner.runs import RunError, RunFolder
from torchprune_flows.runner.commands.sample import main
from torchprune_flows.pruning import count_nonzero, count_parameters


def test_samples_of_a_pruned_net_invert_its_density_direction(cascade_run, tmp_path):
    _, out, rc = cascade_run
    assert rc == 0
    target = str(tmp_path / "s.npy")
    assert main([out, "--method", "FT", "--keep", "0.3", "-n", "40", "--seed", "1", "--out", target]) == 0
    samples = np.load(target)
    assert samples.shape == (40, 2) and np.isfinite(samples).all()
    # the pruned net (keep 0.3) maps its samples back to the same prior draws
    run = RunFolder.open(out)
    step = run.select("FilterThresNet", 0.3)
    assert run.steps[step]["keep_ratio"] == pytest.approx(0.3)
    net = run.load_network(step)
    z = torch.randn(40, 2, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        back = net(torch.as_tensor(samples))["z"]
    assert torch.allclose(back, z, atol=2e-2)
    # masks are in place: the loaded net has as many nonzero entries as the step recorded
    assert count_nonzero(net) == run.steps[step]["params"] < count_parameters(net)
    # same seed, same samples
    again = str(tmp_path / "again.npy")
    assert main([out, "--method", "FT", "--keep", "0.3", "-n", "40", "--seed", "1", "--out", again]) == 0
    assert np.array_equal(np.load(again), samples)


def test_default_output_and_plot(cascade_run, tmp_path):
    _, out, _ = cascade_run
    png = str(tmp_path / "s.png")
    assert main([out, "-n", "30", "--out", str(tmp_path / "ref.npy"), "--plot", png]) == 0
    with open(png, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args,message", [
    (["--method", "FT"], "--keep"),
    (["--method", "XYZ", "--keep", "0.3"], "XYZ"),
    (["--net", "5"], "net 5"),
    (["-n", "0"], "--num-samples"),
])
def test_bad_selection_is_one_line_and_exit_2(cascade_run, capsys, args, message):
    _, out, _ = cascade_run
    assert main([out, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err


def test_not_a_run_folder(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "not an experiment folder" in capsys.readouterr().err
    with pytest.raises(RunError):
        RunFolder.open(str(tmp_path))


def test_run_folder_finds_steps_by_their_exact_key(cascade_run):
    _, out, _ = cascade_run
    run = RunFolder.open(out)
    for step, row in run.steps.items():
        assert run.find(row["net"], row["repetition"], row["method"], row["keep_ratio"]) == step
    assert run.find(0, 0, "ReferenceNet", 1.0) == RunFolder.reference_step(0) == "net0_ReferenceNet"
    ft = run.find(0, 0, "FilterThresNet", 0.3)
    assert ft == RunFolder.pruned_step(0, 0, "FilterThresNet", 1) == "net0_rep0_FilterThresNet_01"
    assert run.find(0, 0, "FilterThresNet", 0.301) is None  # exact, unlike the user-facing select
    assert run.select("FT", 0.301) == ft  # within the 0.5 % a pruned net's achieved ratio may miss by
    assert run.checkpoint(ft) == f"{out}/checkpoints/{ft}.pt" and run.log(ft) == f"{out}/logs/{ft}.jsonl"


def test_sample_is_a_subcommand_of_analyze(cascade_run, tmp_path):
    from torchprune_flows.runner.commands import main as analyze

    _, out, _ = cascade_run
    one, two = str(tmp_path / "one.npy"), str(tmp_path / "two.npy")
    assert analyze(["sample", out, "--method", "WT", "--keep", "0.6", "-n", "20", "--out", one]) == 0
    assert main([out, "--method", "WT", "--keep", "0.6", "-n", "20", "--out", two]) == 0
    assert np.array_equal(np.load(one), np.load(two))


# -- issue 18: a typed keep ratio means a finished step, or says which ones there are ---------

@pytest.mark.parametrize("command", ["sample", "export"])
def test_a_keep_ratio_the_run_lacks_lists_the_finished_ones(cascade_run, capsys, tmp_path, command):
    from torchprune_flows.runner.commands import main as analyze

    from conftest import one_error_line

    _, out, _ = cascade_run
    target = str(tmp_path / "x")
    for keep in ("0.31", "0.4", "7"):  # near a finished ratio, between two, outside (0, 1]
        assert analyze([command, out, "--method", "FT", "--keep", keep, "--out", target]) == 2
        line = one_error_line(capsys, f"--keep {keep}")
        assert ("finished keep ratios: 0.6, 0.3" in line) == (keep != "7"), line
    assert "outside (0, 1]" in line
    assert not os.listdir(tmp_path)
    # what the report shows (prune 70 %) and the achieved ratio (params / params_original) match
    run = RunFolder.open(out)
    step = run.select("FT", 0.3)
    achieved = run.steps[step]["params"] / run.steps[step]["params_original"]
    assert run.select("FT", 0.3 + 4e-4) == run.select("FT", achieved) == step


def test_a_keep_ratio_not_finished_yet_says_so(cascade_run, tmp_path, capsys):
    import shutil

    from conftest import one_error_line

    _, out, _ = cascade_run
    copy = str(tmp_path / "run")
    shutil.copytree(out, copy)
    os.remove(os.path.join(copy, "steps", "net0_rep0_FilterThresNet_01.json"))  # as if still running
    assert main([copy, "--method", "FT", "--keep", "0.3", "-n", "5"]) == 2
    one_error_line(capsys, "--keep 0.3 for FilterThresNet", "is not finished yet", "finished keep ratios: 0.6")


def test_a_run_without_a_finished_step_is_in_progress_not_a_stranger(tiny, capsys):
    """A run interrupted in its first step has config.yaml and maybe a partial checkpoint only."""
    from conftest import one_error_line

    tiny.cfg["training"]["numEpochs"] = 1
    os.makedirs(tiny.path("out", "checkpoints"))
    from torchprune_flows.runner.config import load_config
    from torchprune_flows.runner.runs import RunFolder as Folder

    Folder(tiny.path("out")).write_config(load_config(tiny.write()))
    open(tiny.path("out", "checkpoints", "net0_ReferenceNet.partial.pt"), "wb").close()
    assert main([tiny.path("out")]) == 2
    one_error_line(capsys, f"no finished step yet in {tiny.path('out')}", "in progress or was interrupted")


@pytest.mark.filterwarnings("ignore:.*registered again")
def test_a_step_that_did_not_converge_is_named_with_its_reason(tiny, monkeypatch, clean_modules, capsys):
    from test_experiment import _run_plugin_flow

    from conftest import one_error_line

    out = _run_plugin_flow(tiny, monkeypatch, clean_modules, "FragileFlow", [0.8, 0.3], methods=["ThresNet"])
    run = RunFolder.open(out)
    assert run.steps["net0_rep0_ThresNet_01"]["converged"] is False  # FragileFlow: NaN past half pruned
    reason = run.steps["net0_rep0_ThresNet_01"]["extra"]["error"]
    capsys.readouterr()
    assert main([out, "--method", "WT", "--keep", "0.3", "-n", "5", "--out", tiny.path("s.npy")]) == 2
    one_error_line(capsys, "step net0_rep0_ThresNet_01 (ThresNet keep 0.3) did not converge", reason,
                   "that can: unpruned, ThresNet keep 0.8")
    assert not os.path.exists(tiny.path("s.npy"))
    assert main([out, "--method", "WT", "--keep", "0.8", "-n", "5", "--out", tiny.path("s.npy")]) == 0
