"""save_pretrained round trips into the project and the server; the Trainer and PEFT train a Titans model."""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F
from openai import OpenAI
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

from titans_core import TitansLM
from titans_core.hf import TitansCache, TitansForCausalLM
from titans_core.model import SHIPPED

DEFAULT = SHIPPED / "default"


def test_save_pretrained_writes_what_the_project_transformers_and_the_server_load(tmp_path, start_server):
    model, tokenizer = AutoModelForCausalLM.from_pretrained(DEFAULT), AutoTokenizer.from_pretrained(DEFAULT)
    saved = tmp_path / "saved"
    model.save_pretrained(saved)
    tokenizer.save_pretrained(saved)
    original, written = load_file(DEFAULT / "model.safetensors"), load_file(saved / "model.safetensors")
    assert written.keys() == original.keys()
    assert all(written[k].dtype == v.dtype and torch.equal(written[k], v) for k, v in original.items())
    ours = TitansLM.from_pretrained(saved)
    assert ours.config == TitansLM.from_pretrained("default").config
    assert all(torch.equal(ours.state_dict()[k], v) for k, v in original.items())
    again = AutoModelForCausalLM.from_pretrained(saved)
    assert all(torch.equal(again.state_dict()[k], v) for k, v in original.items())
    assert json.loads((saved / "generation_config.json").read_text())["eos_token_id"] == [4, 0]

    server = start_server(None, "--model", str(saved))
    client = OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list().data][0] == "saved"
    message = [{"role": "user", "content": "Hello!"}]
    answer = client.chat.completions.create(model="saved", messages=message, temperature=0, max_tokens=30)
    prompt = tokenizer.apply_chat_template(message, add_generation_prompt=True)["input_ids"]
    out = model.generate(
        torch.tensor([prompt]), cache=TitansCache(), max_new_tokens=30, do_sample=False, eos_token_id=4
    )
    assert (
        tokenizer.decode(out[0, len(prompt) :], skip_special_tokens=True) == answer.choices[0].message.content
    )


def test_labels_give_the_plain_next_token_cross_entropy():
    model = TitansForCausalLM.from_titans("tiny-random")
    ids = torch.randint(0, 256, (2, 40))
    out = model(ids, labels=ids)
    expected = F.cross_entropy(out.logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
    torch.testing.assert_close(out.loss, expected)
    ignored = ids.clone()
    ignored[:, :20] = -100
    part = F.cross_entropy(out.logits[:, 19:-1].flatten(0, 1), ids[:, 20:].flatten())
    torch.testing.assert_close(model(ids, labels=ignored).loss, part)
    assert out.cache is None or out.loss.requires_grad


class Texts(torch.utils.data.Dataset):
    """One short sentence, byte-level tokens, many times: a loss that must fall in a few steps."""

    def __init__(self, count: int = 64):
        tokens = list(b"the cat sat on the mat.")
        self.item = torch.tensor(tokens)
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict:
        return {"input_ids": self.item, "labels": self.item}


def train(model, tmp_path, steps: int = 12, lr: float = 1e-2) -> list[float]:
    args = TrainingArguments(
        output_dir=str(tmp_path / "trainer"),
        max_steps=steps,
        per_device_train_batch_size=2,
        learning_rate=lr,
        logging_steps=3,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=Texts())
    trainer.train()
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def test_a_short_trainer_run_lowers_the_loss(tmp_path):
    model = TitansForCausalLM.from_titans("tiny-random")
    losses = train(model, tmp_path)
    assert len(losses) >= 4 and losses[-1] < 0.8 * losses[0]


def test_a_lora_adapter_on_the_attention_projections_trains_alone(tmp_path):
    model = TitansForCausalLM.from_titans("tiny-random")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["attention.to_qkv", "attention.to_out"])
    peft = get_peft_model(model, config)
    trainable = [name for name, p in peft.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name and ".attention." in name for name in trainable)
    losses = train(peft, tmp_path, lr=3e-2)
    assert losses[-1] < 0.95 * losses[0]
    ids = torch.tensor([list(b"the cat sat on the mat. the cat")])
    with torch.no_grad():
        adapted = peft(ids).logits
        merged = peft.merge_and_unload()
        torch.testing.assert_close(merged(ids).logits, adapted, rtol=1e-4, atol=1e-4)
    changed = [k for k, v in merged.state_dict().items() if not torch.equal(v, before[k])]
    assert changed and all(".attention." in k for k in changed)
