"""`make demo`: the real-transfer sweeps reduced to the demo's grid, Fashion-MNIST when the machine has it,
else one line and MNIST-5k. (The demo itself runs in `make demo`; here its plan is checked, not its training.)"""

import yaml

from lit_transfer import demo


def test_the_demo_runs_a_reduced_grid_of_the_shipped_real_sweeps(tmp_path):
    path = demo.reduced_sweep("real_fashion_mnist", tmp_path)
    cfg = yaml.safe_load(path.read_text())
    assert cfg["parameters"]["strategy"]["values"] == ["scratch", "linear_probe", "finetune"]
    assert cfg["parameters"]["data.target_shots"]["values"] == [1, 10]
    assert cfg["parameters"]["seed_everything"]["values"] == [0, 1, 2]  # as shipped
    assert cfg["parameters"]["model.lr"]["values"] == [0.001, 0.01]
    assert "configs/model/efficientnet_lite0.yaml" in cfg["command"]


def test_without_fashion_mnist_the_demo_says_so_once_and_runs_mnist5k(tmp_path, monkeypatch, capsys):
    ran = []
    monkeypatch.setattr(demo, "DATA_ROOT", str(tmp_path / "nothing"))  # and conftest: no system copy
    monkeypatch.setattr(demo.sweep, "main", lambda argv: ran.append(argv) or 0)
    monkeypatch.setattr(demo.report, "main", lambda argv: ran.append(argv) or 0)
    assert demo.main(["--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert err.count("running on MNIST-5k instead") == 1
    assert [a[0].rsplit("/", 1)[-1] for a in ran[:2]] == ["real_mnist5k_demo.yaml", "real_mnist5k_cnn_demo.yaml"]
    assert ran[2] == [str(tmp_path / "out" / "mnist5k")]  # one report over both sweeps


def test_fashion_mnist_availability_is_a_line_not_an_exception(tmp_path):
    why = demo.fashion_mnist_available(str(tmp_path / "nothing"))  # conftest: no system copy
    assert "apt-get install dataset-fashion-mnist" in why and "\n" not in why
