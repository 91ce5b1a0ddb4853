"""scripts/convert_to_hf.py: a trainer checkpoint becomes a Transformers model; others are refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import titans_core.hf  # noqa: F401  (registers the "titans" model type)
from titans_core import TitansLM
from titans_core.train.checkpoint import save_checkpoint

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "convert_to_hf.py"


def convert(*args: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=300
    )


def test_a_trainer_checkpoint_converts_bit_for_bit(tmp_path):
    model = TitansLM.from_pretrained("tiny-random")
    optimizer = torch.optim.AdamW(model.parameters())
    run = tmp_path / "run"
    save_checkpoint(run, model, optimizer, step=7, tokens=100, seconds=1.0, info={}, keep=2)
    done = convert(run, tmp_path / "hf")
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "hf" / "trainer.pt").exists()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert loaded.generation_config.eos_token_id == [tokenizer.eos_token_id, tokenizer.pad_token_id]
    chat = [{"role": "user", "content": "hi <|end|>"}]
    assert tokenizer.apply_chat_template(chat)["input_ids"] == model.tokenizer.encode_chat(chat, False)


def test_outside_formats_are_refused_saying_why(tmp_path):
    lucidrains = tmp_path / "titans-pytorch"
    lucidrains.mkdir()
    torch.save({"neural_memories.0.memory_model.weights.0": torch.zeros(2)}, lucidrains / "mac.pt")
    refused = convert(lucidrains, tmp_path / "out")
    assert refused.returncode != 0 and "titans-pytorch" in refused.stderr
    other = tmp_path / "other"
    other.mkdir()
    torch.save({"encoder.weight": torch.zeros(2)}, other / "pytorch_model.bin")
    assert "another layout" in convert(other, tmp_path / "out").stderr
    llama = tmp_path / "llama"
    llama.mkdir()
    (llama / "config.json").write_text('{"model_type": "llama"}')
    assert "'llama' model" in convert(llama, tmp_path / "out").stderr
