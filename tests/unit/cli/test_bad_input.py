"""Bad input, as users type it, across every subcommand and config section: each invocation ends
with exit code 2 (a bad value or a mismatch; 1 for I/O and broken files), exactly one stderr line
`prismlab: error: ...`, no traceback, and every file that existed before byte-identical."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from prismlab.cli import main
from prismlab.datasets.write.clock_shards import write_clock_shards

from tests.helpers import REPO
from tests.helpers.image_patterns import write_pattern_folder
from tests.helpers.snapshots import file_snapshot

DEMO = str(REPO / "configs" / "clock_demo.yaml")


LR = {"optim.name": ["sgd", "adam"]}
OPTUNA_SWEEPS = {
    "sampler": {"sampler": "TPE", "parameters": LR},
    "sampler-args": {"sampler_args": {"n_startup": 3}, "parameters": LR},
    "pruner-args": {"pruner": "median", "pruner_args": {"warmup": 1}, "parameters": LR},
    "when-range": {"parameters": {"optim.lr": {"min": 0.1, "max": 1}, "optim.momentum": {"when": "optim.lr"}}},
    "missing-case": {"parameters": LR | {"optim.lr": {"when": "optim.name", "cases": {"sgd": [0.1]}}}},
    "log-from-zero": {"parameters": {"optim.lr": {"min": 0, "max": 0.1, "log": True}}},
    "min-over-max": {"parameters": {"optim.lr": {"min": 0.1, "max": 0.01}}},
    "text-range": {"parameters": {"optim.lr": {"min": "small", "max": "large"}}},
    "bad-key": {"parameters": {"optim.lrate": {"min": 0.01, "max": 0.1}}},
}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """Shards of several kinds, a finished run, and files in the way, written once."""
    root = tmp_path_factory.mktemp("world")
    images = write_pattern_folder(root / "images", {"train": 12, "test": 4}, seed=0)
    assert main(["shards", str(images), "--out", str(root / "rgb"), "--val-fraction", "0.25"]) == 0
    assert main(["shards", str(images), "--out", str(root / "noval")]) == 0
    write_clock_shards(root / "clocks", {"train": 64, "val": 16}, seed=0, size=16, shard_size=32, workers=1)
    gray = write_pattern_folder(root / "gray-images", {"train": 4}, seed=1)
    for png in gray.rglob("*.png"):
        from PIL import Image

        Image.open(png).convert("L").save(png)
    assert (
        main(["shards", str(gray), "--out", str(root / "gray"), "--val-fraction", "0.25", "--test-fraction", "0.25"])
        == 0
    )
    assert (
        main(["train", DEMO, *RUN, f"data.shards={root / 'rgb'}", f"run.out_dir={root / 'runs'}", "run.name=done"]) == 0
    )
    (root / "runs" / "unsaved").mkdir()  # stopped before its first checkpoint
    shutil.copy(root / "runs" / "done" / "config.yaml", root / "runs" / "unsaved")
    broken = root / "broken"
    shutil.copytree(root / "rgb", broken)
    (broken / "train.manifest.json").write_text((root / "rgb" / "train.manifest.json").read_text()[:200])
    raw = json.loads((root / "rgb" / "val.manifest.json").read_text())
    del raw["samples"]
    (broken / "val.manifest.json").write_text(json.dumps(raw))
    (root / "afile").write_text("not a folder")
    (root / "notes.pt").write_text("not a checkpoint")
    (root / "list.yaml").write_text("- a\n- b\n")
    (root / "bad.yaml").write_text("optim: {lr: [1,\n")
    for name, fields in OPTUNA_SWEEPS.items():
        overrides = [f"data.shards={root / 'rgb'}", "task.name=classify"]
        base = {"base": DEMO, "name": name, "method": "optuna", "overrides": overrides}
        (root / f"optuna-{name}.yaml").write_text(yaml.safe_dump(base | fields, sort_keys=False))
    foreign = root / "runs" / "gray-eval"  # a copy of the finished run, pointed at gray shards
    shutil.copytree(root / "runs" / "done", foreign)
    config = yaml.safe_load((foreign / "config.yaml").read_text())
    config["data"]["shards"] = str(root / "gray")
    (foreign / "config.yaml").write_text(yaml.safe_dump(config))
    corrupt = root / "runs" / "corrupt"
    shutil.copytree(root / "runs" / "done", corrupt)
    best = corrupt / "checkpoints" / "best.pt"
    best.write_bytes(best.read_bytes()[:1000])
    return root


RUN = [
    "task.name=classify",
    "model.name=mlp",
    "model.hidden=[16]",
    "wandb.mode=offline",
    "data.num_workers=0",
    "data.batch_size=8",
    "train.epochs=1",
    "train.steps_per_epoch=3",
    "optim.warmup_steps=0",
]


def train(*overrides: str) -> list[str]:
    return ["train", DEMO, *RUN, "data.shards={w}/rgb", "run.out_dir={w}/runs", "run.name=new", *overrides]


def resume(*overrides: str) -> list[str]:
    return ["train", DEMO, *RUN, "data.shards={w}/rgb", "run.out_dir={w}/runs", "run.name=done", *overrides]


CONFIG_VALUES = [
    # run
    ("run.name=", "run.name=''"),
    ("run.name=..", "plain folder name"),
    ("run.name=a/b", "plain folder name"),
    ("run.name=.hidden", "plain folder name"),
    ("run.seed=-1", "run.seed=-1 must be >= 0"),
    ("run.seed=1.5", "must be an integer"),
    ("run.out_dir=", "run.out_dir must not be empty"),
    # data
    ("data.batch_size=0", "data.batch_size=0 must be >= 1"),
    ("data.batch_size=-3", "data.batch_size=-3"),
    ("data.num_workers=-1", "data.num_workers=-1"),
    ("data.shuffle_buffer=0", "data.shuffle_buffer=0"),
    ("data.resize=0", "data.resize=0 must be >= 1"),
    ("data.resize=-4", "data.resize=-4 must be >= 1"),
    ("data.crop=0", "data.crop=0"),
    ("data.crop_padding=-1", "data.crop_padding=-1"),
    ("data.crop_padding=2", "needs data.crop"),
    ("data.rotation=-5", "data.rotation=-5"),
    ("data.rotation=400", "data.rotation=400"),
    ("data.std=[0]", "must be > 0"),
    ("data.std=[-1,1,1]", "must be > 0"),
    ("data.mean=[.nan]", "must be finite"),
    ("data.channels=[]", "distinct channels"),
    ("data.channels=[R,R]", "distinct channels"),
    ("data.drop_channels=1", "data.drop_channels=1"),
    ("data.drop_channels=-0.1", "data.drop_channels=-0.1"),
    ("data.max_incomplete_fraction=1.5", "max_incomplete_fraction"),
    ("data.mode=random", "data.mode='random' is not allowed"),
    ("data.shards=", "data.shards must name"),
    ("data.flip=maybe", "data.flip='maybe' is not allowed; choose one of false, true, 'alternate'"),
    ("data.resize=20", None),
    ("data.crop=12 data.resize=8", "larger than data.resize"),
    # model
    ("model.name=vgg", "model.name=vgg is not a built-in model"),
    ("model.name=timm/resnet_18", "timm has no model 'resnet_18'; did you mean timm/resnet18?"),
    ("model.name=torchvision/resnet5", "did you mean torchvision/resnet50?"),
    ("model.name=nosuchmodule:make", "cannot import nosuchmodule"),
    ("model.kwargs={{depth:2}}", "model.kwargs go to timm/"),
    ("model.widths=[]", "model.widths"),
    ("model.widths=[0]", "model.widths"),
    ("model.widths=3", "must be a list"),
    ("model.convs_per_stage=0", "model.convs_per_stage=0"),
    ("model.growth=0", "model.growth=0"),
    ("model.hidden=[0]", "model.hidden"),
    ("model.dropout=1", "model.dropout=1"),
    ("model.dropout=-0.5", "model.dropout=-0.5"),
    ("model.batch_norm_momentum=0", "model.batch_norm_momentum=0"),
    ("model.whiten=true model.name=mlp", "model.whiten applies to model.name=cnn"),
    ("model.latent=1", "model.latent=1"),
    ("model.init=xavier", "model.init='xavier'"),
    ("model.activation=swish", "model.activation='swish'"),
    ("model.resnet_stem=big", "model.resnet_stem='big'"),
    ("model.stem=any_channel model.name=any_channel_cnn", "has the any-channel stem already"),
    ("model.stem=fused", "model.stem='fused'"),
    ("model.head_pool=max model.name=mlp", "model.head_pool=max applies to model.name=cnn with model.global_pool"),
    ("model.batch_norm_eps=0", "model.batch_norm_eps=0"),
    ("model.logit_scale=-1", "model.logit_scale=-1"),
    ("model.head_bias=false model.name=mlp", "model.head_bias=false applies to model.name=cnn"),
    ("model.init=dirac model.name=timm/resnet18", "model.init=dirac applies to the built-in models"),
    ("train.cpu_threads=0", "train.cpu_threads=0 must be >= 1"),
    ("model.stem_channels=0", "model.stem_channels=0"),
    ("data.drop_channels=0.3 model.name=cnn", "takes any subset of channels: model.stem=any_channel"),
    ("model.spectral_norm=true", "spectral_norm"),
    ("model.known_channels=[]", "model.known_channels"),
    # task
    ("task.name=segment", "task.name='segment'"),
    ("task.encoding=polar", "task.encoding='polar'"),
    ("task.clock_classes=7", "must divide 720"),
    ("task.label_smoothing=1", "task.label_smoothing=1"),
    ("task.tta_translate=-1", "task.tta_translate=-1"),
    ("task.vae_beta=-1", "task.vae_beta=-1"),
    ("task.name=generative", "does not go with model.name"),
    ("model.name=gan", "does not go with model.name"),
    ("task.tta_translate=16", "must be smaller than the 16x16 images"),
    # optim
    ("optim.name=lion", "optim.name='lion'"),
    ("optim.lr=0", "optim.lr=0.0 must be > 0"),
    ("optim.lr=-1", "optim.lr=-1.0 must be > 0"),
    ("optim.lr=.nan", "optim.lr=nan"),
    ("optim.lr=.inf", "optim.lr=inf"),
    ("optim.lr=fast", "must be a number"),
    ("optim.weight_decay=-1", "optim.weight_decay=-1.0"),
    ("optim.l1=-1", "optim.l1=-1.0"),
    ("optim.momentum=-2", "optim.momentum=-2.0"),
    ("optim.momentum=1", "optim.momentum=1.0"),
    ("optim.betas=[0.5]", "two decays"),
    ("optim.betas=[1,0.9]", "two decays"),
    ("optim.schedule=triangle", "optim.schedule='triangle'"),
    ("optim.warmup_steps=-1", "optim.warmup_steps=-1"),
    ("optim.step_epochs=0", "optim.step_epochs=0"),
    ("optim.step_gamma=-1", "optim.step_gamma=-1.0"),
    ("optim.step_gamma=0", "optim.step_gamma=0.0"),
    ("optim.step_gamma=2", "optim.step_gamma=2.0"),
    ("optim.peak_fraction=0", "optim.peak_fraction=0"),
    ("optim.start_factor=1.5", "optim.start_factor=1.5"),
    ("optim.end_factor=-0.1", "optim.end_factor=-0.1"),
    ("optim.groups.norms.lr_scale=2", "optim.groups names ['norms']; the kinds of parameter are weight, bias"),
    ("optim.groups.norm.lr_scale=0", "optim.groups.norm: lr_scale=0.0 must be > 0 (freeze a kind with epochs: 0)"),
    ("optim.groups.norm.lr=2", "unknown config key 'optim.groups.norm.lr'"),
    ("optim.groups.whitening.epochs=-1", "epochs=-1 must be >= 0"),
    ("optim.groups.norm=2", "optim.groups.norm must be a mapping"),
    ("optim.groups.norm.lr_scale=2 optim.layer_decay=0.7", "use one of them"),
    ("optim.grad_clip=-1", "optim.grad_clip=-1.0"),
    ("optim.grad_clip=0", "optim.grad_clip=0.0"),
    # train
    ("train.epochs=0", "train.epochs=0"),
    ("train.epochs=2.5", "must be an integer"),
    ("train.steps_per_epoch=0", "train.steps_per_epoch=0"),
    ("train.log_every=0", "train.log_every=0"),
    ("train.checkpoint_every=-1", "train.checkpoint_every=-1"),
    ("train.checkpoint_every=0", "train.checkpoint_every=0"),
    ("train.keep_top_k=0", "train.keep_top_k=0"),
    ("train.early_stopping_patience=-1", "early_stopping_patience=-1"),
    ("train.early_stopping_patience=0", "early_stopping_patience=0"),
    ("train.ema_decay=1", "train.ema_decay=1"),
    ("train.ema_decay=0", "train.ema_decay=0"),
    ("train.lookahead_every=0", "train.lookahead_every=0"),
    ("train.grad_accum_steps=0", "train.grad_accum_steps=0"),
    ("train.device=tpu", "train.device='tpu'"),
    ("train.mixed_precision=fp8", "train.mixed_precision='fp8'"),
    ("train.max_eval_batches=0", "train.max_eval_batches=0"),
    ("train.compile=sometimes", "must be true or false"),
    ("train.parallel=deepspeed", "train.parallel='deepspeed'"),
    ("train.parallel=fsdp train.ema_decay=0.99", "train.ema_decay is not supported with train.parallel=fsdp"),
    ("train.parallel=fsdp train.mixed_precision=fp16", "set train.mixed_precision=bf16"),
    ("train.async_checkpoint=true", "train.async_checkpoint needs train.parallel=fsdp"),
    ("model.sync_batchnorm=true", "model.sync_batchnorm=true needs GPUs"),
    ("train.parallel=fsdp model.sync_batchnorm=true", "model.sync_batchnorm goes with train.parallel=ddp"),
    ("train.parallel=fsdp optim.l1=0.01", "optim.l1 is not supported with train.parallel=fsdp"),
    # finetune, wandb, launch
    ("finetune.reinit_convs=-1", "finetune.reinit_convs=-1"),
    ("finetune.freeze=all", "finetune.freeze='all'"),
    ("wandb.mode=cloud", "wandb.mode='cloud'"),
    ("wandb.project=", "wandb.project=''"),
    ("wandb.project=a/b", "wandb.project='a/b'"),
    ("launch.nodes=0", "launch.nodes"),
    ("launch.gpus_per_node=-1", "launch.gpus_per_node"),
    ("launch.cpus_per_task=0", "launch.cpus_per_task"),
    ("launch.time_min=0", "launch.time_min"),
    ("launch.signal=USR9", "launch.signal=USR9 is not a signal name"),
    ("launch.signal_delay_s=0", "launch.signal_delay_s=0"),
    ("launch.executor=k8s", "launch.executor='k8s'"),
    # keys and syntax
    ("optim.learning_rate=1e-3", "did you mean 'optim.lr'"),
    ("data.shard=x", "did you mean 'data.shards'"),
    ("x.y=1", "unknown config key 'x'"),
    ("optim.lr", "not of the form key=value"),
    ("optim=1", "optim must be a mapping"),
]


def config_cases():
    for text, words in CONFIG_VALUES:
        if words is None:
            continue
        yield pytest.param(train(*text.split()), 2, [words], id=text)


DATA_CASES = [
    ("crop larger than the images", train("data.crop=64"), 2, ["data.crop=64 is larger than the 16x16 images"]),
    (
        "clock task on class shards",
        train("task.name=clock", "model.name=cnn", "model.widths=[8]"),
        2,
        ["task.name=clock needs clock shards"],
    ),
    ("classify on clock shards", train("data.shards={w}/clocks"), 2, ["task.name=classify needs class names"]),
    ("channel not in the shards", train("data.channels=[NIR]"), 2, ["['NIR'] not in these shards"]),
    (
        "a resampled batch larger than the set",
        train("data.batch_size=1000"),
        2,
        ["data.batch_size=1000 is larger than the", "training samples", "data.mode=exact"],
    ),
    ("no such shard folder", train("data.shards={w}/nowhere"), 1, ["no 'train' split"]),
    ("no val split", train("data.shards={w}/noval"), 1, ["no 'val' split", "--val-fraction"]),
    ("no such split", train("data.val_split=holdout"), 1, ["no 'holdout' split"]),
    ("truncated manifest", train("data.shards={w}/broken"), 1, ["train.manifest.json is not valid JSON"]),
    ("manifest missing a key", train("data.shards={w}/broken", "data.train_split=val"), 1, ["lacks samples"]),
    ("run dir is a file", ["train", DEMO, *RUN, "data.shards={w}/rgb", "--run-dir", "{w}/afile"], 2, ["not a folder"]),
    ("out dir is a file", train("run.out_dir={w}/afile"), 2, ["not a folder"]),
    (
        "resume with other widths",
        resume("model.name=cnn", "model.widths=[8]"),
        2,
        ["was started with another config", "model.name", "run.name=NEW"],
    ),
    ("resume with other hidden", resume("model.hidden=[32]"), 2, ["model.hidden ([16] -> [32])"]),
    ("resume with other shards", resume("data.shards={w}/gray"), 2, ["data.shards"]),
    ("resume with another lr", resume("optim.lr=0.5"), 2, ["optim.lr (0.002 -> 0.5)"]),
    ("resume with another seed", resume("run.seed=3"), 2, ["run.seed (0 -> 3)"]),
    ("missing config file", ["train", "{w}/nope.yaml"], 2, ["config file", "not found"]),
    ("config file is a list", ["train", "{w}/list.yaml"], 2, ["must hold a mapping"]),
    ("config file is not YAML", ["train", "{w}/bad.yaml"], 2, ["is not valid YAML"]),
]

COMMAND_CASES = [
    ("unknown command", ["fly"], 2, ["invalid choice: 'fly'"]),
    ("no command", [], 2, ["the following arguments are required"]),
    ("shards without --out", ["shards", "clocks"], 2, ["--out"]),
    ("shards of nothing", ["shards", "imagenet", "--out", "{w}/x"], 2, ["invalid choice: 'imagenet'"]),
    ("negative clock count", ["shards", "clocks", "--out", "{w}/c2", "--train", "-5"], 2, ["--train -5 must be >= 0"]),
    ("zero workers", ["shards", "clocks", "--out", "{w}/c2", "--workers", "0"], 2, ["--workers 0 must be >= 1"]),
    ("zero shard size", ["shards", "clocks", "--out", "{w}/c2", "--shard-size", "0"], 2, ["--shard-size 0"]),
    ("negative pack", ["shards", "{w}/images", "--out", "{w}/p", "--pack", "-1"], 2, ["--pack -1"]),
    ("shards --out a file", ["shards", "clocks", "--out", "{w}/afile"], 2, ["not a folder"]),
    (
        "val fraction over 1",
        ["shards", "{w}/images", "--out", "{w}/v", "--val-fraction", "2"],
        1,
        ["--val-fraction 2.0 must be between 0 and 1"],
    ),
    (
        "another val carve into a written folder",
        ["shards", "{w}/images", "--out", "{w}/rgb", "--val-fraction", "0.3"],
        1,
        ["already holds a 'train' split", "--val-fraction"],
    ),
    (
        "other settings into a written folder",
        ["shards", "{w}/images", "--out", "{w}/rgb", "--shard-size", "7"],
        1,
        ["already holds a 'train' split", "fresh --out"],
    ),
    ("unknown classes", ["shards", "{w}/images", "--out", "{w}/k", "--classes", "cat,dog"], 1, ["--classes cat,dog"]),
    ("shards with no source", ["shards", "--out", "{w}/c3"], 2, ["needs a SOURCE"]),
    ("index with nothing to index", ["shards", "index", "--out", "{w}/i"], 2, ["needs the shards to index"]),
    ("index a missing shard", ["shards", "index", "{w}/none-{{0..2}}.tar", "--out", "{w}/i"], 1, ["does not exist"]),
    ("index a folder without tars", ["shards", "index", "{w}/images", "--out", "{w}/i"], 1, ["holds no .tar shards"]),
    (
        "index with a bad label",
        ["shards", "index", "{w}/rgb", "--out", "{w}/i", "--label", "txt"],
        1,
        ["--label txt is not cls"],
    ),
    ("verify a folder without manifests", ["shards", "--verify", "--out", "{w}/images"], 1, ["no manifests"]),
    ("eval a non-run", ["eval", "{w}/images"], 1, ["is not a run dir"]),
    ("eval a split given as a path", ["eval", "{w}/runs/done", "--split", "../rgb/val"], 2, ["split '../rgb/val'"]),
    (
        "eval a run with no checkpoint yet",
        ["eval", "{w}/runs/unsaved"],
        1,
        ["no checkpoint", "nor any other", "train (or resume) the run"],
    ),
    (
        "eval a missing checkpoint",
        ["eval", "{w}/runs/done", "--checkpoint", "top-9.pt"],
        1,
        ["no checkpoint", "it has best.pt, last.pt", "--checkpoint"],
    ),
    (
        "eval a text file as checkpoint",
        ["eval", "{w}/runs/done", "--checkpoint", "../../../notes.pt"],
        1,
        ["is not a readable prismlab checkpoint"],
    ),
    ("eval a corrupt best.pt", ["eval", "{w}/runs/corrupt"], 1, ["is not a readable prismlab checkpoint"]),
    ("eval a missing split", ["eval", "{w}/runs/done", "--split", "holdout"], 1, ["no 'holdout' split"]),
    (
        "eval an RGB run on gray shards",
        ["eval", "{w}/runs/gray-eval", "--split", "test"],
        2,
        ["holds channels ['gray']", "trained on ['R', 'G', 'B']"],
    ),
    ("judge with a non-run", ["eval", "{w}/runs/done", "--judge", "{w}/images"], 1, ["not a run dir"]),
    ("samples without judge", ["eval", "{w}/runs/done", "--samples", "10"], 2, ["--samples goes with --judge"]),
    ("prior without judge", ["eval", "{w}/runs/done", "--prior", "mixture"], 2, ["--prior goes with --judge"]),
    (
        "fill without channel subsets",
        ["eval", "{w}/runs/done", "--fill", "duplicate"],
        2,
        ["--fill goes with --channel-subsets"],
    ),
    (
        "judge of a split",
        ["eval", "{w}/runs/done", "--judge", "{w}/runs/done", "--split", "val"],
        2,
        ["--judge evaluates samples of the run's prior, not a split: drop --split"],
    ),
    ("an argument that is no override", ["train", DEMO, "--run-dir", "{w}/r", "epochs"], 2, ["unrecognized arguments"]),
    ("status of a non-run", ["status", "{w}/images"], 1, ["is not a run dir"]),
    ("report of a non-sweep", ["report", "{w}/runs/done"], 1, ["is not a sweep dir"]),
    ("sweep file missing", ["sweep", "{w}/nope.yaml"], 2, ["not found"]),
    ("optuna: unknown sampler", ["sweep", "{w}/optuna-sampler.yaml"], 2, ["sampler: TPE is not an Optuna sampler"]),
    ("optuna: bad sampler args", ["sweep", "{w}/optuna-sampler-args.yaml"], 2, ["sampler_args", "n_startup"]),
    ("optuna: bad pruner args", ["sweep", "{w}/optuna-pruner-args.yaml"], 2, ["pruner_args", "warmup"]),
    ("optuna: when on a range", ["sweep", "{w}/optuna-when-range.yaml"], 2, ["must name a parameter with a list"]),
    ("optuna: a case missing", ["sweep", "{w}/optuna-missing-case.yaml"], 2, ["cases lacks ['adam']"]),
    ("optuna: log range from 0", ["sweep", "{w}/optuna-log-from-zero.yaml"], 2, ["log-scale range needs min > 0"]),
    ("optuna: min over max", ["sweep", "{w}/optuna-min-over-max.yaml"], 2, ["a range needs min < max"]),
    ("optuna: range of words", ["sweep", "{w}/optuna-text-range.yaml"], 2, ["optim.lr", "numbers"]),
    ("optuna: unknown key", ["sweep", "{w}/optuna-bad-key.yaml"], 2, ["did you mean 'optim.lr'"]),
    ("launch with a bad key", ["launch", DEMO, "launch.nodez=2"], 2, ["did you mean 'launch.nodes'"]),
    ("train --resume sometimes", ["train", DEMO, "--resume", "sometimes"], 2, ["invalid choice: 'sometimes'"]),
]


def case_params():
    yield from config_cases()
    for name, argv, code, words in DATA_CASES + COMMAND_CASES:
        yield pytest.param(argv, code, words, id=name)


def test_there_are_over_120_cases():
    assert len(list(case_params())) >= 120


@pytest.mark.parametrize("argv, code, words", list(case_params()))
def test_bad_input_is_one_line_and_changes_nothing(world, capsys, argv, code, words):
    before = file_snapshot(world)
    capsys.readouterr()
    assert main([a.format(w=world) for a in argv]) == code
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prismlab: error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    for word in words:
        assert word.format(w=world) in lines[0]
    assert file_snapshot(world) == before


@pytest.mark.parametrize("key", ["data.mean", "data.std"])
def test_a_refused_start_leaves_the_run_name_free_for_the_corrected_command(world, tmp_path, capsys, key):
    """Normalisation constants that do not fit the shards' channels are refused before the run dir
    holds a config.yaml, which would then refuse the corrected command as 'another config'."""
    run = [DEMO, *RUN, f"data.shards={world / 'rgb'}", f"run.out_dir={tmp_path}", "run.name=fixed"]
    capsys.readouterr()
    assert main(["train", *run, f"{key}=[0.5,0.5]"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{key}=[0.5, 0.5] has 2 values for the 3 channels" in err[0], err
    assert not (tmp_path / "fixed" / "config.yaml").exists()
    assert main(["train", *run, f"{key}=[0.5]"]) == 0


def test_a_finished_run_started_again_says_so_and_changes_nothing(world, capsys):
    """It said `resumed from step N` and validated again. The overrides come after --run-dir here,
    where argparse used to refuse them."""
    before = file_snapshot(world)
    capsys.readouterr()
    run_dir = world / "runs" / "done"
    assert main(["train", DEMO, "--run-dir", str(run_dir), *RUN, f"data.shards={world / 'rgb'}", "run.name=done"]) == 0
    out = capsys.readouterr().out
    assert f"run {world / 'runs' / 'done'} has already finished: 1 epochs, step 3" in out
    assert "to train it longer, run the same command with train.epochs=2 or more" in out
    assert file_snapshot(world) == before
