"""Generation: greedy follows the model, sampling is reproducible, the state matches the transcript."""

import pytest
import torch

from titans_core import SamplingParams, TitansLM, generate
from titans_core.generation import _top_p, sample


def prompt(model, length=9):
    return torch.randint(0, model.config.vocab_size, (length,)).tolist()


def test_greedy_picks_the_argmax_of_a_one_shot_forward(model):
    ids = prompt(model)
    generation = generate(model, ids, max_new_tokens=12, temperature=0)
    produced = list(generation)
    with torch.inference_mode():
        logits, state = model(torch.tensor([ids + produced]))
    assert produced == logits[0, len(ids) - 1 : -1].argmax(-1).tolist()
    assert generation.finish_reason == "length" and generation.completion_tokens == 12
    assert generation.state.position == state.position == len(ids) + 12
    for name, tensor in state.named_tensors().items():
        assert (tensor - generation.state.named_tensors()[name]).abs().max() < 1e-4, name


def test_generation_continues_a_carried_state(model):
    first, rest = prompt(model, 6), prompt(model, 5)
    with torch.inference_mode():
        _, state = model(torch.tensor([first]))
    carried = list(generate(model, rest, state, max_new_tokens=6, temperature=0))
    fresh = list(generate(model, first + rest, max_new_tokens=6, temperature=0))
    assert carried == fresh


def test_sampling_is_deterministic_for_a_seed(model):
    ids = prompt(model)
    settings = dict(max_new_tokens=16, temperature=1.3, top_p=0.95, top_k=40)
    runs = [list(generate(model, ids, seed=seed, **settings)) for seed in (5, 5, 6)]
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_a_stop_token_is_yielded_and_ends_generation(model):
    ids = prompt(model)
    first = next(iter(generate(model, ids, max_new_tokens=1, temperature=0)))
    generation = generate(model, ids, max_new_tokens=20, temperature=0, stop_token_ids=[first])
    assert list(generation) == [first]
    assert generation.finish_reason == "stop" and generation.state.position == len(ids) + 1


def test_stopping_early_still_feeds_every_yielded_token(model):
    ids = prompt(model)
    generation = generate(model, ids, max_new_tokens=50, temperature=0)
    taken = [next(generation) for _ in range(3)]
    generation.close()
    assert generation.finish_reason is None
    assert generation.state.position == len(ids) + len(taken)


def test_zero_new_tokens_only_prefills(model):
    generation = generate(model, prompt(model, 4), max_new_tokens=0)
    assert list(generation) == [] and generation.state.position == 4


def test_top_k_one_and_tiny_top_p_are_greedy():
    logits = torch.randn(64, 50)
    greedy = logits.argmax(-1)
    assert torch.equal(sample(logits, SamplingParams(top_k=1)), greedy)
    assert torch.equal(sample(logits, SamplingParams(top_p=1e-6)), greedy)
    assert torch.equal(sample(logits, SamplingParams(top_p=5e-324)), greedy)  # 0.0 in float32


def test_top_k_and_top_p_only_ever_pick_the_allowed_tokens():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).expand(2000, 4)
    generator = torch.Generator().manual_seed(0)
    top_k = sample(logits, SamplingParams(top_k=2), generator)
    top_p = sample(logits, SamplingParams(top_p=0.9), generator)  # 0.5 + 0.3 < 0.9: three tokens
    assert set(top_k.tolist()) == {0, 1}
    assert set(top_p.tolist()) == {0, 1, 2}
    share = (top_k == 0).float().mean().item()
    assert abs(share - 0.5 / 0.8) < 0.05  # renormalised over the kept tokens


def test_draws_follow_the_distribution():
    logits = torch.randn(1, 20, generator=torch.Generator().manual_seed(1))
    draws = sample(logits.expand(40_000, 20), SamplingParams(), torch.Generator().manual_seed(2))
    frequencies = torch.bincount(draws, minlength=20) / draws.numel()
    assert (frequencies - logits.softmax(-1)[0]).abs().max() < 0.01  # 4 standard errors


@pytest.mark.parametrize("top_p", [0.3, 0.9, 0.999])
def test_top_p_keeps_what_sorting_the_whole_vocabulary_keeps(top_p):
    """Peaked rows are decided within the first tokens, flat ones need the full sort: both agree
    with the definition, every token whose more likely predecessors hold less than top_p."""
    generator = torch.Generator().manual_seed(3)
    scales = torch.logspace(-1, 1.5, 64).unsqueeze(-1)  # from nearly flat to sharply peaked
    logits = torch.randn(64, 500, generator=generator) * scales
    probabilities = logits.softmax(-1)
    ordered, order = probabilities.sort(dim=-1, descending=True)
    keep_sorted = (ordered.cumsum(-1) - ordered) < top_p
    expected = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    kept = _top_p(probabilities, top_p)
    assert torch.equal(kept > 0, expected)
    assert torch.allclose(kept, probabilities * expected / (probabilities * expected).sum(-1, keepdim=True))


@pytest.mark.parametrize(
    "settings, field",
    [
        (dict(temperature=-1), "temperature"),
        (dict(temperature=float("nan")), "temperature"),
        (dict(top_p=0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(top_k=-1), "top_k"),
        (dict(max_new_tokens=-1), "max_new_tokens"),
        (dict(seed="x"), "seed"),
        (dict(stop_token_ids=("a",)), "stop_token_ids"),
    ],
)
def test_bad_sampling_settings_are_refused(settings, field):
    with pytest.raises(ValueError, match=field):
        SamplingParams(**settings)


def test_an_empty_prompt_is_refused():
    with pytest.raises(ValueError, match="prompt"):
        generate(TitansLM.from_pretrained("tiny-random"), [])


def test_breaking_out_of_the_loop_still_leaves_yielded_tokens_in_the_state(model):
    ids = prompt(model, 3)
    generation = generate(model, ids, max_new_tokens=10, temperature=0)
    for _ in generation:
        break
    assert generation.state.position == 4
    assert next(generation) is not None and generation.state.position == 5


def test_a_tiny_temperature_is_greedy_not_an_overflow():
    logits = torch.randn(4, 30) * 50
    assert torch.equal(sample(logits, SamplingParams(temperature=1e-40)), logits.argmax(-1))


@pytest.mark.parametrize("settings", [{"temperature": 0.0}, {}, {"top_p": 0.9}, {"top_k": 5, "top_p": 0.5}])
def test_the_sampler_returns_ids_in_the_vocabulary_whatever_the_logits(settings):
    logits = torch.randn(6, 50)
    logits[0] = float("nan")
    logits[1, 7] = float("nan")
    logits[2] = float("-inf")
    logits[3, 3] = float("inf")
    logits[4] = float("inf")
    params = SamplingParams(max_new_tokens=1, **settings)
    for _ in range(20):
        ids = sample(logits, params)
        assert ids.shape == (6,) and bool(((ids >= 0) & (ids < 50)).all())
