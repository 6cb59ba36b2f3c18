"""The configuration schema: recipes and the command line, unknown keys, types, the saved resolved config."""
import glob
import os

import pytest

import infer
from conftest import ROOT
from mindcv.config.schema import (GROUPS, OPTIONS, SCHEMA, ConfigError, build_parser, dump_config, load_yaml,
                                 parse_config, recipe_of, schema_table)

RECIPES = sorted(glob.glob(os.path.join(ROOT, "configs", "**", "*.yaml"), recursive=True))


def test_every_option_has_type_default_and_help():
    assert len(OPTIONS) == len(SCHEMA)
    for option in SCHEMA:
        assert option.help and option.type in (bool, int, float, str, list)
        if option.default is not None:
            assert isinstance(option.default, option.type) or (option.type is float and isinstance(option.default, int))


@pytest.mark.parametrize("recipe", RECIPES, ids=os.path.basename)
def test_shipped_recipes_fit_the_schema(recipe):
    values = load_yaml(recipe)
    assert values["model"] and values["epoch_size"] >= 1
    parse_config(["-c", recipe])  # and every value lies in its range


def test_convnext_tiny_recipe_has_the_published_values():
    tiny = load_yaml(os.path.join(ROOT, "configs", "convnext", "convnext_tiny_ascend.yaml"))
    expected = dict(mode=0, distribute=True, num_parallel_workers=16, val_while_train=True, dataset="imagenet",
                    batch_size=16, drop_remainder=True, image_resize=224, scale=[0.08, 1.0], ratio=[0.75, 1.333],
                    hflip=0.5, interpolation="bicubic", auto_augment="randaug-m9-mstd0.5-inc1", re_prob=0.25,
                    re_value="random", crop_pct=0.95, mixup=0.8, cutmix=1.0, num_classes=1000, epoch_size=450,
                    drop_path_rate=0.1, dataset_sink_mode=True, amp_level="O2", loss="ce", label_smoothing=0.1,
                    scheduler="cosine_decay", lr=0.002, min_lr=3e-7, warmup_epochs=20, warmup_factor=1.75e-5,
                    decay_epochs=430, opt="adamw", weight_decay=0.05, loss_scale_type="dynamic",
                    drop_overflow_update=True, keep_checkpoint_max=10, weight_decay_filter="norm_and_bias")
    assert {k: tiny[k] for k in expected} == expected


def test_command_line_overrides_the_recipe(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("lr: 0.5\nbatch_size: 8\ndistribute: True\nscale: [0.2, 1.0]\n")
    config = parse_config(["-c", str(recipe), "--lr", "0.1", "--distribute", "False", "--scale", "0.3", "0.9"])
    assert (config.lr, config.batch_size, config.distribute, config.scale) == (0.1, 8, False, [0.3, 0.9])
    assert config.weight_decay == OPTIONS["weight_decay"].default


def test_unknown_key_in_yaml_suggests_the_closest(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("batchsize: 8\n")
    with pytest.raises(ConfigError, match="unknown config key 'batchsize' in .*r.yaml; did you mean 'batch_size'"):
        parse_config(["-c", str(recipe)])


def test_unknown_key_on_the_command_line_suggests_the_closest():
    with pytest.raises(ConfigError, match="unknown config key 'drop_path' in the command line; did you mean "
                                          "'drop_path_rate'"):
        parse_config(["--drop_path", "0.1"])


@pytest.mark.parametrize("argv,message", [(["--lr", "fast"], "lr: 'fast' is not a valid float"),
                                          (["--mode", "3"], "mode: 3 is not one of 0, 1"),
                                          (["--distribute", "maybe"], "distribute: 'maybe' is not a valid bool"),
                                          (["--depths", "1", "1.5"], "depths: .* is not a valid list")])
def test_values_of_the_wrong_type_are_rejected(argv, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(argv)


def test_missing_recipe_file():
    with pytest.raises(ConfigError, match="config file not found: nowhere.yaml"):
        parse_config(["-c", "nowhere.yaml"])


def test_resolved_config_reloads_to_the_same_values(tmp_path):
    config = parse_config(["--lr", "0.3", "--depths", "1", "1", "2", "1", "--auto_augment", "randaug-m9-mstd0.5-inc1"])
    dump_config(config, str(tmp_path / "config.yaml"))
    again = parse_config(["-c", str(tmp_path / "config.yaml")])
    assert {k: getattr(again, k) for k in OPTIONS} == {k: getattr(config, k) for k in OPTIONS}


def test_every_numeric_option_declares_its_valid_values():
    for option in SCHEMA:
        if option.type in (int, float, list) and not option.choices:
            assert option.valid is not None, option.name
    assert parse_config([])  # the defaults are valid


@pytest.mark.parametrize("argv,message", [
    (["--lr", "-0.1"], r"lr must be >= 0, got -0.1 \(on the command line\)$"),
    (["--lr", "nan"], "lr must be >= 0, got nan"),
    (["--weight_decay", "inf"], "weight_decay must be >= 0, got inf"),
    (["--batch_size", "0"], r"batch_size must be in \[1, 1048576\], got 0"),
    (["--crop_pct", "0"], r"crop_pct must be in \(0, 1\], got 0.0"),
    (["--hflip", "1.5"], r"hflip must be in \[0, 1\], got 1.5"),
    (["--label_smoothing", "1"], r"label_smoothing must be in \[0, 1\), got 1.0"),
    (["--sink_size", "0"], "sink_size must be -1 or >= 1, got 0"),
    (["--loss_scale", "0"], "loss_scale must be > 0, got 0.0"),
    (["--scale", "0.9", "0.2"], r"scale must be 2 numbers, each in \(0, 1\], min <= max, got \[0.9, 0.2\]"),
    (["--ratio", "0.75"], r"ratio must be 2 numbers, each > 0, min <= max, got \[0.75\]"),
    (["--depths", "1", "1", "1"], r"depths must be 4 numbers, each in \[1, 1000\], got \[1, 1, 1\]"),
    (["--std", "58", "0", "57"], r"std must be numbers, each > 0, got \[58.0, 0.0, 57.0\]"),
    (["--multi_step_decay_milestones", "60", "30"], r"multi_step_decay_milestones must be numbers, each >= 0, in "
                                                    r"ascending order, got \[60, 30\]"),
])
def test_values_out_of_range_are_rejected_with_the_range(argv, message):
    with pytest.raises(ConfigError, match=f"^{message}"):
        parse_config(argv)


def test_a_recipe_value_out_of_range_names_the_recipe(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("lr: -0.1\n")
    with pytest.raises(ConfigError, match=f"^lr must be >= 0, got -0.1 \\(in {recipe}\\)$"):
        parse_config(["-c", str(recipe)])
    assert parse_config(["-c", str(recipe), "--lr", "0.1"]).lr == 0.1  # the command line overrides it first


def test_the_ends_of_ranges_are_accepted():
    config = parse_config(["--sink_size", "-1", "--crop_pct", "1", "--hflip", "1", "--vflip", "0", "--lr", "0",
                           "--keep_checkpoint_max", "0", "--scale", "1", "1", "--ema_decay", "1"])
    assert (config.sink_size, config.crop_pct, config.scale) == (-1, 1.0, [1.0, 1.0])


def test_mean_and_std_must_fit_in_channels_wherever_each_is_set(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("in_channels: 1\n")
    with pytest.raises(ConfigError, match=r"^mean must have one value per channel \(in_channels is 1\), got 2"):
        parse_config(["-c", str(recipe), "--mean", "120", "110"])
    with pytest.raises(ConfigError, match=r"^std must have one value per channel \(in_channels is 3\), got 1"):
        parse_config(["--std", "58"])
    # one channel: ImageNet's three values are averaged by the transforms
    assert parse_config(["-c", str(recipe), "--mean", "124", "116", "104"]).mean == [124.0, 116.0, 104.0]


def test_key_table_and_help_show_each_range():
    rows = {line.split(" | ")[0].strip("| `"): line for line in schema_table().splitlines()
            if line.startswith("| `")}
    assert len(rows) == len(SCHEMA)
    assert "| >= 0 |" in rows["lr"] and "| -1 or >= 1 |" in rows["sink_size"]
    assert "| ce / bce / asl_single_label / asl_multi_label / jsd |" in rows["loss"]
    assert "| latest_k / top_k |" in rows["ckpt_save_policy"] and "| 0 / 3 |" in rows["aug_splits"]
    assert "| mean / sum / none; training takes only mean / sum so far |" in rows["reduction"]
    assert "| `nesterov` = `use_nesterov` | bool |" in schema_table()  # MindCV's name of the key
    help_text = " ".join(build_parser().format_help().split())
    assert "(default: 0.001; valid: >= 0)" in help_text and "--nesterov [BOOL], --use_nesterov [BOOL]" in help_text


def _help_sections(script):
    """{heading: [keys]} of a script's --help."""
    sections, heading = {}, None
    for line in build_parser(script=script).format_help().splitlines():
        if line and not line.startswith(" ") and line.endswith(":"):
            heading = line[:-1]
            sections[heading] = []
        elif heading and line.startswith("  --"):
            sections[heading].append(line.split()[0][2:])
    return sections


def test_help_groups_the_keys_as_mindcv_and_shows_each_script_what_it_reads():
    train = _help_sections("train")
    assert [h for h in train if h in GROUPS.values()] == list(GROUPS.values())  # MindCV's order: System, Dataset, ...
    assert {"mode", "seed", "log_interval"} <= set(train["System"]) and "lr" in train["Learning-rate scheduler"]
    assert sorted(k for keys in train.values() for k in keys if k in OPTIONS) == sorted(OPTIONS)  # every key, once
    validate = {k for keys in _help_sections("validate").values() for k in keys}
    infer_sections = _help_sections("infer")
    infer = {k for keys in infer_sections.values() for k in keys}
    export = {k for keys in _help_sections("export").values() for k in keys}
    assert {"data_dir", "val_split", "ckpt_path", "ema", "crop_pct", "val_amp_level"} <= validate
    assert not {"mixup", "opt", "lr", "scheduler", "loss", "epoch_size", "resume"} & (validate | infer | export)
    assert {"ckpt_path", "image_resize", "crop_pct", "mean"} <= infer and "val_split" not in infer
    assert {"ckpt_path", "image_resize", "in_channels", "batch_size"} <= export and "crop_pct" not in export
    assert not validate & {k for k in OPTIONS if OPTIONS[k].scripts == ("train",)}
    # the keys a script does not read are still accepted: one recipe serves train.py and the others
    assert parse_config(["--mixup", "0.2"], script="validate").mixup == 0.2


def test_an_argument_error_prints_a_short_usage_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_config(["--lr"])  # no value
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "expected one argument" in err
    assert err.splitlines() == ["usage: python train.py [-h] [-c RECIPE] [--KEY VALUE ...]",
                                "python train.py: error: argument --lr: expected one argument"]


def test_unknown_keys_suggest_only_close_names():
    with pytest.raises(ConfigError, match="'epochs' in the command line; did you mean 'epoch_size'"):
        parse_config(["--epochs", "3"])
    with pytest.raises(ConfigError) as error:
        parse_config(["--image_path", "x.png"])  # close to nothing train.py reads: no guess (was aug_repeats)
    assert "did you mean" not in str(error.value) and "see `python train.py --help` for every key" in str(error.value)
    # a script's own flags are suggested too, and its help named
    with pytest.raises(ConfigError, match="'image_pth' in the command line; did you mean 'image_path'"):
        parse_config(["--image_pth", "x.png"], extra=infer._extra_arguments, script="infer")
    with pytest.raises(ConfigError, match="see `python infer.py --help` for every key"):
        parse_config(["--picture", "x.png"], extra=infer._extra_arguments, script="infer")


def test_a_yaml_syntax_error_names_file_line_and_column(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("lr: 0.1\nmodel: [convnext_tiny\nbatch_size: 8\n")
    with pytest.raises(ConfigError, match=f"^{recipe}, line 3, column 11 is not valid YAML: expected ',' or ']'"):
        parse_config(["-c", str(recipe)])


def test_the_saved_recipe_holds_no_one_off_run_state(tmp_path):
    """A run folder's config.yaml, reused with -c, starts a run as the first one did: it does not resume."""
    config = parse_config(["--resume", "auto", "--lr", "0.3"])
    assert recipe_of(config)["lr"] == 0.3 and "resume" not in recipe_of(config)
    resumed = parse_config(["--resume_opt", "--ckpt_path", "run/m-3_10.ckpt"])
    assert not {"resume_opt", "ckpt_path"} & set(recipe_of(resumed))
    finetune = parse_config(["--ckpt_path", "source.ckpt"])  # the weights a fine-tune starts from are its recipe
    assert recipe_of(finetune)["ckpt_path"] == "source.ckpt"
    dump_config(resumed, str(tmp_path / "config.yaml"))
    again = parse_config(["-c", str(tmp_path / "config.yaml")])
    assert (again.resume, again.resume_opt, again.ckpt_path) == ("", False, "")
