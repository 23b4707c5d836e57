"""Child process (run from the repository root): torchprune's own loader on every shipped config."""
import glob
import json

from experiment.util.file import get_parameters

report = {}
for path in sorted(glob.glob("experiment_configs/**/*.yaml", recursive=True)):
    if any(part in path for part in ("/toy/", "/tabular/", "/images/")):  # section includes
        continue
    try:
        params = list(get_parameters(path, 1, 0))
        report[path] = {"variants": len(params), "keep_ratios": len(params[0]["generated"]["keepRatios"]),
                        "plotting": params[0]["experiments"]["plotting"]}
    except Exception as err:  # noqa: BLE001
        report[path] = {"error": f"{type(err).__name__}: {err}"}
print(json.dumps(report))
