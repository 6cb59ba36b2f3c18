"""MindCV users' own scripts, run against this package: MindCV's quick-start and fine-tuning tutorials (pointed at
the shipped digits, datasets/mnist5k, and a tiny ConvNeXt, nothing else changed), the transform lists users edit,
their own MindSpore datasets, and MindCV's other public names (mindcv.utils, the registry, feature extraction)."""
import os

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn
from mindspore.dataset import GeneratorDataset, vision
from mindspore.train import CheckpointConfig, LossMonitor, Model, ModelCheckpoint, TimeMonitor

import mindcv
from conftest import DEMO_DATA, MINI
from mindcv.data import create_dataset, create_loader, create_transforms
from mindcv.loss import create_loss
from mindcv.models import FeatureExtractWrapper, create_model
from mindcv.optim import create_optimizer
from mindcv.scheduler import create_scheduler

TINY = {k: v for k, v in MINI.items() if k != "num_classes"}  # the tutorials pass num_classes themselves


@pytest.fixture(scope="module", autouse=True)
def graph_mode():
    ms.set_context(mode=ms.GRAPH_MODE)


def parameters(network):
    return {p.name: p.asnumpy().copy() for p in network.get_parameters()}


# ---------------------------------------------------------------- MindCV's tutorials

def test_quick_start_tutorial(tmp_path):
    num_classes = 10
    num_workers = 2
    dataset_train = create_dataset(name="", root=DEMO_DATA, split="train", shuffle=True,
                                   num_parallel_workers=num_workers, num_samples=32)
    trans = create_transforms(dataset_name="", image_resize=32)
    loader_train = create_loader(dataset=dataset_train, batch_size=8, is_training=True, num_classes=num_classes,
                                 transform=trans, num_parallel_workers=num_workers)
    num_batches = loader_train.get_dataset_size()
    network = create_model(model_name="convnext_tiny", num_classes=num_classes, pretrained=False, **TINY)
    loss = create_loss(name="CE")
    lr_scheduler = create_scheduler(steps_per_epoch=num_batches, scheduler="constant", lr=0.0001)
    opt = create_optimizer(network.trainable_params(), opt="adam", lr=lr_scheduler)
    model = Model(network, loss_fn=loss, optimizer=opt, metrics={"accuracy"})
    ckpt_config = CheckpointConfig(save_checkpoint_steps=num_batches)
    ckpt_cb = ModelCheckpoint(prefix="convnext-digits", directory=str(tmp_path), config=ckpt_config)
    model.train(2, loader_train, callbacks=[LossMonitor(num_batches // 2), TimeMonitor(num_batches // 2), ckpt_cb],
                dataset_sink_mode=False)

    dataset_val = create_dataset(name="", root=DEMO_DATA, split="val", shuffle=True,
                                 num_parallel_workers=num_workers, num_samples=16)
    loader_val = create_loader(dataset=dataset_val, batch_size=8, is_training=False, num_classes=num_classes,
                               transform=trans, num_parallel_workers=num_workers)
    acc = model.eval(loader_val, dataset_sink_mode=False)

    assert num_batches == 4 and 0.0 <= acc["accuracy"] <= 1.0
    assert int(opt.global_step.asnumpy()[0]) == 8  # two epochs of per-step learning rates
    # the checkpoint of the last epoch holds the trained weights: a fresh network predicts as the model does
    images, _ = next(loader_val.create_tuple_iterator())
    fresh = create_model(model_name="convnext_tiny", num_classes=num_classes, **TINY)
    ms.load_param_into_net(fresh, ms.load_checkpoint(str(tmp_path / "convnext-digits-2_4.ckpt")))
    np.testing.assert_allclose(fresh(images).asnumpy(), model.predict(images).asnumpy(), rtol=1e-4, atol=1e-5)


def test_finetune_tutorial():
    num_workers = 2
    data_dir = DEMO_DATA
    dataset_train = create_dataset(root=data_dir, split="train", num_parallel_workers=num_workers, num_samples=32)
    dataset_val = create_dataset(root=data_dir, split="val", num_parallel_workers=num_workers, num_samples=16)
    trans_train = create_transforms(dataset_name="ImageNet", is_training=True, image_resize=32)
    trans_val = create_transforms(dataset_name="ImageNet", is_training=False, image_resize=32)
    loader_train = create_loader(dataset=dataset_train, batch_size=8, is_training=True, num_classes=10,
                                 transform=trans_train, num_parallel_workers=num_workers)
    loader_val = create_loader(dataset=dataset_val, batch_size=8, is_training=True, num_classes=10,
                               transform=trans_val, num_parallel_workers=num_workers)
    images, labels = next(loader_train.create_tuple_iterator())
    assert images.shape == (8, 3, 32, 32) and labels.dtype == ms.int32

    # 1. the whole model
    network = create_model(model_name="convnext_tiny", num_classes=10, pretrained=False, **TINY)
    opt = create_optimizer(network.trainable_params(), opt="adam", lr=1e-4)
    loss = create_loss(name="CE")
    model = Model(network, loss_fn=loss, optimizer=opt, metrics={"accuracy"})
    model.train(1, loader_train, callbacks=[LossMonitor(5), TimeMonitor(5)], dataset_sink_mode=False)
    res = model.eval(loader_val)
    images, labels = next(loader_val.create_tuple_iterator())
    output = model.predict(images)
    pred = np.argmax(output.asnumpy(), axis=1)
    assert 0.0 <= res["accuracy"] <= 1.0 and pred.shape == (8,)

    # 2. the backbone frozen, only the classifier trained
    for param in network.get_parameters():
        if param.name not in ["classifier.weight", "classifier.bias"]:
            param.requires_grad = False
    dataset_train = create_dataset(root=data_dir, split="train", num_parallel_workers=num_workers, num_samples=32)
    loader_train = create_loader(dataset=dataset_train, batch_size=8, is_training=True, num_classes=10,
                                 transform=trans_train, num_parallel_workers=num_workers)
    opt = create_optimizer(network.trainable_params(), opt="adam", lr=1e-3)
    model = Model(network, loss_fn=loss, optimizer=opt, metrics={"accuracy"})
    before = parameters(network)
    model.train(1, loader_train, callbacks=[LossMonitor(5), TimeMonitor(5)], dataset_sink_mode=False)
    after = parameters(network)
    changed = {name for name in before if not np.array_equal(before[name], after[name])}
    assert changed == {"classifier.weight", "classifier.bias"}

    # 3. per-group learning rates in the network's order: a backbone at lr 0 does not move, the head does
    for param in network.get_parameters():
        param.requires_grad = True
    head = [p for p in network.trainable_params() if p.name.startswith("classifier.")]
    backbone = [p for p in network.trainable_params() if not p.name.startswith("classifier.")]
    groups = [{"params": backbone, "lr": 0.0}, {"params": head, "lr": 1e-3},
              {"order_params": network.trainable_params()}]
    loader_train = create_loader(dataset=create_dataset(root=data_dir, split="train", num_samples=32), batch_size=8,
                                 is_training=True, num_classes=10, transform=trans_train)  # a new Model, a new loader
    model = Model(network, loss_fn=loss, optimizer=create_optimizer(groups, opt="adamw", lr=1e-3),
                  metrics={"accuracy"})
    model.train(1, loader_train, callbacks=[LossMonitor(5)], dataset_sink_mode=False)
    final = parameters(network)
    assert {name for name in after if not np.array_equal(after[name], final[name])} == \
        {"classifier.weight", "classifier.bias"}


# ---------------------------------------------------------------- transform lists users edit

def loader_images(transform, is_training=True, seed=5, shuffle=True):
    dataset = create_dataset(root=DEMO_DATA, split="train", num_samples=8, seed=3, shuffle=shuffle)
    loader = create_loader(dataset, 4, drop_remainder=True, is_training=is_training, transform=transform,
                           num_parallel_workers=2, seed=seed)
    return np.concatenate([images for images, _ in loader.create_tuple_iterator(num_epochs=1, output_numpy=True)])


def test_transform_list_is_a_list_users_edit():
    made = create_transforms("", 32, True, re_prob=0.5)
    assert isinstance(made, list)
    assert [type(op).__name__ for op in made] == ["RandomResizedCropDecode", "RandomHorizontalFlip",
                                                  "RandomVerticalFlip", "ColorJitter", "Normalize", "RandomErasing"]
    fused = loader_images(made)
    # the same operations applied one by one give the fused fast path's images exactly
    np.testing.assert_array_equal(loader_images(list(made)), fused)
    # a MindSpore operation inserted before Normalize (MindCV users' edit) acts on every image, the rest unchanged
    flipped = create_transforms("", 32, True, re_prob=0.5)
    flipped.insert(flipped.index(flipped[-2]), vision.RandomVerticalFlip(prob=1.0))
    reference = create_transforms("", 32, True, re_prob=0.0)
    reference_flipped = create_transforms("", 32, True, re_prob=0.0)
    reference_flipped.insert(len(reference_flipped) - 1, vision.RandomVerticalFlip(prob=1.0))
    np.testing.assert_array_equal(loader_images(reference_flipped), loader_images(reference)[:, :, ::-1, :])
    assert loader_images(flipped).shape == fused.shape
    # a Python function that takes the generator draws reproducibly per sample
    noisy = create_transforms("", 32, True)
    noisy.append(lambda image, rng: image + rng.standard_normal(image.shape).astype(np.float32))
    np.testing.assert_array_equal(loader_images(noisy), loader_images(noisy))
    assert not np.array_equal(loader_images(noisy), loader_images(noisy, seed=6))


def test_mindspore_operations_list():
    mean, std = [127.5] * 3, [127.5] * 3
    operations = [vision.Decode(), vision.Resize((16, 16)), vision.Normalize(mean=mean, std=std), vision.HWC2CHW()]
    images = loader_images(operations, is_training=False, shuffle=False)
    assert images.shape == (8, 3, 16, 16) and images.dtype == np.float32
    first = os.path.join(DEMO_DATA, "train", "0", sorted(os.listdir(os.path.join(DEMO_DATA, "train", "0")))[0])
    expected = np.fromfile(first, np.uint8)
    for operation in operations:
        expected = operation(expected)
    np.testing.assert_allclose(images[0], expected, atol=1e-6)
    # one MindSpore operation alone, not in a list, is applied the same way
    assert loader_images(vision.Decode(), is_training=False).shape == (8, 28, 28, 3)


# ---------------------------------------------------------------- datasets

def test_create_dataset_answers_the_mindspore_dataset_api():
    def dataset():
        return create_dataset(root=DEMO_DATA, split="val", num_samples=12, shuffle=False)
    assert dataset().get_dataset_size() == 12 and dataset().get_col_names() == ["image", "label"]
    record = next(dataset().create_dict_iterator(num_epochs=1, output_numpy=True))
    assert record["image"].dtype == np.uint8 and record["image"].ndim == 1 and record["label"].dtype == np.int32
    batched = dataset().map(operations=[vision.Decode(), vision.Resize((8, 8)), vision.HWC2CHW()],
                            input_columns="image").batch(4)
    images, labels = next(batched.create_tuple_iterator(num_epochs=1, output_numpy=True))
    assert images.shape == (4, 3, 8, 8) and labels.shape == (4,) and batched.get_dataset_size() == 3
    assert dataset().shuffle(4).get_dataset_size() == 12
    first, second = dataset().split([0.5, 0.5], randomize=False)
    assert (first.get_dataset_size(), second.get_dataset_size()) == (6, 6)
    # a piece of a split is a MindSpore dataset like any other: create_loader takes it
    images, labels = next(create_loader(first, 3, transform=create_transforms("", 16)).create_tuple_iterator(
        num_epochs=1, output_numpy=True))
    assert images.shape == (3, 3, 16, 16) and labels.dtype == np.int32


class DigitFiles:
    """A user's own dataset, as in MindCV's custom-dataset guide: (encoded image bytes, label) by index."""

    def __init__(self, root, per_class=2):
        self.samples = [(os.path.join(root, label, name), int(label)) for label in sorted(os.listdir(root))
                        for name in sorted(os.listdir(os.path.join(root, label)))[:per_class]]

    def __getitem__(self, index):
        path, label = self.samples[index]
        return np.fromfile(path, np.uint8), np.int64(label)

    def __len__(self):
        return len(self.samples)


def test_user_generator_dataset_goes_through_create_loader():
    def dataset():
        return GeneratorDataset(DigitFiles(os.path.join(DEMO_DATA, "train")), column_names=["image", "label"],
                                shuffle=False)
    loader = create_loader(dataset(), 4, drop_remainder=True, is_training=False, num_classes=10,
                           transform=create_transforms("", 16))
    batches = list(loader.create_tuple_iterator(num_epochs=1, output_numpy=True))
    assert len(batches) == 5 and loader.get_dataset_size() == 5
    images, labels = batches[0]
    assert images.shape == (4, 3, 16, 16) and images.dtype == np.float32
    assert labels.tolist() == [0, 0, 1, 1] and labels.dtype == np.int32
    np.testing.assert_allclose(images[0], create_transforms("", 16)(np.fromfile(DigitFiles(
        os.path.join(DEMO_DATA, "train")).samples[0][0], np.uint8)), atol=1e-6)
    mixed = create_loader(dataset(), 4, drop_remainder=True, is_training=True, mixup=0.8, num_classes=10,
                          transform=create_transforms("", 16, True))
    images, targets = next(mixed.create_tuple_iterator(num_epochs=1, output_numpy=True))
    assert images.shape == (4, 3, 16, 16) and targets.shape == (4, 10)
    np.testing.assert_allclose(targets.sum(1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="create_dataset"):
        create_loader(dataset(), 4, start_epoch=1)


# ---------------------------------------------------------------- MindCV's other public names

def test_mindcv_public_names():
    assert mindcv.list_modules() == ["convnext"] and mindcv.models.list_modules() == ["convnext"]
    assert mindcv.models.is_model_in_modules("convnext_tiny", ["convnext"])
    assert not mindcv.models.is_model_in_modules("convnext_tiny", ("resnet",))
    assert mindcv.models.is_model_pretrained("convnext_tiny")
    assert mindcv.models.model_entrypoint("convnext_tiny") is mindcv.models.registry._model_entrypoints["convnext_tiny"]
    assert mindcv.create_loader is create_loader and mindcv.create_optimizer is create_optimizer
    # MindCV's fine-tuning scripts find the classifier to leave out or train alone by the registry's cfg
    cfg = mindcv.models.registry._model_pretrained_cfgs["convnext_tiny"]
    assert cfg["classifier"] == "classifier" and cfg["url"].endswith(".ckpt")
    from mindcv.utils import AllReduceSum, CheckpointManager, set_seed  # noqa: F401 (MindCV's imports)
    from mindcv.utils.download import DownLoad  # noqa: F401 (the fine-tuning tutorial's)
    set_seed(7)
    first = np.random.random(3)
    set_seed(7)
    assert np.array_equal(first, np.random.random(3))
    set_seed(7, rank=1)
    assert not np.array_equal(first, np.random.random(3))
    # a MindCV name that is not offered: one line saying what to use, not an ImportError
    with pytest.raises(NotImplementedError, match="use train.py"):
        from mindcv.utils import StateMonitor  # noqa: F401


def test_checkpoint_manager_keeps_by_policy(tmp_path):
    from mindcv.utils import CheckpointManager
    network = nn.Dense(2, 2)
    (tmp_path / "notes.txt").write_text("the user's")
    manager = CheckpointManager(ckpt_save_policy="top_k")
    for epoch, accuracy in enumerate([0.5, 0.9, 0.7, 0.6], start=1):
        kept = manager.save_ckpoint(network, num_ckpt=2, metric=Tensor(accuracy),
                                    save_path=str(tmp_path / f"dense-{epoch}_10.ckpt"))
    # the two best and the newest (a resume needs it), best first
    assert [(os.path.basename(path), round(score, 3)) for path, score in kept] == [
        ("dense-2_10.ckpt", 0.9), ("dense-3_10.ckpt", 0.7), ("dense-4_10.ckpt", 0.6)]
    assert {"dense-2_10.ckpt", "dense-3_10.ckpt", "dense-4_10.ckpt", "notes.txt"} <= set(os.listdir(tmp_path))
    assert "dense-1_10.ckpt" not in os.listdir(tmp_path)
    ms.load_param_into_net(nn.Dense(2, 2), ms.load_checkpoint(str(tmp_path / "dense-4_10.ckpt")))

    latest = CheckpointManager(ckpt_save_policy="latest_k")
    for epoch in range(1, 4):
        kept = latest.save_ckpoint(network, num_ckpt=2, save_path=str(tmp_path / "latest" / f"dense-{epoch}_5.ckpt"))
    assert [os.path.basename(path) for path in kept] == ["dense-2_5.ckpt", "dense-3_5.ckpt"]
    with pytest.raises(ValueError, match="metric"):
        CheckpointManager("top_k").save_ckpoint(network, 2, None, str(tmp_path / "other" / "dense-1_1.ckpt"))
    with pytest.raises(ValueError, match="<prefix>-<epoch>_<step>.ckpt"):
        CheckpointManager().save_ckpoint(network, save_path=str(tmp_path / "weights.ckpt"))
    # a folder holding checkpoints of these names that the toolkit did not write is refused, not overwritten
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "dense-1_5.ckpt").write_bytes(b"someone else's")
    with pytest.raises(ValueError, match="did not write"):
        CheckpointManager("latest_k").save_ckpoint(network, 1, save_path=str(foreign / "dense-2_5.ckpt"))
    assert (foreign / "dense-1_5.ckpt").read_bytes() == b"someone else's"


class Staged(nn.Cell):
    """A user's network declaring its feature maps, as MindCV's models do."""

    def __init__(self, flatten_sequential=True):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, stride=2, pad_mode="same")
        self.stages = nn.SequentialCell([nn.Conv2d(4, 8, 3, stride=2, pad_mode="same"), nn.ReLU(),
                                         nn.Conv2d(8, 16, 3, stride=2, pad_mode="same")])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Dense(16, 3)
        if flatten_sequential is not None:
            self.flatten_sequential = flatten_sequential
        self.feature_info = [dict(chs=4, reduction=2, name="stem"), dict(chs=8, reduction=4, name="stages.0"),
                             dict(chs=16, reduction=8, name="stages.2")]

    def construct(self, x):
        return self.head(self.pool(self.stages(self.stem(x))).reshape(x.shape[0], -1))


@pytest.mark.parametrize("flatten_sequential", [True, None], ids=["declared", "inferred"])
def test_feature_extract_wrapper_over_a_users_network(flatten_sequential):
    net = Staged(flatten_sequential)
    wrapper = FeatureExtractWrapper(net, out_indices=[0, 2])
    assert wrapper.out_channels == [4, 16]
    x = Tensor(np.random.default_rng(0).standard_normal((2, 3, 16, 16)), ms.float32)
    stem = net.stem(x)
    expected = [stem, net.stages(stem)]
    outputs = wrapper(x)
    assert [o.shape for o in outputs] == [(2, 4, 8, 8), (2, 16, 2, 2)]
    for got, want in zip(outputs, expected):
        np.testing.assert_allclose(got.asnumpy(), want.asnumpy(), rtol=1e-5, atol=1e-6)
    assert {p.name for p in wrapper.get_parameters()} == {p.name for p in net.get_parameters()
                                                          if not p.name.startswith("head.")}
    assert len(FeatureExtractWrapper(net)(x)) == 3
    with pytest.raises(ValueError, match="none of its cells"):
        FeatureExtractWrapper(Staged(flatten_sequential=False), out_indices=[1])


def test_create_trainer_plain_path():
    from mindcv.utils import create_trainer
    rng = np.random.default_rng(0)
    features, labels = rng.standard_normal((16, 4)).astype(np.float32), rng.integers(0, 3, 16).astype(np.int32)
    data = GeneratorDataset(list(zip(features, labels)), column_names=["image", "label"], shuffle=False).batch(8)
    network = nn.Dense(4, 3)
    before = parameters(network)
    model = create_trainer(network, create_loss("ce"), create_optimizer(network.trainable_params(), "sgd", lr=0.1),
                           metrics={"accuracy"}, amp_level="O0", amp_cast_list=None, loss_scale_type="fixed")
    model.train(1, data, dataset_sink_mode=False)
    assert not np.array_equal(before["weight"], network.weight.asnumpy())
    with pytest.raises(ValueError, match="ema need mindcv's train step: train with train.py"):
        create_trainer(network, create_loss("ce"), create_optimizer(network.trainable_params(), "sgd"),
                       metrics={"accuracy"}, amp_level="O0", amp_cast_list=None, loss_scale_type="fixed", ema=True)
