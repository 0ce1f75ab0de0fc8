"""Write a contributor's results folder of hostile files, mutated from genuine results, to see what
``stmbench leaderboard`` and ``stmbench results verify`` make of them:

    python examples/hostile_folder.py leaderboard/results /tmp/eve
    stmbench results verify leaderboard/results /tmp/eve
    stmbench leaderboard --results-dir leaderboard/results --results-dir /tmp/eve --out /tmp/board

Cases: a forged accuracy, NaN, ``true`` as a metric, a run id that walks out of its folder, a
predictions file that is a symbolic link to a "secret" file (written beside the folder as
``<folder>.secret.json``), another run's id under a made-up file name, a made-up id, a seed that is
text, a FIFO, JSON nested 10,000 levels, and one self-consistent run whose backbone name carries HTML,
a terminal escape code and table pipes (accepted: its numbers check out; its name is escaped).
"""

from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path

from stmbench import RunSpec


def main(genuine: Path, eve: Path) -> None:
    eve.mkdir(parents=True, exist_ok=True)
    secret = eve.with_name(eve.name + ".secret.json")
    secret.write_text('{"api_key": "TOP-SECRET"}\n', encoding="utf-8")
    first = sorted(p.name[:-5] for p in genuine.glob("*[0-9a-f].json"))[0]
    base = json.loads((genuine / f"{first}.json").read_text(encoding="utf-8"))
    preds = json.loads((genuine / f"{first}.predictions.json").read_text(encoding="utf-8"))

    def moved(seed: int, **spec: object) -> tuple[dict, dict]:
        """The genuine run at another seed: a new identity that checks out."""
        r = copy.deepcopy(base)
        r["spec"].update(seed=seed, **spec)
        r["seed"] = seed
        r["run_id"] = RunSpec.from_dict(r["spec"]).run_id
        return r, {**preds, "run_id": r["run_id"]}

    def put(record: dict | str, p: dict | None = None, name: str | None = None) -> None:
        name = name or f"{record['run_id']}.json"
        (eve / name).write_text(record if isinstance(record, str) else json.dumps(record), encoding="utf-8")
        if p is not None:
            (eve / name.replace(".json", ".predictions.json")).write_text(json.dumps(p), encoding="utf-8")

    r, p = moved(1)
    r["metrics"]["accuracy"] = 0.99
    put(r, p)  # a forged accuracy beside predictions that say otherwise
    r, p = moved(2)
    put(json.dumps(r).replace(f'"accuracy": {base["metrics"]["accuracy"]}', '"accuracy": NaN', 1), p,
        name=f"{r['run_id']}.json")
    r, p = moved(3)
    r["metrics"]["accuracy"] = True
    put(r, p)
    r, p = moved(4)
    r["run_id"] = "../../private/creds"
    put(r, p, name="creds.json")  # an id that walks out of its folder
    r, p = moved(5)
    put(r)
    os.symlink(secret.resolve(), eve / f"{r['run_id']}.predictions.json")  # predictions that are a link
    put({**copy.deepcopy(base), "metrics": {"accuracy": 0.99, "macro_f1": 0.99}}, preds, name="0000000000000000.json")
    r, p = moved(7)
    r["run_id"] = p["run_id"] = "0123456789abcdef"
    put(r, p)  # a made-up id: another seed in someone else's cell
    r, p = moved(8, backbone="<img src=x onerror=alert(1)>\x1b[31m | 99.9 |")
    put(r, p)  # self-consistent; only its name is hostile
    r, p = moved(9)
    r["spec"]["seed"] = "abc"
    put(r, p)
    os.mkfifo(eve / "fifo.json")  # would block a reader forever
    put("[" * 10000 + "]" * 10000, name="deep.json")
    print(f"wrote {len(list(eve.iterdir()))} files into {eve} (and {secret})")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python examples/hostile_folder.py GENUINE_RESULTS_DIR NEW_FOLDER")
    main(Path(sys.argv[1]), Path(sys.argv[2]))
