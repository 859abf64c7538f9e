"""A real (non-editable) install: the wheel ships configs/ and sweeps/, and `lit-transfer fit --strategy ...`
works from a directory that is not the checkout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import REPO

_NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "runs", "demo_runs", "sweep_runs", "bench_runs", "build",
                                     "__pycache__", "*.egg-info", ".pytest_cache", "wandb", "lightning_logs")


@pytest.mark.slow
def test_wheel_install_runs_a_strategy_from_any_directory(tmp_path):
    # A copy of the source tree: building in place would leave build/ and *.egg-info in the checkout.
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=_NOT_SOURCE)
    venv = tmp_path / "venv"
    # No pip of its own (ensurepip costs ~20 s): pip, setuptools and the dependencies (torch, lightning, ...)
    # come from this interpreter's site-packages through a .pth line, so nothing is downloaded.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    deps = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (site / "_lit_transfer_test_deps.pth").write_text("".join(f"{d}\n" for d in deps))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LIT_TRANSFER_RUN_DIR", "PIP_USER")}
    env.update(HF_HUB_OFFLINE="1", WANDB_MODE="offline", PIP_DISABLE_PIP_VERSION_CHECK="1")
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
                    str(source)], check=True, env=env, cwd=tmp_path, timeout=300)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run(
        [str(python), "-c", "import lit_transfer, lit_transfer.configs as c; print(lit_transfer.__file__); "
                            "print(c.shipped_root('configs')); print(c.shipped_root('sweeps'))"],
        check=True, capture_output=True, text=True, env=env, cwd=elsewhere).stdout.split()
    installed = site / "lit_transfer"
    assert Path(where[0]).parent == installed  # the installed copy, not the checkout
    assert Path(where[1]) == installed / "configs" and (installed / "configs" / "strategy" / "finetune.yaml").is_file()
    assert Path(where[2]) == installed / "sweeps" and (installed / "sweeps" / "digits_strategies.yaml").is_file()
    assert list(site.glob("lit_transfer-*.dist-info/licenses/LICENSE"))

    fit = subprocess.run(
        [str(venv / "bin" / "lit-transfer"), "fit", "--config", "configs/data/digits_shift.yaml",
         "--config", "configs/model/small_cnn.yaml", "--strategy", "finetune", "--trainer.max_steps=2",
         "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false", "--data.target_shots=3",
         "--run.test_after_fit=false", "--run.root=runs"],
        capture_output=True, text=True, env=env, cwd=elsewhere, timeout=300)
    assert fit.returncode == 0, fit.stderr[-3000:]
    (result,) = (elsewhere / "runs").rglob("result.json")
    assert json.loads(result.read_text())["strategy"] == "finetune"
    demo = subprocess.run([str(python), "-m", "lit_transfer.demo", "--help"], capture_output=True, text=True,
                          env=env, cwd=elsewhere, timeout=120)
    assert demo.returncode == 0 and "--workers" in demo.stdout, demo.stderr[-2000:]
