"""``python -m experiment.sample``: samples from the trained nets of a finished run."""
import numpy as np
import pytest
import torch

from torchprune_flows.runner.runs import RunError, RunFolder
from torchprune_flows.runner.analyze.sample import main
from torchprune_flows.pruning import count_nonzero, count_parameters


def test_samples_of_a_pruned_net_invert_its_density_direction(cascade_run, tmp_path):
    _, out, rc = cascade_run
    assert rc == 0
    target = str(tmp_path / "s.npy")
    assert main([out, "--method", "FT", "--keep", "0.31", "-n", "40", "--seed", "1", "--out", target]) == 0
    samples = np.load(target)
    assert samples.shape == (40, 2) and np.isfinite(samples).all()
    # the pruned net (keep 0.3, closest to 0.31) maps its samples back to the same prior draws
    run = RunFolder.open(out)
    step = run.select("FilterThresNet", 0.31)
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
    assert main([out, "--method", "FT", "--keep", "0.31", "-n", "40", "--seed", "1", "--out", again]) == 0
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
    assert run.find(0, 0, "FilterThresNet", 0.31) is None  # exact, unlike the user-facing select
    assert run.select("FT", 0.31) == ft
    assert run.checkpoint(ft) == f"{out}/checkpoints/{ft}.pt" and run.log(ft) == f"{out}/logs/{ft}.jsonl"


def test_sample_is_a_subcommand_of_analyze(cascade_run, tmp_path):
    from torchprune_flows.runner.analyze import main as analyze

    _, out, _ = cascade_run
    one, two = str(tmp_path / "one.npy"), str(tmp_path / "two.npy")
    assert analyze(["sample", out, "--method", "WT", "--keep", "0.6", "-n", "20", "--out", one]) == 0
    assert main([out, "--method", "WT", "--keep", "0.6", "-n", "20", "--out", two]) == 0
    assert np.array_equal(np.load(one), np.load(two))
