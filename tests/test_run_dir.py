"""The run directory: refusals, metrics and their rewrite, checkpoints and pointers, samples written
whole (a killed write leaves the old file), the loss curve, reading the resume point, and not-the-writer."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from charrnn.checkpoint import list_checkpoints, load_checkpoint
from charrnn.data import Vocab
from charrnn.errors import CharrnnError
from charrnn.model import Model, ModelConfig
from charrnn.run_dir import RunDir, read_resume_point

VOCAB = Vocab.from_text("abc\n")


def model():
    return Model(ModelConfig("lstm", len(VOCAB), 4, 1), seed=0)


def save(run, iteration, val_loss, is_best, keep_last=0):
    meta = {"iteration": iteration, "val_loss": val_loss}
    return run.save_checkpoint(model(), VOCAB, meta, {}, val_loss, is_best, keep_last)


def test_a_fresh_run_refuses_a_directory_holding_checkpoints(tmp_path):
    run = RunDir(tmp_path / "run")
    run.prepare()
    save(run, 10, 2.5, True)
    with pytest.raises(CharrnnError, match="already holds checkpoints; continue it with --resume"):
        RunDir(tmp_path / "run")
    RunDir(tmp_path / "run", continuing=True)  # its own run may continue there


def test_prepare_makes_the_directory_or_says_why_it_cannot(tmp_path):
    run = RunDir(tmp_path / "a" / "run")
    assert not run.path.exists()  # nothing is made before prepare
    run.prepare()
    assert (run.path / "samples").is_dir() and list(run.path.iterdir()) == [run.path / "samples"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(CharrnnError, match="cannot write to the output directory .*; choose another --out"):
        RunDir(tmp_path / "file" / "run").prepare()


def test_checkpoints_move_the_pointers_and_keep_last_prunes(tmp_path):
    run = RunDir(tmp_path / "run")
    run.prepare()
    first = save(run, 10, 2.0, True)
    save(run, 20, 2.5, False, keep_last=1)
    last = save(run, 30, None, False, keep_last=1)
    assert [entry.path.name for entry in list_checkpoints(run.path)] == [first.name, last.name]  # best kept
    assert json.loads((run.path / "best.json").read_text())["file"] == first.name
    assert json.loads((run.path / "latest.json").read_text())["file"] == last.name == "ckpt_iter000030.npz"
    assert load_checkpoint(run.path, which="latest")[1]["iteration"] == 30


def test_metrics_are_appended_and_an_evaluation_is_on_disk_at_once(tmp_path):
    run = RunDir(tmp_path)
    run.log_step({"iter": 1, "train_loss": 3.0})
    run.log_evaluation({"iter": 1, "val_loss": 2.9})
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records == [{"iter": 1, "train_loss": 3.0}, {"eval": True, "iter": 1, "val_loss": 2.9}]
    run.close()


def test_forgetting_metrics_drops_later_and_torn_lines_in_one_rewrite(tmp_path):
    lines = [json.dumps({"iter": i, "train_loss": 1.0}) + "\n" for i in range(1, 6)]
    (tmp_path / "metrics.jsonl").write_text("".join(lines) + '{"iter": 6, "train_lo')
    run = RunDir(tmp_path)
    run.forget_metrics_after(3)
    assert (tmp_path / "metrics.jsonl").read_text() == "".join(lines[:3])
    run.forget_metrics_after(3)  # nothing to drop: left as it is
    assert (tmp_path / "metrics.jsonl").read_text() == "".join(lines[:3])
    assert [path.name for path in tmp_path.iterdir()] == ["metrics.jsonl"]  # no temporary file left


def test_a_sample_names_its_source(tmp_path):
    run = RunDir(tmp_path)
    run.prepare()
    path = run.write_sample(100, 1.23456, 1.5, 0.8, 77, "to be \udcff")
    assert path == tmp_path / "samples" / "iter_000100.txt"
    assert path.read_text(encoding="utf-8") == (
        "iteration 100, epoch 1.23, val loss 1.5000, temperature 0.8, seed 77\n" + "-" * 60 + "\nto be ?\n"
    )
    text = run.write_sample(300, 2.0, None, 1.0, 5, "x").read_text()
    assert text.startswith("iteration 300, epoch 2.00, temperature 1.0, seed 5\n")


def test_a_sample_write_killed_midway_leaves_the_old_file_whole(tmp_path):
    """The writing process kills itself once the new text is in the temporary file, before the rename."""
    run = RunDir(tmp_path)
    run.prepare()
    old = run.write_sample(500, 1.0, 2.0, 0.8, 1, "old text").read_bytes()
    child = textwrap.dedent(
        f"""
        import os, signal
        from charrnn.run_dir import RunDir
        os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)
        RunDir({str(tmp_path)!r}).write_sample(500, 1.0, 1.5, 0.8, 1, "new text " * 100000)
        """
    )
    result = subprocess.run([sys.executable, "-c", child], capture_output=True)
    assert result.returncode == -9, result.stderr
    assert (tmp_path / "samples" / "iter_000500.txt").read_bytes() == old
    leftovers = [name for name in os.listdir(tmp_path / "samples") if name != "iter_000500.txt"]
    assert leftovers and all(name.startswith(".iter_000500.txt.") for name in leftovers)  # the temp, not the file


def test_the_loss_curve_skips_a_torn_line(tmp_path):
    run = RunDir(tmp_path)
    for i in range(1, 4):
        run.log_step({"iter": i, "train_loss": 3.0 - i / 10})
    run.flush()
    with open(tmp_path / "metrics.jsonl", "a") as metrics:
        metrics.write('{"iter": 4, "tr')
    run.draw_loss_curve([{"iter": 3, "val_loss": 2.8}])
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    run.close()


def test_not_the_writer_writes_nothing(tmp_path):
    run = RunDir(tmp_path / "run", writer=False)
    run.prepare()
    run.log_step({"iter": 1, "train_loss": 3.0})
    run.log_evaluation({"iter": 1, "val_loss": 2.9})
    run.forget_metrics_after(0)
    assert save(run, 1, 2.9, True) is None
    assert run.write_sample(1, 0.0, 2.9, 0.8, 1, "text") is None
    run.draw_loss_curve([{"iter": 1, "val_loss": 2.9}])
    run.close()
    assert not run.path.exists()


def test_the_resume_point_is_the_latest_checkpoint_read_once(tmp_path):
    with pytest.raises(CharrnnError, match="--resume takes a run directory"):
        read_resume_point(tmp_path / "nowhere")
    run = RunDir(tmp_path)
    run.prepare()
    save(run, 10, 2.0, True)
    newest = save(run, 20, 2.2, False)
    point = read_resume_point(tmp_path, log=pytest.fail)
    assert point.path == newest and point.meta["iteration"] == 20 and "param/layer0.W_h" in point.arrays
    newest.unlink()
    said = []
    point = read_resume_point(tmp_path, log=said.append)
    assert point.meta["iteration"] == 10
    assert said == [
        f"warning: {tmp_path / 'latest.json'} names {newest.name}, which is gone; "
        "resuming from ckpt_iter000010_val2.0000.npz, the newest checkpoint left"
    ]
