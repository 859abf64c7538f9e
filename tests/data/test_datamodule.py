"""DomainPairDataModule on the embedded digits, and InMemoryLoader: splits, shots, determinism, loaders."""

from types import SimpleNamespace

import lightning as L
import pytest
import torch
from sklearn.datasets import load_digits

from lit_transfer.data import DomainPairDataModule, DomainSpec, InMemoryLoader, list_domains

SHIFT = [{"name": "rotate", "degrees": 90}, {"name": "invert"}]


def make_dm(**kwargs):
    kwargs.setdefault("target", DomainSpec(shifts=SHIFT))
    return DomainPairDataModule(**kwargs)


@pytest.fixture(scope="module")
def dm():
    dm = make_dm(target_shots=5)
    dm.setup("fit")
    return dm


def as_set(t):
    return set(t.tolist())


# --- splits ------------------------------------------------------------------------------------------------


def test_splits_are_deterministic_and_follow_split_seed(dm):
    again = make_dm(target_shots=5)
    for role, splits in dm.split_indices().items():
        for split, idx in splits.items():
            assert torch.equal(idx, again.split_indices()[role][split])
    assert dm.split_hash() == again.split_hash()
    other_seed = make_dm(target_shots=5, split_seed=1)
    assert not torch.equal(other_seed.split_indices()["target"]["test"], dm.split_indices()["target"]["test"])
    assert other_seed.split_hash() != dm.split_hash()


@pytest.mark.parametrize(
    "change",
    [{"target_shots": 10}, {"target": DomainSpec(shifts=[{"name": "invert"}])},
     {"target": DomainSpec(shifts=SHIFT, label_map={i: i % 5 for i in range(10)})}],
)
def test_split_hash_covers_shots_and_domain_specs(dm, change):
    assert make_dm(**{"target_shots": 5, **change}).split_hash() != dm.split_hash()


def test_split_hash_does_not_depend_on_train_on_or_storage(dm):
    assert make_dm(target_shots=5, train_on="source").split_hash() == dm.split_hash()
    moved = make_dm(target=DomainSpec(shifts=SHIFT, root="/elsewhere", download=False), target_shots=5)
    assert moved.split_hash() == dm.split_hash()


def test_train_val_test_are_disjoint_and_stratified(dm):
    full = make_dm()
    for role, splits in full.split_indices().items():
        train, val, test = (as_set(splits[s]) for s in ("train", "val", "test"))
        assert not (train & val or train & test or val & test)
        assert len(train | val | test) == 1797  # digits: every image is in exactly one split
        labels = full.subset(role, "test")[1]
        assert labels.bincount().min() >= 0.15 * 180  # ~20% of each class (about 180 per class)
    assert as_set(dm.split_indices()["target"]["train"]) <= as_set(full.split_indices()["target"]["train"])


def test_shots_are_exact_per_class_and_nested():
    five, twenty = make_dm(target_shots=5), make_dm(target_shots=20)
    assert torch.equal(five.subset("target", "train")[1].bincount(), torch.full((10,), 5))
    assert torch.equal(twenty.subset("target", "train")[1].bincount(), torch.full((10,), 20))
    assert as_set(five.split_indices()["target"]["train"]) < as_set(twenty.split_indices()["target"]["train"])
    # shots never touch test, and the source keeps all its training data
    assert torch.equal(five.split_indices()["target"]["test"], twenty.split_indices()["target"]["test"])
    assert len(five.split_indices()["source"]["train"]) == len(make_dm().split_indices()["source"]["train"])


def test_validation_labels_are_capped_at_the_shots_and_counted():
    full_val = make_dm(val_shots=None).split_indices()["target"]["val"]
    five = make_dm(target_shots=5)  # val_shots "auto": as many val labels per class as training labels
    val = five.split_indices()["target"]["val"]
    assert torch.equal(five.subset("target", "val")[1].bincount(), torch.full((10,), 5))
    assert as_set(val) < as_set(full_val)
    assert five.labelled_counts() == {"target_train": 50, "target_val": 50}
    # auto with more shots than a class's val split has: all of that class, never an error
    big = make_dm(target_shots=30)
    per_class = big.subset("target", "val")[1].bincount()
    assert per_class.max() <= 30 and int(per_class.sum()) == len(full_val)
    # explicit values: exactly that many, or a one-line error naming the key and the fix
    assert make_dm(target_shots=5, val_shots=2).labelled_counts() == {"target_train": 50, "target_val": 20}
    with pytest.raises(ValueError, match=r"val_shots=40 but class 0 of the target val split has only \d+ "
                                         r"validation examples; lower val_shots or use null for all\."):
        make_dm(target_shots=5, val_shots=40).split_indices()
    # no target labels trained on (the source stage): only the val labels count
    assert make_dm(train_on="source").labelled_counts() == {"target_train": 0, "target_val": len(full_val)}
    with pytest.raises(ValueError, match="data.val_shots"):
        make_dm(val_shots="all")


def test_shots_seed_redraws_the_labelled_examples_but_not_the_partition():
    a, b = make_dm(target_shots=5, shots_seed=0), make_dm(target_shots=5, shots_seed=1)
    ia, ib = a.split_indices()["target"], b.split_indices()["target"]
    assert not torch.equal(ia["train"], ib["train"]) and not torch.equal(ia["val"], ib["val"])
    assert torch.equal(ia["test"], ib["test"])  # every seed is tested on the same images
    assert a.split_hash() != b.split_hash()
    # paired: the same shots seed gives the same examples (and split hash) whatever else the run does
    assert make_dm(target_shots=5, shots_seed=1, batch_size=7).split_hash() == b.split_hash()
    # and by default the shots follow split_seed, as before
    assert make_dm(target_shots=5).split_hash() == a.split_hash()


def test_source_shots():
    dm = make_dm(source_shots=3, train_on="source")
    assert torch.equal(dm.subset("source", "train")[1].bincount(), torch.full((10,), 3))


def test_same_dataset_shares_splits_so_target_is_the_shifted_source(dm):
    # digits → rotated+inverted digits: the same images in the same splits, so no target test image was a
    # source training image
    src_idx, tgt_idx = dm.split_indices()["source"], dm.split_indices()["target"]
    assert torch.equal(src_idx["test"], tgt_idx["test"])
    src, tgt = dm.subset("source", "test")[0], dm.subset("target", "test")[0]
    assert torch.equal(tgt, 255 - torch.rot90(src, 1, (2, 3)))


def test_too_many_shots_names_class_and_fix():
    dm = make_dm(target_shots=500)
    with pytest.raises(ValueError, match=r"target_shots=500 but class 0 of the target domain has only \d+ training "
                                         r"examples; lower target_shots or use null for all\.") as err:
        dm.setup("fit")
    assert "\n" not in str(err.value)


# --- properties and dataloaders ---------------------------------------------------------------------------


def test_properties_are_known_before_loading():
    dm = make_dm(target=DomainSpec(shifts=SHIFT, channels=3))
    assert (dm.num_classes, dm.in_chans, dm.source_num_classes, dm.target_num_classes) == (10, 3, 10, 10)
    assert dm.val_domains == ["target"]  # the source has 1 channel: a 3-channel model cannot evaluate it
    assert not dm._subsets  # nothing was loaded
    assert "digits" in list_domains()


def test_dataloaders_names_and_dtypes(dm):
    assert (dm.num_classes, dm.in_chans) == (10, 1)
    assert dm.val_domains == dm.test_domains == ["target", "source"]
    for loaders, split in ((dm.val_dataloader(), "val"), (dm.test_dataloader(), "test")):
        assert len(loaders) == 2
        for loader, role in zip(loaders, dm.val_domains):
            images, labels = next(iter(loader))
            assert images.dtype == torch.uint8 and labels.dtype == torch.int64
            assert images.shape[1:] == (1, 8, 8)
            assert torch.equal(images, dm.subset(role, split)[0][: len(images)])
    images, labels = next(iter(dm.train_dataloader()))
    assert images.dtype == torch.uint8 and images.shape == (50, 1, 8, 8)  # 5 shots × 10 classes, one batch
    assert torch.equal(torch.cat([b[1] for b in dm.predict_dataloader()]), dm.subset("target", "test")[1])


def test_train_on_switches_the_training_domain():
    dm = make_dm(target_shots=5, train_on="source")
    dm.setup("fit")
    assert dm.val_domains == ["source", "target"]
    loader = dm.train_dataloader()
    assert len(loader.labels) == len(dm.split_indices()["source"]["train"]) and loader.drop_last
    assert torch.equal(loader.images, dm.subset("source", "train")[0])


def test_label_map_drops_and_remaps_classes():
    dm = make_dm(target=DomainSpec(label_map={1: 0, 7: 1}), target_shots=4)
    assert dm.num_classes == 2 and dm.val_domains == ["target"]
    labels = dm.subset("target", "test")[1]
    original = torch.from_numpy(load_digits().target)[dm.split_indices()["target"]["test"]]
    assert as_set(original) == {1, 7}  # split indices refer to the original dataset
    assert torch.equal(labels, (original == 7).long())
    assert torch.equal(dm.subset("target", "train")[1].bincount(), torch.full((2,), 4))


def test_bad_arguments_are_one_line_errors():
    with pytest.raises(ValueError, match=r"Unknown domain 'mnsit'\. Did you mean 'mnist'.*Known: .*digits"):
        DomainPairDataModule(source=DomainSpec(name="mnsit"))
    with pytest.raises(ValueError, match="Unknown shift 'invrt'"):
        DomainPairDataModule(target={"shifts": [{"name": "invrt"}]})
    with pytest.raises(ValueError, match="train_on must be"):
        DomainPairDataModule(train_on="both")
    with pytest.raises(ValueError, match="Unknown augment keys"):
        DomainPairDataModule(augment={"vflip": True})


def test_augment_is_seeded_by_step_and_only_in_training():
    dm = make_dm(augment={"hflip": True, "crop_padding": 1})
    batch = dm.subset("target", "test")
    dm.trainer = SimpleNamespace(training=True, global_step=3, global_rank=0)
    a, b = dm.on_after_batch_transfer(batch, 0)[0], dm.on_after_batch_transfer(batch, 0)[0]
    assert torch.equal(a, b) and a.dtype == torch.uint8 and not torch.equal(a, batch[0])
    dm.trainer.global_step = 4
    assert not torch.equal(dm.on_after_batch_transfer(batch, 0)[0], a)
    dm.trainer.training = False
    assert dm.on_after_batch_transfer(batch, 0)[0] is batch[0]

    flip_only = make_dm(augment={"hflip": True})
    flip_only.trainer = SimpleNamespace(training=True, global_step=0, global_rank=0)
    out = flip_only.on_after_batch_transfer(batch, 0)[0]
    flipped = (out == batch[0].flip(-1)).flatten(1).all(1)
    assert ((out == batch[0]).flatten(1).all(1) | flipped).all() and 0 < flipped.float().mean() < 1


class _Probe(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(64, 10)
        self.val_batches = {0: 0, 1: 0}

    def training_step(self, batch, _):
        x, y = batch
        return torch.nn.functional.cross_entropy(self.net(x.float().flatten(1) / 255), y)

    def validation_step(self, batch, _, dataloader_idx=0):
        self.val_batches[dataloader_idx] += 1

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_fits_under_lightning_and_sets_epochs():
    L.seed_everything(7, verbose=False)
    dm, model = make_dm(batch_size=256), _Probe()
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=dm)
    assert dm.seed == 7 and trainer.global_step == 2 * 4  # 1259 train images, 4 full batches of 256
    assert trainer.train_dataloader.sampler.epoch == 1
    assert model.val_batches[0] > 0 and model.val_batches[1] > 0


# --- InMemoryLoader ---------------------------------------------------------------------------------------


def ids(loader):
    return torch.cat([labels for _, labels in loader])


def make_loader(n=23, **kwargs):
    return InMemoryLoader(torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1), torch.arange(n), **kwargs)


def test_loader_shuffles_per_epoch_reproducibly():
    loader = make_loader(batch_size=5, shuffle=True, seed=3)
    first = ids(loader)
    assert as_set(first) == set(range(23)) and torch.equal(first, ids(loader))
    loader.sampler.set_epoch(1)
    second = ids(loader)
    assert not torch.equal(first, second)
    resumed = make_loader(batch_size=5, shuffle=True, seed=3)
    resumed.sampler.set_epoch(1)
    assert torch.equal(ids(resumed), second)  # a resumed run sees the same batches
    assert not torch.equal(ids(make_loader(batch_size=5, shuffle=True, seed=4)), first)


def test_loader_batches_and_lengths():
    loader = make_loader(batch_size=5, shuffle=False)
    assert len(loader) == 5 and torch.equal(ids(loader), torch.arange(23))
    images, labels = next(iter(loader))
    assert torch.equal(images.flatten(), labels.to(torch.uint8))
    dropped = make_loader(batch_size=5, shuffle=True, drop_last=True)
    assert len(dropped) == 4 and all(len(y) == 5 for _, y in dropped)


@pytest.mark.parametrize("shuffle", [True, False])
def test_loader_ddp_shards_cover_everything_with_equal_lengths(shuffle):
    ranks = [make_loader(batch_size=4, shuffle=shuffle, seed=1, rank=r, world_size=3) for r in range(3)]
    for r in ranks:
        r.sampler.set_epoch(2)
    shards = [ids(r) for r in ranks]
    assert len({len(r) for r in ranks}) == 1 and {len(s) for s in shards} == {8}  # ceil(23 / 3)
    assert as_set(torch.cat(shards)) == set(range(23))
    assert sum(len(s) for s in shards) - 23 == 1  # only the padding repeats


def test_label_map_values_must_be_contiguous():
    with pytest.raises(ValueError, match=r"label_map values must be 0..k-1 without gaps, got \[0, 2\]"):
        DomainPairDataModule(target=DomainSpec(label_map={1: 0, 7: 2}))
