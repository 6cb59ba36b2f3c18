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
import signal

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn
from PIL import Image

import infer
import train
from conftest import DEMO_DATA, ROOT
from mindcv import export
from mindcv.models.weights import read_state
from mindcv.utils.cli import build_eval_model, build_model
from mindcv.utils.config import parse_config

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
    (folder / "notes.txt").write_text("not an image")
    return folder


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
    results = json.loads(output.read_text())
    assert [os.path.basename(s["path"]) for s in results["skipped"]] == ["broken.jpg"]
    assert {os.path.basename(p["path"]) for p in results["predictions"]} == names
    for prediction, line in zip(results["predictions"], lines):
        probabilities = [t["probability"] for t in prediction["topk"]]
        assert len(probabilities) == 3 and probabilities == sorted(probabilities, reverse=True)
        assert 0 < sum(probabilities) <= 1 + 1e-9
        assert all(t["class"] == str(t["index"]) for t in prediction["topk"])  # class names are the digit folders
        assert line == f"{prediction['path']}: " + ", ".join(f"{t['class']} {t['probability']:.4f}"
                                                             for t in prediction["topk"])
    # the same pixels in any container give the same prediction
    by_name = {os.path.basename(p["path"]): p["topk"] for p in results["predictions"]}
    for name in ("digit.png", "digit.bmp", "gray.png", "rgba.png"):
        assert by_name[name][0]["index"] == by_name["digit.png"][0]["index"]
        assert by_name[name][0]["probability"] == pytest.approx(by_name["digit.png"][0]["probability"], abs=1e-6)


@pytest.mark.parametrize("case", ["missing input", "model of another size", "wrong class names"])
def test_infer_user_errors_are_one_line(finetuned_run, image_folder, tmp_path, case, capsys):
    ckpt = os.path.join(finetuned_run, "convnext_atto_best.ckpt")
    recipe = ["-c", os.path.join(finetuned_run, "config.yaml")]
    (tmp_path / "names.txt").write_text("cat\ndog\n")
    argv, expected = {
        "missing input": (recipe + ["--ckpt_path", ckpt, str(tmp_path / "nowhere")], "no such image or folder"),
        "model of another size": (["--model", "convnext_atto", "--ckpt_path", ckpt, str(image_folder)],
                                  "pass -c"),
        "wrong class names": (recipe + ["--ckpt_path", ckpt, "--class_names", str(tmp_path / "names.txt"),
                                        str(image_folder)], "names 2 classes"),
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


def test_export_onnx_writes_a_file_or_says_why_not(finetuned_run, tmp_path, capsys):
    argv = ["-c", os.path.join(finetuned_run, "config.yaml"), "--format", "onnx", "--output",
            str(tmp_path / "model.onnx"), "--ckpt_path", os.path.join(finetuned_run, "convnext_atto_best.ckpt")]
    status = export.main(argv)
    err = capsys.readouterr().err
    if status == 0:
        assert (tmp_path / "model.onnx").stat().st_size > 0
    else:
        assert status == 1 and "cannot export ConvNeXt to ONNX" in err and not (tmp_path / "model.onnx").exists()
