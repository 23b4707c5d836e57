"""The sweep plan every runner walks: the steps it names are exactly the steps a run finishes,
in the order the sequential pipeline finishes them (Ray and torchrun iterate the same plan)."""
import os

from torchprune_flows.runner.plan import SweepPlan
from torchprune_flows.runner.results import DENSE_CONTROL


def test_plan_counts_and_names():
    plan = SweepPlan(num_nets=2, num_repetitions=2, methods=["WT", "FT"], control=True, num_keep_ratios=3)
    assert plan.chains_per_net == 2 * 3  # per repetition: two methods and the control
    assert plan.total_steps == 2 * (1 + 6 * 3)
    net = plan.nets[1]
    assert net.reference == "net1_ReferenceNet"
    assert [c.label for c in net.chains] == ["WT", "FT", DENSE_CONTROL] * 2
    assert net.chains[4].steps == ("net1_rep1_FT_00", "net1_rep1_FT_01", "net1_rep1_FT_02")
    train_only = SweepPlan(3, 2, ["WT"], True, 5, train_only=True)
    assert train_only.total_steps == 3 and train_only.chains_per_net == 0


def test_a_run_finishes_exactly_the_planned_steps_in_plan_order(tiny_experiment_class, tmp_path, torch_single_thread):
    exp = tiny_experiment_class(tmp_path)
    exp.cfg["experiments"]["control"] = "dense"
    exp.cfg["experiments"]["numNets"] = 1
    exp.cfg["training"]["numEpochs"] = 1
    assert exp.run() == 0
    steps_dir = os.path.join(exp.path("out"), "steps")
    finished = sorted((os.path.getmtime(os.path.join(steps_dir, n)), n[:-5]) for n in os.listdir(steps_dir))
    plan = SweepPlan(1, 1, ["ThresNet", "FilterThresNet"], True, 2)
    planned = [net.reference for net in plan.nets] + [s for c in plan.nets[0].chains for s in c.steps]
    assert [name for _, name in finished] == planned
    assert plan.total_steps == len(finished)
