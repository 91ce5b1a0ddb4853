"""Turn a checkpoint of the project's trainer into a Hugging Face Transformers model directory.

    python scripts/convert_to_hf.py runs/c3/final OUT            # a checkpoint (or a run: its newest)
    # then, after `import titans_core.hf`: AutoModelForCausalLM.from_pretrained("OUT")

The weights are copied bit for bit (same names: the Transformers model is the project's model); the
optimizer state (``trainer.pt``) stays behind. Outside formats are refused, saying why: there is no
faithful mapping from another architecture's weights onto this one.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

from titans_core.generation_config import GENERATION_CONFIG_FILE
from titans_core.model import CONFIG_FILE, TitansLM
from titans_core.tokenizer import TOKENIZER_FILE
from titans_core.train.checkpoint import checkpoint_dirs

CANNOT = {
    "titans-pytorch": (
        "a titans-pytorch (lucidrains) checkpoint: its MAC is not the paper's nor this project's (its own "
        "memory MLP and per-token hyperparameter projections, value-residual and hyper-connection "
        "streams, a different segment and persistent-memory layout), so its weights map onto no tensor "
        "here one to one; train this project's model instead"
    ),
    "other": (
        "a PyTorch file of another layout: its tensors have no names or shapes this model knows; only "
        "checkpoints written by `titans train` (config.json, model.safetensors, tokenizer.json) convert"
    ),
}
TITANS_PYTORCH_KEYS = ("neural_memories", "neural_mem", "longterm_mems")  # its MAC's parameter names


def checkpoint_of(source: Path) -> Path:
    """The checkpoint directory ``source`` names: itself, a run's ``final``, or a run's newest."""
    if (source / CONFIG_FILE).is_file():
        return source
    if (source / "final" / CONFIG_FILE).is_file():
        return source / "final"
    found = checkpoint_dirs(source)
    if found:
        return found[-1]
    raise SystemExit(refusal(source))


def refusal(source: Path) -> str:
    """Why ``source`` is not a checkpoint of this project's trainer, as plainly as can be told."""
    files = [p for p in source.rglob("*")] if source.is_dir() else [source]
    weights = [p for p in files if p.suffix in (".pt", ".pth", ".bin", ".ckpt") and p.is_file()]
    if weights:
        names = " ".join(tensor_names(weights[0]))
        kind = "titans-pytorch" if any(key in names for key in TITANS_PYTORCH_KEYS) else "other"
        return f"cannot convert {source}: {CANNOT[kind]}"
    config = source / CONFIG_FILE if source.is_dir() else None
    if config is not None and config.is_file():
        model_type = json.loads(config.read_text()).get("model_type")
        return f"cannot convert {source}: a {model_type!r} model, not a Titans checkpoint of this project"
    return f"cannot convert {source}: no config.json, model.safetensors and tokenizer.json of `titans train`"


def tensor_names(path: Path) -> list[str]:
    """The tensor names of a PyTorch file, read without running its code (``weights_only``)."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a file torch cannot read safely tells nothing more
        return []
    data = data.get("model", data.get("state_dict", data)) if isinstance(data, dict) else {}
    return [str(name) for name in data] if isinstance(data, dict) else []


def convert(source: Path, out: Path) -> Path:
    """Write the Transformers directory of checkpoint ``source`` into ``out``."""
    from titans_core.hf import TitansForCausalLM, TitansTokenizerFast

    checkpoint = checkpoint_of(source)
    try:
        titans = TitansLM.from_pretrained(checkpoint)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"{refusal(checkpoint)} ({error})") from error
    model = TitansForCausalLM.from_titans(titans)
    own = checkpoint / GENERATION_CONFIG_FILE
    tokenizer = TitansTokenizerFast(tokenizer_file=str(checkpoint / TOKENIZER_FILE))
    if not own.is_file():  # a trainer checkpoint has none: a turn ends at <|end|> (or end of text)
        model.generation_config.eos_token_id = [tokenizer.eos_token_id, tokenizer.pad_token_id]
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if own.is_file():
        shutil.copyfile(own, out / GENERATION_CONFIG_FILE)
    return checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", type=Path, help="a `titans train` checkpoint or run directory")
    parser.add_argument("out", type=Path, help="the Transformers model directory to write")
    args = parser.parse_args()
    if not args.source.exists():
        raise SystemExit(f"{args.source} does not exist")
    if not args.source.is_dir():
        raise SystemExit(refusal(args.source))
    checkpoint = convert(args.source, args.out)
    print(f"converted {checkpoint} -> {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
