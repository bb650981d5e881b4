"""The `prismlab` command: help, one-line errors with exit codes, no tracebacks."""

import pytest

from prismlab.cli import main


@pytest.mark.parametrize("command", [[], ["shards"], ["train"], ["eval"]])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        main(command + ["--help"])
    assert info.value.code == 0
    assert "usage: prismlab" in capsys.readouterr().out


def one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("prismlab: error: ")
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


@pytest.mark.parametrize(
    "argv, words",
    [
        (["fly"], ["invalid choice: 'fly'"]),
        (["shards", "imagenet", "--out", "x"], ["invalid choice: 'imagenet'"]),
        (["shards", "clocks"], ["--out"]),
        (["train"], ["config"]),
        (["shards", "clocks", "--out", "x", "--train", "many"], ["--train", "many"]),
    ],
)
def test_bad_arguments_exit_2(argv, words, capsys):
    assert main(argv) == 2
    line = one_error_line(capsys)
    for word in words:
        assert word in line


def test_unknown_config_key_names_closest(tmp_path, capsys):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text("optim:\n  lr: 0.01\n")
    assert main(["train", str(cfg), "optim.learning_rate=3e-4"]) == 2
    line = one_error_line(capsys)
    assert "optim.learning_rate" in line and "optim.lr" in line


def test_unknown_key_in_yaml(tmp_path, capsys):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text("train:\n  epoch: 3\n")
    assert main(["train", str(cfg)]) == 2
    assert "did you mean 'train.epochs'" in one_error_line(capsys)


def test_missing_shards_is_one_line(tmp_path, capsys):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(f"data:\n  shards: {tmp_path / 'nothing'}\nwandb:\n  mode: disabled\n")
    assert main(["train", str(cfg), f"run.out_dir={tmp_path / 'runs'}"]) == 1
    line = one_error_line(capsys)
    assert "train" in line and "prismlab shards" in line


def test_eval_of_a_non_run(tmp_path, capsys):
    assert main(["eval", str(tmp_path)]) == 1
    assert "not a run dir" in one_error_line(capsys)


def test_bad_shard_options(tmp_path, capsys):
    assert main(["shards", "clocks", "--out", str(tmp_path), "--channels", "2"]) == 1
    assert "--channels 2" in one_error_line(capsys)
