"""torchprune's own runner on our toy flow through our launcher, timed (on a GPU if there is one).

    python benchmarks/gpu_torchprune.py SHARED_DATA_DIR WORK_DIR [--epochs 3] [--timeout 150]

SHARED_DATA_DIR is a ``shared/data`` folder with the vendored upstream snapshots beside it in
``../vendor`` (torchprune-v2.2.0, ffjord), as the tests expect; the tests' fixture copies them
into WORK_DIR and stubs torchprune's import-time dependencies that are missing (see
``RealTorchprune`` in tests/conftest.py). The config is the Gaussians paper net and batch
(``ffjord_l2_h128_sigmoid_da``, 1,024, AdamW 5e-3) with a short schedule; torchprune has no
device option: it trains on ``cuda:0`` whenever ``torch.cuda.device_count() > 0``, so on a GPU
machine this is torchprune's GPU path. Prints one JSON line; exit 1 when the run failed.
"""
import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config(epochs):
    return {
        "network": {"name": "ffjord_l2_h128_sigmoid_da", "dataset": "ToyGaussians", "outputSize": 2},
        "training": {"transformsTrain": [], "transformsTest": [], "transformsFinal": [], "loss": "NLLPriorLoss",
                     "lossKwargs": {}, "metricsTest": [{"type": "NLLPrior", "kwargs": {}},
                                                       {"type": "Dummy", "kwargs": {}}],
                     "batchSize": 1024, "optimizer": "AdamW", "optimizerKwargs": {"lr": 5.0e-3, "weight_decay": 1.0e-5},
                     "numEpochs": epochs, "enableAMP": False, "lrSchedulers": []},
        "retraining": {"startEpoch": epochs - 1},
        "experiments": {"methods": ["ThresNet", "FilterThresNet"], "mode": "cascade", "numRepetitions": 1,
                        "numNets": 1, "plotting": {"minVal": 0.1, "maxVal": 0.9},
                        "spacing": [{"type": "manual", "values": [0.5]}], "retrainIterations": -1},
        "coresets": {"deltaS": 0.5},
        "directories": {"results": "./results", "trained_networks": "./trained", "training_data": "./training",
                        "local_data": "./local"},
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("shared_data")
    parser.add_argument("work_dir")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=150)
    args = parser.parse_args(argv)
    os.environ["TORCHPRUNE_FLOWS_SHARED_DATA"] = os.path.abspath(args.shared_data)
    sys.path.insert(0, os.path.join(REPO_ROOT, "tests"))
    import yaml
    from conftest import RealTorchprune  # reads TORCHPRUNE_FLOWS_SHARED_DATA when imported

    shutil.rmtree(args.work_dir, ignore_errors=True)
    os.makedirs(args.work_dir)
    real = RealTorchprune(os.path.join(args.work_dir, "torchprune"))
    run_dir = os.path.join(args.work_dir, "run")
    os.makedirs(run_dir)
    with open(os.path.join(run_dir, "config.yaml"), "w") as handle:
        yaml.safe_dump(config(args.epochs), handle)
    launcher = shutil.which("torchprune-flows")
    command = ([launcher] if launcher else [sys.executable, "-m", "torchprune_flows.runner"]) + \
        ["config.yaml", "--engine", "torchprune"]
    env = real.env()
    env["PYTHONPATH"] += "".join(os.pathsep + p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)
    env.pop("OMP_NUM_THREADS", None)  # torchprune's own threading, as a user would run it
    started = time.perf_counter()
    try:
        proc = subprocess.run(command, cwd=run_dir, env=env, capture_output=True, text=True, timeout=args.timeout)
        code, out = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as err:
        code, out = "timeout", (err.stdout or b"").decode(errors="replace") + (err.stderr or b"").decode(errors="replace")
    seconds = time.perf_counter() - started
    with open(os.path.join(args.work_dir, "torchprune_output.log"), "w") as handle:
        handle.write(out)
    gpus = re.findall(r"Number of available GPUS: (\d+)", out)
    stats = glob.glob(os.path.join(run_dir, "results", "**", "data", "*.npz"), recursive=True)
    report = {"command": " ".join(os.path.basename(c) if i == 0 else c for i, c in enumerate(command)),
              "exit": code, "seconds": round(seconds, 1), "gpus_torchprune_saw": gpus[:1], "stats_files": len(stats)}
    if stats:
        import numpy as np

        data = np.load(stats[0], allow_pickle=True)
        report.update(methods=[str(m) for m in data["methods"]],
                      sizes=np.round(data["sizes"][0, :, 0, :], 4).tolist(),
                      loss=np.round(data["loss"].reshape(-1), 4).tolist()[:8])
    report["result"] = "PASS" if code == 0 and stats else "FAIL"
    if report["result"] == "FAIL":
        report["output_tail"] = out[-1500:]
    print(json.dumps(report), flush=True)
    return 0 if report["result"] == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
