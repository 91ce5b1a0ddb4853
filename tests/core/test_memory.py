"""NeuralMemory: streaming equals one shot, causal, reaches far back, batch-independent."""

import pytest
import torch

from titans_core.memory import MemoryState, NeuralMemory


def make_memory(dtype=torch.float32, **overrides):
    settings = dict(dim=24, heads=2, depth=2, expansion=2, chunk_size=8, max_lr=0.2) | overrides
    return NeuralMemory(**settings).to(dtype)


def run_in_pieces(memory, x, cuts):
    outputs, state = [], None
    for start, end in zip([0, *cuts], [*cuts, x.shape[1]]):
        y, state = memory(x[:, start:end], state)
        outputs.append(y)
    return torch.cat(outputs, dim=1), state


def assert_states_close(a: MemoryState, b: MemoryState, atol):
    assert a.position == b.position
    assert (a.open_chunk is None) == (b.open_chunk is None)
    for x, y in zip(a.tensors(), b.tensors(), strict=True):
        assert x.shape == y.shape
        assert x.numel() == 0 or (x - y).abs().max() <= atol


@pytest.mark.parametrize("momentum", [True, False])
@pytest.mark.parametrize("decay", [True, False])
def test_random_splits_and_token_by_token_equal_one_shot(momentum, decay):
    memory = make_memory(use_momentum=momentum, use_decay=decay)
    x = torch.randn(2, 45, 24)
    with torch.inference_mode():
        y_once, state_once = memory(x)
        cuts = sorted(torch.randperm(44)[:6].add(1).tolist())
        y_split, state_split = run_in_pieces(memory, x, cuts)
        y_tokens, state_tokens = run_in_pieces(memory, x, list(range(1, 45)))
    assert state_once.position == 45 and state_once.open_chunk.length == 45 % 8
    for y, state in ((y_split, state_split), (y_tokens, state_tokens)):
        assert (y - y_once).abs().max() < 1e-4
        assert_states_close(state, state_once, 1e-4)


def test_continuing_after_a_chunk_boundary_split():
    memory = make_memory()
    x = torch.randn(1, 40, 24)
    with torch.no_grad():
        y_once, _ = memory(x)
        y_split, state = run_in_pieces(memory, x, [16, 24])
    assert (y_split - y_once).abs().max() < 1e-4


def test_outputs_are_causal():
    memory = make_memory(dtype=torch.float64)
    x = torch.randn(1, 40, 24, dtype=torch.float64)
    changed = x.clone()
    changed[:, 21] += torch.randn(24, dtype=torch.float64)
    with torch.no_grad():
        y, _ = memory(x)
        y_changed, _ = memory(changed)
    assert torch.equal(y[:, :21], y_changed[:, :21])
    assert (y[:, 21] - y_changed[:, 21]).abs().max() > 1e-3


def test_a_change_at_token_zero_reaches_far_beyond_the_convolution():
    memory = make_memory(dtype=torch.float64)
    x = torch.randn(1, 300, 24, dtype=torch.float64)
    changed = x.clone()
    changed[:, 0] = torch.randn(24, dtype=torch.float64)
    with torch.no_grad():
        y, _ = memory(x)
        y_changed, _ = memory(changed)
    # Token 299 is 37 chunks and ~75 convolution spans after token 0: only the memory links them.
    assert (y[:, 299] - y_changed[:, 299]).abs().max() > 1e-6


def test_samples_do_not_depend_on_each_other():
    memory = make_memory()
    x = torch.randn(3, 30, 24)
    with torch.no_grad():
        y_batch, state_batch = memory(x)
        for i in range(3):
            y_alone, state_alone = memory(x[i : i + 1])
            assert (y_batch[i : i + 1] - y_alone).abs().max() < 1e-5
            assert_states_close(state_batch.map(lambda t, i=i: t[i : i + 1]), state_alone, 1e-5)


def storage_bytes(state):
    """What the state really keeps alive: every distinct storage behind its tensors."""
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in state.tensors()}
    return sum(storages.values())


def test_state_size_stays_flat_as_the_stream_grows():
    memory = make_memory()
    with torch.no_grad():
        _, short = memory(torch.randn(1, 16, 24))
        _, long = memory(torch.randn(1, 160, 24))
        _, mid_chunk = memory(torch.randn(1, 163, 24))
    assert short.nbytes() == long.nbytes()
    assert mid_chunk.open_chunk.length == 3 and mid_chunk.nbytes() > long.nbytes()
    # No tensor of the state is a view pinning the call's larger intermediates.
    assert storage_bytes(long) == long.nbytes()
    assert storage_bytes(mid_chunk) == mid_chunk.nbytes()


def test_training_gets_gradients_for_every_parameter():
    memory = make_memory()
    x = torch.randn(2, 20, 24, requires_grad=True)
    y, state = memory(x)
    (y.square().mean() + sum(w.square().mean() for w in state.weights)).backward()
    for name, parameter in memory.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().max() > 0, name
    assert x.grad.abs().max() > 0


@pytest.mark.parametrize(
    "x, name",
    [
        (torch.randn(20, 24), "x"),
        (torch.randn(1, 20, 23), "x"),
        (torch.ones(1, 20, 24, dtype=torch.long), "x"),
    ],
)
def test_bad_input_raises_value_error(x, name):
    with pytest.raises(ValueError, match=name):
        make_memory()(x)


def test_a_state_of_another_batch_size_is_refused():
    memory = make_memory()
    with torch.no_grad():
        _, state = memory(torch.randn(2, 5, 24))
        with pytest.raises(ValueError, match="batch"):
            memory(torch.randn(3, 5, 24), state)


def test_a_state_of_another_chunk_size_is_refused():
    # Chunk boundaries would silently move: the outputs would be wrong without any error.
    with torch.no_grad():
        _, state = make_memory(chunk_size=8)(torch.randn(1, 13, 24))
        with pytest.raises(ValueError, match="chunk_size"):
            make_memory(chunk_size=16)(torch.randn(1, 5, 24), state)


def test_input_of_another_dtype_than_the_parameters_is_refused():
    with pytest.raises(ValueError, match="x must be torch.float32"):
        make_memory()(torch.randn(1, 5, 24, dtype=torch.float64))


def test_empty_input_returns_empty_output_and_the_same_state():
    memory = make_memory()
    with torch.no_grad():
        _, state = memory(torch.randn(2, 5, 24))
        y, same = memory(torch.randn(2, 0, 24), state)
    assert y.shape == (2, 0, 24) and same.position == 5
    assert_states_close(same, state, 0)


def test_training_works_after_inference_mode_calls():
    # Inference tensors must not leak into later autograd graphs (e.g. through cached masks).
    memory = make_memory()
    with torch.inference_mode():
        memory(torch.randn(1, 30, 24))
    y, _ = memory(torch.randn(1, 30, 24))
    y.sum().backward()
    assert memory.to_inputs.weight.grad is not None


@pytest.mark.parametrize("settings", [{"head_dim": 5}, {"conv_kernel": 1}, {"depth": 1}, {"depth": 3}])
def test_other_shapes_stream_exactly(settings):
    memory = make_memory(**settings)
    x = torch.randn(1, 20, 24)
    with torch.inference_mode():
        y_once, state_once = memory(x)
        y_split, state_split = run_in_pieces(memory, x, [3, 4, 11])
    assert y_once.shape == (1, 20, 24)
    assert (y_split - y_once).abs().max() < 1e-4
    assert_states_close(state_split, state_once, 1e-4)


@pytest.mark.parametrize(
    "settings, name",
    [
        ({"dim": 24, "heads": 5}, "heads"),
        ({"dim": 24, "chunk_size": 0}, "chunk_size"),
        ({"dim": 24, "depth": 0}, "depth"),
        ({"dim": 24, "max_lr": 0.0}, "max_lr"),
    ],
)
def test_bad_settings_raise_value_error(settings, name):
    with pytest.raises(ValueError, match=name):
        NeuralMemory(**settings)


@pytest.mark.parametrize("decay", [True, False])
def test_a_state_can_be_continued_twice_with_the_same_result(decay):
    # Forks and retries continue one state more than once: continuing must never mutate it.
    memory = make_memory(use_decay=decay)
    with torch.inference_mode():
        _, state = memory(torch.randn(1, 21, 24))
        x = torch.randn(1, 30, 24)
        first, _ = memory(x, state)
        second, _ = memory(x, state)
    assert torch.equal(first, second)


def test_long_inputs_are_processed_in_pieces_with_the_same_result():
    memory = make_memory()
    x = torch.randn(2, 50, 24)
    with torch.inference_mode():
        y_whole, state_whole = memory(x)
        memory.piece_tokens = 7
        y_pieces, state_pieces = memory(x)
    assert (y_pieces - y_whole).abs().max() < 1e-5
    assert_states_close(state_pieces, state_whole, 1e-5)


@pytest.mark.parametrize("momentum", [True, False])
@pytest.mark.parametrize("decay", [True, False])
def test_decode_of_streams_at_different_positions_equals_separate_calls(momentum, decay):
    memory = make_memory(torch.float64, use_momentum=momentum, use_decay=decay)
    states = []
    for length in (0, 1, 5, 8, 9, 15):
        state = memory.initial_state(1, dtype=torch.float64)
        states.append(memory(torch.randn(1, length, 24, dtype=torch.float64), state)[1] if length else state)
    x = torch.randn(len(states), 1, 24, dtype=torch.float64)
    with torch.inference_mode():
        y, decoded = memory.decode(x, states)
        for row, state in enumerate(states):
            y_alone, alone = memory(x[row : row + 1], state)
            assert (y_alone - y[row : row + 1]).abs().max() < 1e-12
            assert_states_close(alone, decoded[row], atol=1e-12)


def test_a_memory_made_to_diverge_stays_finite_with_the_guard():
    # A learning rate far too high for chunks of 16: the unguarded memory overshoots, its gradients
    # grow with every chunk, and within a few hundred tokens the weights are inf or NaN.
    torch.manual_seed(0)
    x = torch.randn(1, 2048, 32)
    states = {}
    for guard in (None, 10.0):
        memory = NeuralMemory(32, heads=2, depth=2, chunk_size=16, max_lr=4.0, max_surprise=guard)
        with torch.no_grad():
            memory.to_inputs.bias[3 * 32 :].view(3, 2)[0].fill_(4.0)  # theta near max_lr
            _, state = memory(x)
        states[guard] = state
    assert not all(torch.isfinite(t).all() for t in states[None].tensors())
    assert all(torch.isfinite(t).all() for t in states[10.0].tensors())
