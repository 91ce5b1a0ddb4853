"""Checkpoints: save_pretrained / from_pretrained round trips, presets, and named defects."""

import random
import re

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


def test_the_shipped_default_is_small_trained_and_carded():
    from titans_core.model import shipped

    name = "default"
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
    assert state.nbytes() <= 2 * 2**20  # a session's state, mid-segment
    checkpoints = sorted(p.name for p in directory.parent.iterdir() if shipped(p.name) is not None)
    assert checkpoints == ["default"]  # tiny-random ships only its tokenizer: its weights are seeded
    assert shipped("../default") is None and shipped("/etc") is None  # bare names only


def say(model: TitansLM, state, message: str) -> tuple[str, object]:
    """One chat call as the server makes it: the message, a greedy reply, then <|end|> and a newline."""
    tokenizer = model.tokenizer
    prompt = tokenizer.encode_chat([{"role": "user", "content": message}])
    reply = generate(
        model, prompt, state, max_new_tokens=24, temperature=0, stop_token_ids=[tokenizer.end_of_turn_id]
    )
    ids = list(reply)
    closing = [] if ids and ids[-1] == tokenizer.end_of_turn_id else [tokenizer.end_of_turn_id]
    with torch.inference_mode():
        _, state = model(torch.tensor([closing + tokenizer.encode("\n")]), reply.state)
    return tokenizer.decode(ids), state


def test_the_shipped_default_recalls_a_number_told_calls_before():
    """What its model card claims: a locker code told in chat, then calls of small talk and a
    passage taking the conversation segments past it, where attention cannot see it."""
    model = TitansLM.from_pretrained("default").eval()
    rng, right = random.Random(torch.initial_seed()), 0  # the seed a failure report names
    for _ in range(20):
        code = str(rng.randrange(1000, 10000))
        _, state = say(model, None, f"My locker code is {code}.")
        told = state.position
        for message in ("Hello!", "Here is a passage I like:\n" + FILLER, "How are you today?"):
            _, state = say(model, state, message)
        assert state.position - told > 4 * model.config.segment_size
        answer, _ = say(model, state, "What is my locker code?")
        right += code in answer
    # 51 of 60 measured (about 288 tokens apart); the question alone, 0 of 20. At least 12 of 20
    # fails about one run in 10,000.
    assert right >= 12, f"{right} of 20 locker codes recalled"


@pytest.mark.parametrize("prompt", ["Hello!", "How are you today?", "What is the capital of France?"])
def test_the_shipped_default_answers_chat_in_words(prompt):
    model = TitansLM.from_pretrained("default").eval()
    ids = model.tokenizer.encode_chat([{"role": "user", "content": prompt}])
    end = model.tokenizer.end_of_turn_id
    reply = model.tokenizer.decode(
        list(generate(model, ids, max_new_tokens=32, temperature=0, stop_token_ids=[end]))
    )
    assert re.search(r"[A-Za-z]{2,}", reply) and not re.fullmatch(r"[\d\s.]*", reply), reply
