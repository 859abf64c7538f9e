"""docs/own_data.md, run as written: every ```bash block in order, every ```yaml block that names its file
(``# my_pair.yaml``) written first, in an empty directory with the installed package (slow: part of make test)."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

PAGE = Path(__file__).resolve().parents[2] / "docs" / "own_data.md"


def blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced block, in page order."""
    return [(m.group(1), m.group(2)) for m in re.finditer(r"^```(\w+)\n(.*?)^```$", text, re.S | re.M)]


def test_the_page_lists_the_steps_it_promises():
    found = blocks(PAGE.read_text())
    files = [re.match(r"# (\S+)\n", body).group(1) for lang, body in found if lang == "yaml"]
    assert files == ["my_pair.yaml", "my_sweep.yaml"]
    commands = [body.split()[0:2] for lang, body in found if lang == "bash"]
    assert commands == [["python", "-"], ["lit-transfer", "fit"], ["lit-transfer", "sweep"],
                        ["lit-transfer", "report"], ["lit-transfer", "predict"]]


def test_every_command_of_the_page_runs_as_written(tmp_path):
    env = {**os.environ, "HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("LIT_TRANSFER_RUN_DIR", None)
    work = tmp_path / "work"
    work.mkdir()
    outputs = []
    for lang, body in blocks(PAGE.read_text()):
        if lang == "yaml":
            name = re.match(r"# (\S+)\n", body).group(1)
            (work / name).write_text(body)
        elif lang == "bash":
            proc = subprocess.run(["bash", "-e", "-c", body], cwd=work, env=env, capture_output=True, text=True,
                                  timeout=600)
            assert proc.returncode == 0, f"{body}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            outputs.append(proc.stdout)

    # 2. one run: the source stage, then 10 labelled target images per class, classes matched through label_map
    first = json.loads((work / "runs/first/result.json").read_text())
    assert first["status"] == "ok" and first["weights_origin"] == "source stage"
    assert first["classes"] == {"names": [str(d) for d in range(10)], "missing": {}}
    assert first["labels"]["target_train"] == 100
    assert first["input_size"] == [1, 28, 28] and 0.1 < first["metrics"]["target/test_acc"] <= 1
    # 3. the sweep: 3 strategies x 2 seeds, each seed with its own source model
    trials = [json.loads(p.read_text()) for p in (work / "my_sweep/trials").glob("*/result.json")]
    assert sorted((r["strategy"], r["seed"]) for r in trials) == sorted(
        (s, seed) for s in ("scratch", "linear_probe", "finetune") for seed in (0, 1))
    # 4. the report: a row per strategy, gains over scratch
    summary = json.loads((work / "my_sweep/report/summary.json").read_text())
    assert {r["strategy"] for r in summary["rows"]} == {"scratch", "linear_probe", "finetune"}
    assert all(r["pairs"] == 2 for r in summary["rows"] if r["strategy"] != "scratch")
    assert [s["seeds"] for s in summary["stages"]] == [[0, 1]]
    assert "| my_digits | finetune |" in outputs[3]
    # 5. predictions: one row per new image, class names from the run
    with open(work / "runs/predicted/predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(Path(r["file"]).name for r in rows) == sorted(f"scan_{i}.png" for i in range(1, 5000, 250))
    for r in rows:
        probs = {k[2:]: float(v) for k, v in r.items() if k.startswith("p_")}
        assert sorted(probs) == [str(d) for d in range(10)] and r["predicted"] == max(probs, key=probs.get)
