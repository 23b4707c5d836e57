"""The runner picks its torch thread count deliberately (issue 12: one thread per core made small
flows 10-20x slower on a busy 2-core machine)."""
import torch

from torchprune_flows.runner.threads import SMALL_MODEL, choose_threads, free_cores


def test_flag_then_environment_then_model_size():
    env = {"OMP_NUM_THREADS": "3", "TORCHPRUNE_FLOWS_THREADS": "2"}
    assert choose_threads(5, 10, env) == (5, "--threads")
    assert choose_threads(None, 10, env) == (2, "TORCHPRUNE_FLOWS_THREADS")
    assert choose_threads(None, 10, {"OMP_NUM_THREADS": "3"}) == (3, "OMP_NUM_THREADS")
    assert choose_threads(None, SMALL_MODEL - 1, {"OMP_NUM_THREADS": "x"})[0] == 1
    threads, why = choose_threads(None, SMALL_MODEL, {})
    assert threads == free_cores() and why == "the free cores"
    assert 1 <= free_cores() <= (__import__("os").cpu_count() or 1)


def test_the_runner_sets_them(tiny, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("TORCHPRUNE_FLOWS_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        tiny.cfg["experiments"]["spacing"] = [{"type": "manual", "values": [0.5]}]
        tiny.cfg["training"]["numEpochs"] = 1
        assert tiny.run("--threads", "2") == 0
        assert torch.get_num_threads() == 2
        assert tiny.run(out="again") == 0  # 82 parameters: one thread
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
