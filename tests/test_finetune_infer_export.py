"""The journey after training from scratch: fine-tune from a checkpoint, predict with infer.py, export MindIR.

A source checkpoint is trained here for one epoch on the shipped mnist5k (a tiny ConvNeXt at 32x32 pixels, ten
classes); it is then fine-tuned on a dataset of digits 0-7 (eight classes, so the classifier is replaced), next
to the same run from scratch. The source saw these digits, so what the comparison checks is that fine-tuning
carries the backbone over and trains on from it, not how far features transfer between domains. The
fine-tuned run's folder serves the prediction and export tests.
"""
import glob
import json
import os
import shutil
import signal
import stat

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn
from PIL import Image

import infer
import train
from conftest import DEMO_DATA, ROOT
from mindcv import export
from mindcv.data import create_transforms
from mindcv.models import create_model
from mindcv.models.weights import read_state
from mindcv.config.builders import build_eval_model, build_model
from mindcv.config.schema import parse_config

RECIPE = os.path.join(ROOT, "configs", "convnext", "convnext_mnist_cpu.yaml")
FINETUNE_RECIPE = os.path.join(os.path.dirname(RECIPE), "convnext_tiny_finetune.yaml")
# A ConvNeXt small enough to compile and train in seconds; one epoch, no warm-up.
TINY = ["-c", RECIPE, "--depths", "1", "1", "1", "1", "--dims", "16", "32", "64", "128", "--epoch_size", "1",
        "--warmup_epochs", "0", "--decay_epochs", "1", "--keep_checkpoint_max", "1"]
VAL_PER_CLASS = 20


def _link_dataset(root, classes, val_per_class=None):
    """root/train/<c> and root/val/<c> as links to mnist5k's folders (val: the first `val_per_class` files,
    so that a small validation set still has every class)."""
    for split in ("train", "val"):
        for name in classes:
            source = os.path.join(DEMO_DATA, split, name)
            target = os.path.join(root, split, name)
            if split == "train" or val_per_class is None:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.symlink(source, target)
                continue
            os.makedirs(target)
            for file_name in sorted(os.listdir(source))[:val_per_class]:
                os.symlink(os.path.join(source, file_name), os.path.join(target, file_name))
    return str(root)


def _train(argv):
    """train.main in this process; its Ctrl-C handlers are taken down afterwards."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        assert train.main(argv) == 0
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


def _val_top1(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f][-1]["val_top1"]


@pytest.fixture(scope="module")
def source_checkpoint(tmp_path_factory):
    """A resumable checkpoint (weights and optimizer state) of a 10-class model: one epoch of 62 steps."""
    run = str(tmp_path_factory.mktemp("source"))
    _train(TINY + ["--data_dir", DEMO_DATA, "--val_while_train", "False", "--ckpt_save_dir", run])
    (checkpoint,) = glob.glob(os.path.join(run, "convnext_atto-*.ckpt"))
    return checkpoint


@pytest.fixture(scope="module")
def target_data(tmp_path_factory):
    return _link_dataset(tmp_path_factory.mktemp("target") / "data", [str(d) for d in range(8)], VAL_PER_CLASS)


def _finetune_argv(data, run, ckpt_path=""):
    # one epoch of 5 steps on eight digits; the classifier (8 outputs) cannot come from the checkpoint (10)
    return TINY + ["--data_dir", data, "--num_samples", "320", "--layer_decay", "0.8", "--ckpt_save_dir", run,
                   "--ckpt_path", ckpt_path]


@pytest.fixture(scope="module")
def finetuned_run(source_checkpoint, target_data, tmp_path_factory):
    run = str(tmp_path_factory.mktemp("finetuned"))
    _train(_finetune_argv(target_data, run, source_checkpoint))
    return run


def test_finetune_recipe_follows_the_authors_transfer_settings():
    config = parse_config(["-c", FINETUNE_RECIPE])
    global_batch = config.batch_size * config.gradient_accumulation_steps
    assert config.lr == pytest.approx(5e-5 * global_batch / 512)
    assert 0.7 <= config.layer_decay <= 0.8 and config.weight_decay == pytest.approx(1e-8)
    assert config.warmup_epochs == 0 and config.epoch_size == config.decay_epochs == 30
    assert config.mixup == 0 and config.cutmix == 0 and config.head_init_scale == pytest.approx(1e-3)
    assert config.num_classes is None and not config.ckpt_path and not config.distribute


def test_finetune_starts_from_the_checkpoint_but_for_the_classifier(source_checkpoint, target_data, tmp_path):
    source = read_state(source_checkpoint)
    config = parse_config(_finetune_argv(target_data, str(tmp_path), source_checkpoint))
    network = build_model(config, 8, checkpoint_path=config.ckpt_path)  # what train.py builds
    params = {p.name: p.asnumpy() for p in network.get_parameters()}
    backbone = [name for name in params if not name.startswith("classifier.")]
    assert len(backbone) > 20 and set(backbone) <= set(source)
    for name in backbone:
        np.testing.assert_array_equal(params[name], source[name], err_msg=name)
    assert source["classifier.weight"].shape == (10, 128) and params["classifier.weight"].shape == (8, 128)


def test_finetuned_beats_the_same_run_from_scratch(finetuned_run, target_data, tmp_path):
    scratch_run = str(tmp_path / "scratch")
    _train(_finetune_argv(target_data, scratch_run))
    finetuned, scratch = _val_top1(finetuned_run), _val_top1(scratch_run)
    print(f"val top-1 after one epoch: fine-tuned {finetuned:.1f}%, from scratch {scratch:.1f}%")
    assert finetuned > scratch + 10


@pytest.fixture
def image_folder(tmp_path):
    """One digit as JPEG, PNG, WebP, BMP, grayscale PNG and RGBA PNG, plus a corrupt JPEG and a text file."""
    folder = tmp_path / "images"
    (folder / "more").mkdir(parents=True)
    digit_dir = os.path.join(DEMO_DATA, "val", "3")  # a class of the fine-tuned model
    digit = Image.open(os.path.join(digit_dir, sorted(os.listdir(digit_dir))[0]))
    rgb = digit.convert("RGB")
    rgb.save(folder / "digit.jpg", quality=95)
    rgb.save(folder / "digit.png")
    rgb.save(folder / "digit.webp")
    rgb.save(folder / "more" / "digit.bmp")
    digit.convert("L").save(folder / "gray.png")
    rgba = digit.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(folder / "rgba.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (folder / "fake.png").write_text("not an image")
    (folder / "notes.txt").write_text("not an image")
    return folder


def _model_probabilities(run_dir, ckpt, paths):
    """Softmax of the fine-tuned model for each image file, through mindcv's API: the run's recipe, the
    checkpoint loaded by create_model, the recipe's evaluation transform (what validation saw)."""
    config = parse_config(["-c", os.path.join(run_dir, "config.yaml")])
    network = create_model(config.model, num_classes=8, in_channels=config.in_channels, checkpoint_path=ckpt,
                           depths=tuple(config.depths), dims=tuple(config.dims))
    network.set_train(False)
    normalization = {k: getattr(config, k) for k in ("mean", "std") if getattr(config, k) is not None}
    transform = create_transforms(config.dataset, is_training=False, image_resize=config.image_resize,
                                  crop_pct=config.crop_pct, interpolation=config.interpolation,
                                  in_channels=config.in_channels, **normalization)
    images = []
    for path in paths:
        with open(path, "rb") as f:
            images.append(transform(f.read(), np.random.default_rng(0)))
    logits = network(ms.Tensor(np.stack(images))).asnumpy().astype(np.float64)
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def test_infer_prints_topk_per_image_and_skips_unreadable(finetuned_run, image_folder, tmp_path, capsys):
    ckpt = os.path.join(finetuned_run, "convnext_atto_best.ckpt")
    output = tmp_path / "results.json"
    assert infer.main(["-c", os.path.join(finetuned_run, "config.yaml"), "--ckpt_path", ckpt, str(image_folder),
                       "--topk", "3", "--output", str(output)]) == 0
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    names = {"digit.jpg", "digit.png", "digit.webp", "digit.bmp", "gray.png", "rgba.png"}
    assert {os.path.basename(line.split(":")[0]) for line in lines} == names
    assert "broken.jpg" in err and "skipped" in err and "class_names.txt" in err
    # the reason names the file, not the buffer it was read into ('<_io.BytesIO object at 0x...>')
    assert f"skipped {image_folder / 'fake.png'}: cannot read image: not an image format PIL knows" in err
    assert "BytesIO" not in err
    results = json.loads(output.read_text())
    assert [os.path.basename(s["path"]) for s in results["skipped"]] == ["broken.jpg", "fake.png"]
    assert {os.path.basename(p["path"]) for p in results["predictions"]} == names
    with open(os.path.join(finetuned_run, "class_names.txt")) as f:
        class_names = f.read().split()
    assert class_names == [str(d) for d in range(8)]  # the fine-tuning data's folders
    # what infer printed is the model's softmax: its three most probable classes, best first, to 4 decimals
    paths = [line.split(": ")[0] for line in lines]
    probabilities = _model_probabilities(finetuned_run, ckpt, paths)
    for line, path, expected, prediction in zip(lines, paths, probabilities, results["predictions"]):
        top3 = np.argsort(-expected)[:3]
        printed = [item.split(" ") for item in line.split(": ", 1)[1].split(", ")]
        assert [name for name, _ in printed] == [class_names[i] for i in top3], line
        np.testing.assert_allclose([float(p) for _, p in printed], expected[top3], rtol=0, atol=5e-5 + 1e-6,
                                   err_msg=line)
        assert prediction["path"] == path and [t["index"] for t in prediction["topk"]] == top3.tolist()
        np.testing.assert_allclose([t["probability"] for t in prediction["topk"]], expected[top3], atol=1e-5)
    # the same pixels in any container give the same prediction
    by_name = {os.path.basename(p["path"]): p["topk"] for p in results["predictions"]}
    for name in ("digit.png", "digit.bmp", "gray.png", "rgba.png"):
        assert by_name[name][0]["index"] == by_name["digit.png"][0]["index"]
        assert by_name[name][0]["probability"] == pytest.approx(by_name["digit.png"][0]["probability"], abs=1e-6)


def test_infer_takes_mindcvs_image_path_flag(finetuned_run, image_folder, capsys):
    """MindCV's infer.py names its image with --image_path (its docs: --image-path); the run's recipe is found beside
    the checkpoint."""
    ckpt = os.path.join(finetuned_run, "convnext_atto_best.ckpt")
    assert infer.main(["--ckpt_path", ckpt, "--image_path", str(image_folder / "digit.png"), "--image-path",
                       str(image_folder / "gray.png")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(": ")[0] for line in lines] == [str(image_folder / "digit.png"), str(image_folder / "gray.png")]


@pytest.mark.parametrize("case", ["missing input", "model of another size", "wrong class names", "no image"])
def test_infer_user_errors_are_one_line(finetuned_run, image_folder, tmp_path, case, capsys):
    ckpt = os.path.join(finetuned_run, "convnext_atto_best.ckpt")
    recipe = ["-c", os.path.join(finetuned_run, "config.yaml")]
    (tmp_path / "names.txt").write_text("cat\ndog\n")
    argv, expected = {
        "missing input": (recipe + ["--ckpt_path", ckpt, str(tmp_path / "nowhere")], "no such image or folder"),
        # which shape is the checkpoint's, which the model's
        "model of another size": (["--dims", "8", "8", "8", "8", "--ckpt_path", ckpt, str(image_folder)],
                                  "(16, 3, 4, 4) in the checkpoint, (8, 3, 4, 4) in the model"),
        "wrong class names": (recipe + ["--ckpt_path", ckpt, "--class_names", str(tmp_path / "names.txt"),
                                        str(image_folder)], "names 2 classes"),
        "no image": (recipe + ["--ckpt_path", ckpt], "no images given: pass image files or folders"),
    }[case]
    with pytest.raises(SystemExit) as exit_info:
        infer.main(argv)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and err.startswith("error:") and expected in err and "\n" not in err


def test_export_mindir_reloads_with_the_same_logits(finetuned_run, tmp_path):
    argv = ["-c", os.path.join(finetuned_run, "config.yaml"),
            "--ckpt_path", os.path.join(finetuned_run, "convnext_atto_best.ckpt")]
    assert export.main(argv + ["--format", "MINDIR", "--batch_size", "2", "--output", str(tmp_path / "model")]) == 0
    path = tmp_path / "model.mindir"
    assert b"Custom" not in path.read_bytes()  # stock operators only: portable to MindSpore Lite
    images = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    expected = build_eval_model(parse_config(argv))(ms.Tensor(images)).asnumpy()
    exported = nn.GraphCell(ms.load(str(path)))(ms.Tensor(images)).asnumpy()
    assert exported.shape == (2, 8)
    error = np.abs(exported - expected).max()
    print(f"MindIR vs source model: max |logit difference| {error:.2e}")
    assert error <= 1e-5


def test_export_writes_beside_the_checkpoint_a_file_others_can_read(finetuned_run, tmp_path, monkeypatch):
    """Without --output the MindIR file joins the checkpoint's folder (not the current one, the repository in the
    README); its mode follows the umask, as the user's other files (MindSpore writes 0400)."""
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.yaml", "convnext_atto_best.ckpt"):
        shutil.copy(os.path.join(finetuned_run, name), run / name)
    monkeypatch.chdir(tmp_path)
    assert export.main(["--ckpt_path", str(run / "convnext_atto_best.ckpt")]) == 0
    mask = os.umask(0o077)
    os.umask(mask)
    assert sorted(os.listdir(run)) == ["config.yaml", "convnext_atto.mindir", "convnext_atto_best.ckpt"]
    assert stat.S_IMODE(os.stat(run / "convnext_atto.mindir").st_mode) == 0o666 & ~mask
    assert sorted(os.listdir(tmp_path)) == ["run"]


def test_export_onnx_of_convnext_says_why_not(finetuned_run, tmp_path, capsys):
    """MindSpore 2.10 has no ONNX converter for Erf, which ConvNeXt's exact GELU needs (see mindcv/export.py):
    the command says so in one line, exits with 1 and writes nothing."""
    argv = ["-c", os.path.join(finetuned_run, "config.yaml"), "--format", "onnx", "--output",
            str(tmp_path / "model.onnx"), "--ckpt_path", os.path.join(finetuned_run, "convnext_atto_best.ckpt")]
    assert export.main(argv) == 1
    out, err = capsys.readouterr()
    assert err == (f"error: MindSpore {ms.__version__} cannot export ConvNeXt to ONNX: Can not find key Erf in convert "
                   "map. Exporting Erf operator is not yet supported. Export MINDIR instead.\n")
    assert out == ""
    assert list(tmp_path.iterdir()) == []
