"""Session state: exact round trips through bytes, refusal of anything else, stacking for the engine."""

import json
import struct

import pytest
import torch
from safetensors.torch import load, save

from titans_core import ModelState, StateMismatchError, TitansConfig, TitansLM
from titans_core.state import STATE_MAX_ABS, from_bytes, read_metadata, state_shapes, to_bytes


def consume(model, length, batch=1, state=None):
    with torch.inference_mode():
        return model(torch.randint(0, model.config.vocab_size, (batch, length)), state)


@pytest.mark.parametrize("position", [0, 4, 13, 16, 21])  # boundary, chunk end, mid-chunk mid-segment, ...
def test_bytes_round_trip_then_continuing_gives_identical_outputs(model, position):
    _, state = consume(model, position) if position else (None, model.initial_state(1))
    restored = from_bytes(to_bytes(state), model.config)
    assert restored.position == position
    assert restored.named_tensors().keys() == state.named_tensors().keys()
    following = torch.randint(0, model.config.vocab_size, (1, 11))
    with torch.inference_mode():
        expected, expected_state = model(following, state)
        got, got_state = model(following, restored)
    assert torch.equal(expected, got)
    for name, tensor in expected_state.named_tensors().items():
        assert torch.equal(tensor, got_state.named_tensors()[name]), name


@pytest.mark.parametrize("position", range(1, 10))
def test_one_memory_head_round_trips_at_every_position(small_config, variant, position):
    """With one head, some open-chunk tensors hold one element with the stride of the slice they
    came from: they must still be written as plain bytes."""
    model = TitansLM(small_config(variant, mem_heads=1, mem_layers=1)).eval()
    _, state = consume(model, position)
    restored = from_bytes(to_bytes(state), model.config)
    for name, tensor in state.named_tensors().items():
        assert torch.equal(tensor, restored.named_tensors()[name]), name


def test_extra_metadata_rides_along_and_reserved_keys_are_refused(model):
    _, state = consume(model, 5)
    data = to_bytes(state, {"session_version": "7"})
    assert read_metadata(data)["session_version"] == "7"
    assert read_metadata(data)["position"] == "5"
    with pytest.raises(ValueError, match="reserved"):
        to_bytes(state, {"position": "0"})


def rewrite(data: bytes, change) -> bytes:
    """The state bytes with ``change(tensors, metadata)`` applied, re-serialised."""
    tensors, metadata = load(data), read_metadata(data)
    change(tensors, metadata)
    return save(tensors, metadata=metadata)


def first_key(tensors, part):
    return next(k for k in sorted(tensors) if part in k)


def drop_a_column(tensors, name):
    tensors[name] = tensors[name][..., :-1].contiguous()


BAD_STATES = {
    "empty": lambda data: b"",
    "truncated": lambda data: data[: len(data) // 2],
    "garbage": lambda data: bytes(range(256)) * 4,
    "header past the end": lambda data: struct.pack("<Q", 10**9) + data[8:],
    "no format tag": lambda data: save({"a": torch.zeros(1)}),
    "future format": lambda data: rewrite(data, lambda t, m: m.update(format_version="2")),
    "bad position": lambda data: rewrite(data, lambda t, m: m.update(position="-3")),
    "position of another shape": lambda data: rewrite(data, lambda t, m: m.update(position="14")),
    "float64": lambda data: rewrite(data, lambda t, m: t.update({k: v.double() for k, v in t.items()})),
    "missing tensor": lambda data: rewrite(data, lambda t, m: t.pop(first_key(t, "momentum"))),
    "extra tensor": lambda data: rewrite(data, lambda t, m: t.update(extra=torch.zeros(1, 2))),
    "wrong shape": lambda data: rewrite(data, lambda t, m: drop_a_column(t, first_key(t, "weights"))),
    "NaN": lambda data: rewrite(
        data, lambda t, m: t[first_key(t, "conv_tail")].view(-1).__setitem__(0, float("nan"))
    ),
    "infinity": lambda data: rewrite(
        data, lambda t, m: t[first_key(t, "weights")].view(-1).__setitem__(3, float("inf"))
    ),
}


@pytest.mark.parametrize("defect", sorted(BAD_STATES))
def test_bytes_that_are_not_a_valid_state_are_refused(model, defect):
    _, state = consume(model, 13)
    bad = BAD_STATES[defect](to_bytes(state))
    with pytest.raises(ValueError) as error:
        from_bytes(bad, model.config)
    assert not isinstance(error.value, StateMismatchError)


def test_a_state_of_another_config_is_a_mismatch_not_garbage(model, small_config, variant):
    _, state = consume(model, 9)
    other = small_config(variant, max_lr=0.1)
    with pytest.raises(StateMismatchError, match="config hash"):
        from_bytes(to_bytes(state), other)


def test_stacked_states_run_as_one_batch_and_unstack_to_the_same(model):
    _, a = consume(model, 13)
    _, b = consume(model, 13)
    stacked = ModelState.stack([a, b])
    assert stacked.batch_size == 2
    following = torch.randint(0, model.config.vocab_size, (2, 6))
    with torch.inference_mode():
        together, state = model(following, stacked)
        alone_a, state_a = model(following[:1], a)
        alone_b, state_b = model(following[1:], b)
    assert (together - torch.cat([alone_a, alone_b])).abs().max() < 1e-5
    for part, alone in zip(state.unstack(), [state_a, state_b]):
        for name, tensor in alone.named_tensors().items():
            assert (tensor - part.named_tensors()[name]).abs().max() < 1e-5, name
    assert [s.named_tensors().keys() for s in stacked.unstack()] == [a.named_tensors().keys()] * 2


def test_states_at_different_positions_do_not_stack(model):
    _, a = consume(model, 5)
    _, b = consume(model, 6)
    with pytest.raises(ValueError, match="position"):
        ModelState.stack([a, b])


def test_state_shapes_describe_exactly_what_the_model_produces(model):
    for length in (1, 3, 8, 10):
        _, state = consume(model, length, batch=2)
        found = {k: tuple(t.shape) for k, t in state.named_tensors().items()}
        assert found == state_shapes(model.config, length, 2)


def test_the_state_holds_no_history(model):
    """Bytes stay bounded however long the session: no per-chunk or per-token history."""
    sizes = []
    state = None
    for _ in range(4):
        _, state = consume(model, 16, state=state)  # back to the same phase of every period
        sizes.append(len(to_bytes(state)))
    assert len(set(sizes)) == 1


def test_default_config_state_size():
    """The default model's session at a segment boundary is its memories and little else."""
    model = TitansLM(TitansConfig())
    boundary = len(to_bytes(model.initial_state(1)))
    memory = 4 * 2 * (2 * 64 * 256 * 4) * 4  # layers x (weights + momentum) x 2 matrices x heads x fp32
    assert memory < boundary < memory * 1.01


def header_with(data: bytes, **changes) -> bytes:
    """State bytes whose JSON header has ``changes`` in its metadata (any JSON values)."""
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    header["__metadata__"].update(changes)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data[8 + size :]


@pytest.mark.parametrize("position", [13, "1" + "0" * 30, "-1", "１３"])
def test_positions_must_be_small_decimal_strings(model, position):
    _, state = consume(model, 13)
    with pytest.raises(ValueError, match="position"):
        from_bytes(header_with(to_bytes(state), position=position), model.config)


def test_a_deeply_nested_header_is_a_value_error(model):
    nested = b"[" * 100000 + b"]" * 100000
    with pytest.raises(ValueError):
        from_bytes(struct.pack("<Q", len(nested)) + nested, model.config)


def test_fresh_states_do_not_alias_the_parameters(model):
    state = model.initial_state(1)
    weights = state.layers[0].memory.weights[0]
    parameter = model.layers[0].memory.initial_weights[0]
    assert weights.untyped_storage().data_ptr() != parameter.untyped_storage().data_ptr()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_state_bytes_are_plain_safetensors(model, dtype):
    """Our one-copy writer writes the format safetensors reads (names, shapes, dtypes, values, metadata)."""
    state = consume(model, 37)[1].map(lambda t: t.to(dtype))
    data = to_bytes(state, {"note": "hi"})
    loaded = load(data)
    assert loaded.keys() == state.named_tensors().keys()
    for name, tensor in state.named_tensors().items():
        assert loaded[name].dtype == dtype and torch.equal(loaded[name], tensor)
    assert read_metadata(data)["note"] == "hi" and read_metadata(data)["position"] == "37"
    assert from_bytes(data, model.config, dtype=dtype).position == 37


def test_values_up_to_the_bound_load_and_one_beyond_it_or_not_finite_does_not(model):
    """A valid state is finite and within STATE_MAX_ABS: 3e38 is finite, but the model's float32
    arithmetic overflows on it and every output of such a session is NaN."""
    _, state = consume(model, 20)
    at_bound = state.map(lambda t: torch.full_like(t, -STATE_MAX_ABS))
    assert from_bytes(to_bytes(at_bound), model.config).position == 20
    tensors = dict(load(to_bytes(state)))
    name = max(tensors, key=lambda k: tensors[k].numel())
    for bad in (STATE_MAX_ABS * 1.01, 3e38, float("inf"), float("nan")):
        changed = {**tensors, name: tensors[name].clone()}
        changed[name].view(-1)[-1] = bad
        with pytest.raises(ValueError, match=f"{name} holds values that are not finite or beyond"):
            from_bytes(save(changed, metadata=read_metadata(to_bytes(state))), model.config)
