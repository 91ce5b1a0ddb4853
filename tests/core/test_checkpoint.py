"""Checkpoints: save_pretrained / from_pretrained round trips, presets, and named defects."""

import random

import pytest
import torch
from safetensors.torch import load_file, save_file

from titans_core import TitansLM, generate


def test_round_trip_gives_the_same_model_and_tokenizer(model, tmp_path):
    model.save_pretrained(tmp_path / "checkpoint")
    assert sorted(p.name for p in (tmp_path / "checkpoint").iterdir()) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
    ]
    loaded = TitansLM.from_pretrained(tmp_path / "checkpoint")
    tokens = torch.randint(0, model.config.vocab_size, (1, 20))
    with torch.inference_mode():
        assert torch.equal(model(tokens)[0], loaded(tokens)[0])
    assert loaded.config == model.config
    assert loaded.tokenizer.encode("hello") == model.tokenizer.encode("hello")


def test_tiny_random_is_seeded_and_leaves_the_global_generator_alone():
    torch.manual_seed(1)
    expected_next = torch.rand(1)
    torch.manual_seed(1)
    a, b = TitansLM.from_pretrained("tiny-random"), TitansLM.from_pretrained("tiny-random")
    assert torch.equal(torch.rand(1), expected_next)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name


def test_a_directory_that_is_no_checkpoint_names_the_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json, model.safetensors, tokenizer.json"):
        TitansLM.from_pretrained(tmp_path)


@pytest.mark.parametrize("defect", ["missing", "unexpected", "mis-shaped"])
def test_weights_that_do_not_fit_are_named(model, tmp_path, defect):
    model.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    if defect == "missing":
        del weights["norm.weight"]
    elif defect == "unexpected":
        weights["bonus.weight"] = torch.zeros(2)
    else:
        weights["norm.weight"] = torch.zeros(3)
    save_file(weights, tmp_path / "model.safetensors")
    named = "bonus.weight" if defect == "unexpected" else "norm.weight"
    with pytest.raises(ValueError, match=rf"{defect}[^,]*{named}"):
        TitansLM.from_pretrained(tmp_path)


def test_corrupt_files_are_refused(model, tmp_path):
    model.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(ValueError, match="not a valid safetensors"):
        TitansLM.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"variant": "MAC", "d_model": 33}')
    with pytest.raises(ValueError, match="n_heads"):
        TitansLM.from_pretrained(tmp_path)


FILLER = (
    "Now is the winter of our discontent made glorious summer by this sun of York; and all the "
    "clouds that lour'd upon our house in the deep bosom of the ocean buried.\n"
    "Now are our brows bound with victorious wreaths; our bruised arms hung up for monuments; our "
    "stern alarums changed to merry meetings, our dreadful marches to delightful measures.\n"
    "Grim-visaged war hath smooth'd his wrinkled front; and now, instead of mounting barded steeds "
    "to fright the souls of fearful adversaries, he capers nimbly in a lady's chamber.\n"
    "But I, that am not shaped for sportive tricks, nor made to court an amorous looking-glass; I, "
    "that am rudely stamp'd, and want love's majesty to strut before a wanton ambling nymph.\n"
)


@pytest.mark.parametrize("name", ["default", "shakespeare"])
def test_shipped_checkpoints_are_small_trained_and_carded(name):
    from titans_core.model import shipped

    directory = shipped(name)
    assert directory is not None and (directory / "README.md").is_file()  # the model card
    shipped_bytes = sum(f.stat().st_size for f in directory.iterdir())
    assert shipped_bytes <= 16 * 2**20
    model = TitansLM.from_pretrained(name).eval()
    assert model.tokenizer.vocab_size == model.config.vocab_size > 256  # its own BPE, not the byte fallback
    tokens = torch.tensor([model.tokenizer.encode("ROMEO. What light through yonder window breaks?")])
    with torch.inference_mode():
        logits, state = model(tokens)
    assert torch.isfinite(logits).all() and state.position == tokens.shape[1]
    assert shipped("../default") is None and shipped("/etc") is None  # bare names only


def recalled(model: TitansLM, filler: str, trials: int = 5) -> tuple[int, int]:
    """Fresh passkeys in the documented prompt format, greedy replies: (right, filler tokens)."""
    from titans_core.train import passkey_document, passkey_messages, random_passkey

    rng = random.Random()
    right = 0
    for _ in range(trials):
        passkey = random_passkey(rng)
        document = model.tokenizer.encode(passkey_document(passkey, filler))
        with torch.inference_mode():
            _, state = model(torch.tensor([document]))
        prompt = model.tokenizer.encode_chat(passkey_messages())
        reply = generate(model, prompt, state=state, max_new_tokens=8, temperature=0)
        right += passkey in model.tokenizer.decode(list(reply))
    return right, len(model.tokenizer.encode(filler))


def test_the_shipped_default_recalls_a_passkey_from_its_memory():
    """What its model card claims: the question comes segments after the passkey, which attention
    cannot see, so only the neural memory can answer."""
    model = TitansLM.from_pretrained("default").eval()
    right, distance = recalled(model, FILLER, trials=20)
    assert distance > 3 * model.config.segment_size
    # It recalls about 7 in 8 here (35 of 40 measured; a guess is right once in 10^5). Asking for
    # more than half of 20 fails about one run in 20,000; the old 4 of 5 failed one run in 8.
    assert right >= 11, f"{right} of 20 passkeys recalled {distance} tokens back"


def test_the_shakespeare_model_recalls_inside_its_attention_span():
    model = TitansLM.from_pretrained("shakespeare").eval()
    near, distance = recalled(model, FILLER.split("\n")[0] + "\n")
    assert distance < model.config.segment_size / 2 and near >= 4, f"{near} of 5 recalled"
