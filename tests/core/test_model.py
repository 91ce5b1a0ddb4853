"""TitansLM, every variant on random weights: the properties of DESIGN.md §3 and input checks."""

import pytest
import torch

from titans_core import TitansConfig, TitansLM
from titans_core.attention import rotary_table, rotate


def run_in_pieces(model, tokens, cuts, state=None):
    outputs = []
    for start, end in zip([0, *cuts], [*cuts, tokens.shape[1]]):
        logits, state = model(tokens[:, start:end], state)
        outputs.append(logits)
    return torch.cat(outputs, dim=1), state


def max_state_difference(a, b) -> float:
    assert a.position == b.position
    named_a, named_b = a.named_tensors(), b.named_tensors()
    assert named_a.keys() == named_b.keys()
    return max((named_a[k] - named_b[k]).abs().max().item() for k in named_a if named_a[k].numel())


def random_tokens(model, batch, length):
    return torch.randint(0, model.config.vocab_size, (batch, length))


def test_one_shot_random_splits_and_token_by_token_agree(model):
    tokens = random_tokens(model, 2, 43)
    with torch.inference_mode():
        once, state_once = model(tokens)
        cuts = sorted(torch.randperm(42)[:7].add(1).tolist())
        split, state_split = run_in_pieces(model, tokens, cuts)
        stepped, state_stepped = run_in_pieces(model, tokens, list(range(1, 43)))
    assert once.shape == (2, 43, 300) and state_once.position == 43
    assert (once - split).abs().max() < 1e-4 and (once - stepped).abs().max() < 1e-4
    assert max_state_difference(state_once, state_split) < 1e-4
    assert max_state_difference(state_once, state_stepped) < 1e-4


def test_write_strengths_are_recorded_alike_in_one_call_in_pieces_and_decoding(model):
    """Per token, one value per session: the size of the memory's write, averaged over layers and heads."""
    tokens = random_tokens(model, 2, 43)
    with torch.inference_mode(), model.recording_writes() as writes:
        _, state = model(tokens)
        once = writes.strengths()
        run_in_pieces(model, tokens, [5, 16, 17])
        pieces = writes.strengths()
        states = [model(tokens[row : row + 1, :30])[1] for row in range(2)]
        writes.strengths()
        model.decode(tokens[:, 30], states)
        decoded = writes.strengths()
    assert once.shape == (2, 43) and (once > 0).all()
    assert (once - pieces).abs().max() < 1e-6
    assert decoded.shape == (2, 1) and (decoded[:, 0] - once[:, 30]).abs().max() < 1e-6
    assert all(layer.memory.on_write is None for layer in model.layers)  # recording ends with the block


def test_long_inputs_go_in_pieces_with_the_same_result(model):
    tokens = random_tokens(model, 1, 50)
    with torch.inference_mode():
        once, state_once = model(tokens)
        model.piece_tokens = 7
        pieced, state_pieced = model(tokens)
    assert (once - pieced).abs().max() < 1e-4
    assert max_state_difference(state_once, state_pieced) < 1e-4


def test_changing_a_token_never_changes_earlier_outputs(model):
    tokens = random_tokens(model, 1, 30)
    changed = tokens.clone()
    changed[0, 17] = (tokens[0, 17] + 1) % model.config.vocab_size
    with torch.inference_mode():
        before, _ = model(tokens)
        after, _ = model(changed)
    assert torch.equal(before[:, :17], after[:, :17])
    assert (before[:, 17:] - after[:, 17:]).abs().max() > 1e-6


def test_memory_reaches_beyond_two_attention_windows(model):
    """A token far outside every attention span and convolution still moves the last logits."""
    config = model.config
    span = config.segment_size if config.variant == "MAC" else config.window
    reach_without_memory = config.n_layers * (span + config.conv_kernel)
    tokens = random_tokens(model, 1, reach_without_memory + 2 * span)
    changed = tokens.clone()
    changed[0, 0] = (tokens[0, 0] + 1) % config.vocab_size
    with torch.inference_mode():
        before, _ = model(tokens, logits="last")
        after, _ = model(changed, logits="last")
    assert (before - after).abs().max() > 1e-5


def test_a_sample_does_not_depend_on_its_batch(model):
    tokens = random_tokens(model, 3, 21)
    with torch.inference_mode():
        batched, state = model(tokens)
        alone, state_alone = model(tokens[1:2])
    assert (batched[1:2] - alone).abs().max() < 1e-5
    assert max_state_difference(state.unstack()[1], state_alone) < 1e-5


def test_last_and_no_logits_keep_the_state_and_save_the_work(model):
    tokens = random_tokens(model, 2, 19)
    with torch.inference_mode():
        every, state = model(tokens)
        last, state_last = model(tokens, logits="last")
        none, state_none = model(tokens, logits="none")
    assert (last - every[:, -1:]).abs().max() < 1e-6 and none is None
    assert max_state_difference(state, state_last) == 0 == max_state_difference(state, state_none)


def test_an_empty_input_returns_the_state_unchanged(model):
    with torch.inference_mode():
        _, state = model(random_tokens(model, 1, 5))
        logits, after = model(torch.zeros(1, 0, dtype=torch.int64), state)
    assert logits.shape == (1, 0, 300) and after.position == 5


def test_gradients_reach_every_parameter(model):
    tokens = random_tokens(model, 2, 20)
    logits, _ = model(tokens[:, :-1])
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        if "persistent" not in name or model.config.n_persistent:
            assert parameter.grad.abs().max() > 0, name


def test_rotary_scores_depend_on_distance_only_even_at_huge_positions():
    """A float32 model's key cached at position 10^9 scores as one at position 10 (float64 angles)."""
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)

    def at(x, position):
        return rotate(x, rotary_table(torch.tensor([position]), 16, 10000.0, x))

    near = (at(q, 13) * at(k, 10)).sum()
    far = (at(q, 10**9 + 3) * at(k, 10**9)).sum()
    assert abs(near - far) < 1e-5


@pytest.mark.parametrize(
    "tokens, message",
    [
        (torch.zeros(1, 3), "int64"),
        (torch.zeros(3, dtype=torch.int64), r"\[B, T\]"),
        (torch.full((1, 3), 300), "token ids"),
        (torch.full((1, 3), -1), "token ids"),
    ],
)
def test_bad_tokens_are_refused(small_config, tokens, message):
    with pytest.raises(ValueError, match=message):
        TitansLM(small_config("MAC"))(tokens)


def test_states_of_another_batch_or_config_are_refused(small_config, variant):
    model = TitansLM(small_config(variant))
    other = TitansLM(small_config(variant, chunk_size=2))
    with torch.inference_mode():
        _, state = model(torch.zeros(2, 5, dtype=torch.int64))
        with pytest.raises(ValueError, match="batch of 1"):
            model(torch.zeros(1, 1, dtype=torch.int64), state)
        with pytest.raises(ValueError, match="config"):
            other(torch.zeros(2, 1, dtype=torch.int64), state)
        with pytest.raises(ValueError, match="logits"):
            model(torch.zeros(2, 1, dtype=torch.int64), state, logits="first")


def test_a_tokenizer_larger_than_the_vocabulary_is_refused(small_config):
    with pytest.raises(ValueError, match="vocab_size"):
        TitansLM(small_config("MAC", vocab_size=100))


@pytest.mark.parametrize("stream", ["random", "one token repeated"])
def test_the_default_model_stays_finite_on_long_streams(stream):
    """Correlated keys (a repeated token) are the hard case for chunked updates: no blow-up at init."""
    model = TitansLM(TitansConfig()).eval()
    tokens = torch.randint(0, 4096, (1, 2048)) if stream == "random" else torch.full((1, 2048), 7)
    with torch.inference_mode():
        logits, state = model(tokens, logits="last")
    assert torch.isfinite(logits).all()
    assert all(torch.isfinite(t).all() for t in state.named_tensors().values())


def test_decode_batches_sessions_at_different_positions_exactly(model):
    """The engine's step: sessions mid-chunk, at boundaries, mid-segment, fresh, decoded together for
    many steps, equal one forward call per session every step."""
    vocab = model.config.vocab_size
    lengths = [0, 1, 3, 4, 7, 8, 13, 16, 21]
    with torch.inference_mode():
        states = [model(torch.randint(0, vocab, (1, n)))[1] if n else model.initial_state(1) for n in lengths]
        alone = list(states)
        for _ in range(12):
            tokens = torch.randint(0, vocab, (len(states),))
            logits, states = model.decode(tokens, states)
            for row in range(len(states)):
                expected, alone[row] = model(tokens[row].view(1, 1), alone[row])
                assert (expected[0, -1] - logits[row]).abs().max() < 1e-5
                assert max_state_difference(alone[row], states[row]) < 1e-5


def test_decoding_again_from_earlier_states_leaves_the_later_ones_intact(model):
    """Decode steps reuse the batch's stacked tensors, updated in place; a retried request (a step
    again from states that were already continued) must neither see nor change the other continuation."""
    vocab = model.config.vocab_size
    with torch.inference_mode():
        states = [model(torch.randint(0, vocab, (1, n)))[1] for n in (3, 6, 13)]
        for _ in range(3):
            _, states = model.decode(torch.randint(0, vocab, (3,)), states)
        tokens = torch.randint(0, vocab, (3,))
        first_logits, first = model.decode(tokens, states)
        kept = [s.map(torch.clone) for s in first]
        other_logits, _ = model.decode(torch.randint(0, vocab, (3,)), states)
        again_logits, _ = model.decode(tokens, states)
        assert (again_logits - first_logits).abs().max() < 1e-6  # the same step again: the same numbers
        assert (other_logits - first_logits).abs().max() > 1e-3
        assert all(max_state_difference(a, b) == 0 for a, b in zip(first, kept))


def test_decode_refuses_mismatched_inputs(model):
    state = model.initial_state(1)
    with pytest.raises(ValueError, match="one state each"):
        model.decode(torch.zeros(2, dtype=torch.int64), [state])
    with pytest.raises(ValueError, match="batch of 1"):
        model.decode(torch.zeros(1, dtype=torch.int64), [model.initial_state(2)])
