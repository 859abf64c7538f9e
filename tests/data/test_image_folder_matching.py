"""Issue 20, defects 2 and 3: image-folder classes matched by name, channels and sizes decided from every file.

Each test writes real PNG/JPEG ImageFolder trees; a class's images carry its own pixel value, so a label that
moved to another class shows up as a wrong (image, label) pair."""

import numpy as np
import pytest
import torch
from PIL import Image

from lit_transfer.data import DomainPairDataModule, DomainSpec
from lit_transfer.data.domains import load_domain
from lit_transfer.errors import TransferConfigError

VALUE = {"0": 10, "1": 60, "2": 110, "3": 160}  # pixel value of each class's images, by source class name


def write_folder(root, classes, per_class=8, size=8, mode="L", values=None, ext="png"):
    """``root/<class>/<i>.<ext>``: class ``c``'s images are uniform at ``values[c]`` (default: VALUE)."""
    values = values or VALUE
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            value = values[name]
            array = np.full((size, size) if mode == "L" else (size, size, 3), value, np.uint8)
            Image.fromarray(array, mode).save(root / name / f"{i}.{ext}")


def folder(root, **kw):
    return DomainSpec(name="image_folder", root=str(root), download=False, **kw)


def pair(source, target, **kw):
    kw.setdefault("val_fraction", 0.25)
    kw.setdefault("test_fraction", 0.25)
    return DomainPairDataModule(source=source, target=target, **kw)


def assert_labels_follow_names(dm, role, names):
    """Every image of ``role`` carries the label of the class its pixel value belongs to."""
    for split in ("train", "val", "test"):
        images, labels = dm.subset(role, split)
        for image, label in zip(images, labels):
            assert int(image.flatten()[0]) == VALUE[names[int(label)]], (role, split)


# --- defect 2: classes are data ----------------------------------------------------------------------------


def test_renamed_target_classes_without_label_map_are_one_line_naming_both_lists(tmp_path):
    write_folder(tmp_path / "src", ["0", "1", "2"])
    words = {"zero": 10, "one": 60, "two": 110}
    write_folder(tmp_path / "tgt", list(words), values=words)
    dm = pair(folder(tmp_path / "src"), folder(tmp_path / "tgt"))
    with pytest.raises(TransferConfigError) as err:
        dm.num_classes
    msg = str(err.value)
    assert "\n" not in msg
    assert "['0', '1', '2']" in msg and "['one', 'two', 'zero']" in msg and "label_map" in msg


def test_label_map_renames_match_target_folders_to_source_classes(tmp_path):
    write_folder(tmp_path / "src", ["0", "1", "2"])
    words = {"zero": 10, "one": 60, "two": 110}  # sorted: one, two, zero: positions would mislabel every class
    write_folder(tmp_path / "tgt", list(words), values=words)
    dm = pair(folder(tmp_path / "src"), folder(tmp_path / "tgt", label_map={"zero": "0", "one": "1", "two": "2"}))
    assert dm.class_names == ["0", "1", "2"] and dm.num_classes == 3 and dm.missing_classes == {}
    assert_labels_follow_names(dm, "target", dm.class_names)
    assert_labels_follow_names(dm, "source", dm.class_names)
    assert dm.val_domains == ["target", "source"]


def test_target_missing_a_class_keeps_every_index_and_is_evaluated_on_the_classes_it_has(tmp_path, capfd):
    write_folder(tmp_path / "src", ["0", "1", "2", "3"])
    write_folder(tmp_path / "tgt", ["0", "1", "3"])  # no "2": "3" must keep label 3, not move to 2
    dm = pair(folder(tmp_path / "src"), folder(tmp_path / "tgt"), target_shots=2)
    assert dm.num_classes == 4 and dm.missing_classes == {"target": ["2"]}
    assert dm.test_domains == ["target", "source"]  # the target is still tested, with the shared head
    dm.setup("fit")
    assert_labels_follow_names(dm, "target", dm.class_names)
    assert sorted(set(dm.subset("target", "train")[1].tolist())) == [0, 1, 3]
    assert "data.target has 3 of the 4 classes (no images of ['2']): it is evaluated on the classes it has" \
        in capfd.readouterr().err


def test_empty_class_folder_is_an_error_not_a_shift(tmp_path):
    write_folder(tmp_path, ["0", "2", "3"])
    (tmp_path / "1").mkdir()  # empty: dropping it would move "2" and "3" down one label
    with pytest.raises(TransferConfigError) as err:
        load_domain(folder(tmp_path), 0)
    assert "class folder(s) ['1']" in str(err.value) and "have no images" in str(err.value)
    assert "\n" not in str(err.value)


def test_split_folder_missing_a_class_is_an_error(tmp_path):
    write_folder(tmp_path / "train", ["0", "1", "2"])
    write_folder(tmp_path / "test", ["0", "1"])
    with pytest.raises(TransferConfigError) as err:
        load_domain(folder(tmp_path), 0)
    assert "has no images of class(es) ['2']" in str(err.value) and "\n" not in str(err.value)


def test_hidden_folders_are_not_classes(tmp_path):
    write_folder(tmp_path, ["0", "1"])
    (tmp_path / ".ipynb_checkpoints").mkdir()
    assert pair(folder(tmp_path), folder(tmp_path)).class_names == ["0", "1"]


# --- defect 3: modes and sizes decided, not guessed --------------------------------------------------------


def test_one_rgb_file_does_not_make_a_grayscale_folder_rgb(tmp_path):
    write_folder(tmp_path, ["0", "1"], per_class=6)
    Image.fromarray(np.full((8, 8, 3), 10, np.uint8), "RGB").save(tmp_path / "0" / "0.png")  # first file, RGB
    spec = folder(tmp_path)
    dm = pair(spec, spec)
    assert dm.in_chans == 1
    domain = load_domain(spec, 0)
    assert domain.images.shape[1] == 1 and domain.converted == 1


def test_declared_channels_convert_every_other_file_and_are_counted(tmp_path):
    write_folder(tmp_path, ["0", "1"], per_class=4, ext="jpg")
    domain = load_domain(folder(tmp_path, channels=3), 0)
    assert domain.images.shape[1] == 3 and domain.converted == 8


def test_grayscale_source_with_rgb_target_is_one_line(tmp_path):
    write_folder(tmp_path / "src", ["0", "1"])
    write_folder(tmp_path / "tgt", ["0", "1"], mode="RGB", ext="jpg")
    dm = pair(folder(tmp_path / "src"), folder(tmp_path / "tgt"))
    with pytest.raises(TransferConfigError) as err:
        dm.setup("fit")
    assert "grayscale (1 channel)" in str(err.value) and "RGB (3 channels)" in str(err.value)
    assert "data.source.channels=3 and data.target.channels=3" in str(err.value)
    ok = pair(folder(tmp_path / "src", channels=3), folder(tmp_path / "tgt", channels=3))
    ok.setup("fit")
    assert ok.in_chans == 3 and ok.converted == {"source": 16}


def test_source_and_target_sizes_differ_without_image_size(tmp_path):
    write_folder(tmp_path / "src", ["0", "1"], size=8)
    write_folder(tmp_path / "tgt", ["0", "1"], size=28)
    with pytest.raises(TransferConfigError) as err:
        pair(folder(tmp_path / "src"), folder(tmp_path / "tgt")).setup("fit")
    assert "8x8" in str(err.value) and "28x28" in str(err.value)
    assert "data.source.image_size=28 and data.target.image_size=28" in str(err.value)
    ok = pair(folder(tmp_path / "src", image_size=28), folder(tmp_path / "tgt", image_size=28))
    ok.setup("fit")
    assert ok.subset("source", "train")[0].shape[-2:] == torch.Size([28, 28])


def test_label_maps_survive_the_saved_config_round_trip():
    """A run's config.yaml is re-read by test/predict: renames stay names ({zero: "0"}, not {zero: 0}) and
    index maps stay indices."""
    from jsonargparse import ArgumentParser

    from lit_transfer.data.domains import DomainSpec

    parser = ArgumentParser()
    parser.add_argument("--d", type=DomainSpec)
    for label_map in ({"zero": "0", "one": "1"}, {0: 1, 3: 2}):
        cfg = parser.parse_object({"d": {"name": "image_folder", "label_map": label_map}})
        again = parser.parse_string(parser.dump(cfg))
        assert again.d.label_map == label_map == cfg.d.label_map
