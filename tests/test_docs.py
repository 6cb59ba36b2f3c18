"""The documentation stays true: the README's commands parse against the scripts' command lines (an unknown or
misspelt flag fails), every relative link of README.md and docs/ points at a file that exists, and docs/config.md
holds the key table the schema generates."""
import glob
import os
import re
import shlex

import pytest

import infer
import validate
from conftest import ROOT
from mindcv import export
from mindcv.config.schema import parse_config, schema_table

DOCS = [os.path.join(ROOT, "README.md"), os.path.join(ROOT, "configs", "convnext", "README.md"),
        *sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))]
# the scripts whose command lines the README shows, with their own extra arguments
SCRIPTS = {"train.py": None, "validate.py": validate._extra_arguments, "infer.py": infer._extra_arguments,
           "mindcv.export": export._extra_arguments}
# recipes that the walkthrough's earlier steps write: the recipe they were made from stands in for them
WRITTEN_BY_EARLIER_STEPS = {"runs/mnist_finetune/config.yaml": "configs/convnext/convnext_mnist_cpu.yaml"}


def readme_commands():
    """(script, argv) of every command in README.md's shell blocks that runs one of SCRIPTS."""
    text = open(os.path.join(ROOT, "README.md")).read()
    commands = []
    for block in re.findall(r"```shell\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if not any(script in line for script in SCRIPTS):
                continue
            words = shlex.split(line, comments=True)
            for script in SCRIPTS:
                marker = ["-m", script] if script.startswith("mindcv.") else [script]
                for start in range(len(words)):
                    if words[start:start + len(marker)] == marker:
                        commands.append((script, words[start + len(marker):]))
    return commands


COMMANDS = readme_commands()


def test_the_readme_shows_the_walkthrough_commands():
    shown = {script for script, _ in COMMANDS}
    assert shown == set(SCRIPTS) and len(COMMANDS) >= 12


@pytest.mark.parametrize("script,argv", COMMANDS, ids=[f"{s} {' '.join(a)[:60]}" for s, a in COMMANDS])
def test_readme_command_parses(script, argv, monkeypatch):
    monkeypatch.chdir(ROOT)
    argv = [WRITTEN_BY_EARLIER_STEPS.get(word, word) for word in argv]
    if script == "infer.py":  # the image paths: positional arguments of infer's own parser
        argv = [word for word in argv if not word.startswith("datasets/")] + ["datasets/mnist5k/val/7"]
    config = parse_config(argv, extra=SCRIPTS[script])
    assert config.model  # parsed, checked against the schema and its ranges


def relative_links(path):
    text = open(path).read()
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if not re.match(r"[a-z]+:", target) and not target.startswith("#"):
            yield target.split("#")[0]


@pytest.mark.parametrize("path", DOCS, ids=[os.path.relpath(p, ROOT) for p in DOCS])
def test_relative_links_point_at_files(path):
    links = list(relative_links(path))
    missing = [link for link in links if not os.path.exists(os.path.join(os.path.dirname(path), link))]
    assert not missing, f"{os.path.relpath(path, ROOT)} links to missing files: {missing}"


def test_the_config_page_holds_the_schemas_table():
    assert schema_table() in open(os.path.join(ROOT, "docs", "config.md")).read(), \
        "docs/config.md is out of date: regenerate its table with python -m mindcv.config.schema"
