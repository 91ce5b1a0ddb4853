"""The closed-form chunked update equals the token-by-token definition (titans_core.ops.reference)."""

import contextlib
import dataclasses

import pytest
import torch

from titans_core.ops import (
    OpenChunk,
    commit_chunk,
    memory_step,
    memory_stream,
    memory_update,
    memory_update_reference,
)


def rel_error(fast, reference):
    return ((fast - reference.detach()).abs().max() / reference.detach().abs().max().clamp_min(1e-30)).item()


def assert_matches(fast, reference, tolerance):
    (y, weights, surprise), (y_ref, weights_ref, surprise_ref) = fast, reference
    assert torch.isfinite(y_ref).all(), "the random inputs diverged: the comparison would mean nothing"
    assert rel_error(y, y_ref) < tolerance
    for w, w_ref in zip(weights, weights_ref, strict=True):
        assert rel_error(w, w_ref) < tolerance
    assert (surprise is None) == (surprise_ref is None)
    for s, s_ref in zip(surprise or [], surprise_ref or [], strict=True):
        assert rel_error(s, s_ref) < tolerance


def tensors(args):
    return [x for a in args if a is not None for x in (a if isinstance(a, list) else [a])]


def stream_in_pieces(args, chunk_size, cuts, max_surprise=None):
    """memory_stream over the pieces between ``cuts``, then the open chunk closed: memory_update's result."""
    q, k, v, theta, eta, alpha, weights, surprise = args
    rows_of = lambda x, rows: None if x is None else x[..., rows, :] if x.dim() == 4 else x[..., rows]  # noqa: E731
    pieces, open_chunk = [], None
    for start, end in zip([0, *cuts], [*cuts, q.shape[2]]):
        piece = [rows_of(x, slice(start, end)) for x in (q, k, v, theta, eta, alpha)]
        y, weights, surprise, open_chunk = memory_stream(
            *piece, weights, surprise, chunk_size, open_chunk, max_surprise=max_surprise
        )
        pieces.append(y)
    if open_chunk is not None:
        weights, surprise = commit_chunk(weights, surprise, open_chunk)
    return torch.cat(pieces, dim=-2), weights, surprise


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("chunk_size", [1, 4, 16, 64])
@pytest.mark.parametrize("momentum", [True, False])
@pytest.mark.parametrize("decay", [True, False])
@pytest.mark.parametrize("mode", ["autograd", "no_grad"])  # no_grad also commits in place
def test_matches_definition_in_float64(memory_inputs, depth, chunk_size, momentum, decay, mode):
    # 83 tokens: several chunks of 16, one full and one partial chunk of 64, a partial chunk of 4.
    args = memory_inputs(length=83, depth=depth, momentum=momentum, decay=decay)
    with torch.no_grad() if mode == "no_grad" else contextlib.nullcontext():
        fast = memory_update(*args, chunk_size)
    assert_matches(fast, memory_update_reference(*args, chunk_size), 1e-9)


@pytest.mark.parametrize(
    "gate_values",
    [
        {"theta": 0.0, "eta": 0.0, "alpha": 0.0},
        {"theta": 1e-9, "eta": 1e-9, "alpha": 1e-9},
        {"theta": 0.05, "eta": 1.0, "alpha": 1.0},
        {"theta": 0.05, "eta": 1 - 1e-9, "alpha": 1 - 1e-9},
        {"theta": 0.05, "eta": 1.0, "alpha": 0.0},
    ],
    ids=lambda g: ",".join(f"{k}={v:g}" for k, v in g.items()),
)
def test_gates_at_and_near_their_bounds(memory_inputs, gate_values):
    q, k, v, theta, eta, alpha, weights, surprise = memory_inputs(length=70)
    # Each gate takes the bound value at a random half of the tokens and an ordinary value elsewhere,
    # so exact 0s and 1s meet ordinary gates inside a chunk.
    theta, eta, alpha = (
        torch.where(torch.rand_like(gate) < 0.5, torch.full_like(gate, gate_values[name]), gate)
        for name, gate in (("theta", theta), ("eta", eta), ("alpha", alpha))
    )
    args = [q, k, v, theta, eta, alpha, weights, surprise]
    assert_matches(memory_update(*args, 64), memory_update_reference(*args, 64), 1e-9)


def test_small_momentum_gates_keep_full_precision_over_a_long_chunk(memory_inputs):
    # The naive closed form divides by prod(eta) over the chunk: ~1e-64 here, so it loses every digit.
    q, k, v, theta, eta, alpha, weights, surprise = memory_inputs(length=128, dim=4)
    eta = torch.rand_like(eta) * 0.1
    args = [q, k, v, theta, eta, alpha, weights, surprise]
    assert_matches(memory_update(*args, 64), memory_update_reference(*args, 64), 1e-9)


@pytest.mark.parametrize("depth", [1, 2])
def test_float32_agrees_with_float64_definition(memory_inputs, depth):
    args64 = memory_inputs(length=150, dim=16, depth=depth)
    args32 = [
        None if a is None else [x.float() for x in a] if isinstance(a, list) else a.float() for a in args64
    ]
    y, weights, surprise = memory_update(*args32, 64)
    y_ref, weights_ref, surprise_ref = memory_update_reference(*args64, 64)
    assert (y.double() - y_ref.detach()).abs().max() < 1e-4
    for w, w_ref in zip(weights + surprise, weights_ref + surprise_ref, strict=True):
        assert (w.double() - w_ref.detach()).abs().max() < 1e-4


def gradients(fn, args, leaves):
    y, weights, momentum = fn(args)
    outputs = [y, *weights, *(momentum or [])]
    projection = torch.Generator().manual_seed(1234)  # the same random projection for every path
    loss = sum((out * torch.randn(out.shape, generator=projection, dtype=out.dtype)).sum() for out in outputs)
    return torch.autograd.grad(loss, leaves)


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("momentum", [True, False])
@pytest.mark.parametrize("decay", [True, False])
def test_gradients_match_definition(memory_inputs, depth, momentum, decay):
    args = memory_inputs(
        batch=1, length=21, dim=4, depth=depth, momentum=momentum, decay=decay, requires_grad=True
    )
    fast = gradients(lambda a: memory_update(*a, 8), args, tensors(args))
    reference = gradients(lambda a: memory_update_reference(*a, 8), args, tensors(args))
    for fast_grad, reference_grad in zip(fast, reference, strict=True):
        assert rel_error(fast_grad, reference_grad) < 1e-9


@pytest.mark.parametrize("momentum", [True, False])
@pytest.mark.parametrize("decay", [True, False])
def test_gradients_through_streamed_pieces_match_definition(memory_inputs, momentum, decay):
    # Training on long inputs goes through open chunks carried between pieces: exact gradients there too.
    args = memory_inputs(batch=1, length=29, dim=4, momentum=momentum, decay=decay, requires_grad=True)
    cuts = sorted(torch.randperm(28)[:5].add(1).tolist())
    streamed = gradients(lambda a: stream_in_pieces(a, 8, cuts), args, tensors(args))
    reference = gradients(lambda a: memory_update_reference(*a, 8), args, tensors(args))
    for fast_grad, reference_grad in zip(streamed, reference, strict=True):
        assert rel_error(fast_grad, reference_grad) < 1e-9


@pytest.mark.parametrize("chunk_size", [1, 5, 16])
@pytest.mark.parametrize("momentum", [True, False])
@pytest.mark.parametrize("decay", [True, False])
def test_streaming_in_random_pieces_equals_one_call(memory_inputs, chunk_size, momentum, decay):
    args = memory_inputs(length=61, momentum=momentum, decay=decay)
    cuts = sorted(torch.randperm(60)[:7].add(1).tolist())
    with torch.no_grad():
        assert_matches(stream_in_pieces(args, chunk_size, cuts), memory_update(*args, chunk_size), 1e-10)


def test_an_input_ending_mid_chunk_leaves_that_chunk_open(memory_inputs):
    q, k, v, theta, eta, alpha, weights, surprise = memory_inputs(length=21)
    _, _, _, open_chunk = memory_stream(q, k, v, theta, eta, alpha, weights, surprise, 8)
    assert open_chunk.length == 21 % 8
    _, _, _, open_chunk = memory_stream(q, k, v, theta, eta, alpha, weights, surprise, 7)
    assert open_chunk is None


@pytest.mark.parametrize("momentum", [True, False])
@pytest.mark.parametrize("decay", [True, False])
def test_inference_mode_gives_the_autograd_result(memory_inputs, momentum, decay):
    args = memory_inputs(length=90, dtype=torch.float32, momentum=momentum, decay=decay)
    expected = memory_update(*args, 16)
    with torch.inference_mode():
        fast = memory_update(*args, 16)
    assert not fast[0].requires_grad
    assert_matches(fast, expected, 1e-6)


@pytest.mark.parametrize("momentum", [True, False])
@pytest.mark.parametrize("decay", [True, False])
def test_inputs_are_never_modified(memory_inputs, momentum, decay):
    # The op updates weights in place only when it made them itself: a caller's state stays valid.
    args = memory_inputs(length=100, dtype=torch.float32, momentum=momentum, decay=decay)
    before = [x.clone() for x in tensors(args)]
    with torch.inference_mode():
        memory_update(*args, 16)
    assert all(torch.equal(a, b) for a, b in zip(before, tensors(args), strict=True))


def test_empty_input_changes_nothing(memory_inputs):
    q, k, v, theta, eta, alpha, weights, surprise = memory_inputs(length=0)
    y, new_weights, new_surprise = memory_update(q, k, v, theta, eta, alpha, weights, surprise, 4)
    assert y.shape == (2, 2, 0, 8)
    assert all(torch.equal(a, b) for a, b in zip(new_weights + new_surprise, weights + surprise))


@pytest.mark.parametrize(
    "break_args, name",
    [
        (lambda a: a.__setitem__(0, a[0][0]), "q"),
        (lambda a: a.__setitem__(1, a[1][..., :-1]), "k"),
        (lambda a: a.__setitem__(2, a[2].float()), "v"),
        (lambda a: a.__setitem__(2, a[2].long()), "v"),
        (lambda a: a.__setitem__(3, a[3][..., :-1]), "theta"),
        (lambda a: a.__setitem__(3, None), "theta"),
        (lambda a: a.__setitem__(4, a[4].float()), "eta"),
        (lambda a: a.__setitem__(5, a[5].unsqueeze(-1)), "alpha"),
        (lambda a: a.__setitem__(6, []), "weights"),
        (lambda a: a[6].__setitem__(1, a[6][1][..., :-1, :]), "weights[1]"),
        (lambda a: a.__setitem__(7, a[7][:1]), "momentum"),
        (lambda a: a[7].__setitem__(0, a[7][0].float()), "momentum[0]"),
        (lambda a: a.__setitem__(7, None), "eta and momentum"),
        (lambda a: a.append(0), "chunk_size"),
        (lambda a: a.append(2.5), "chunk_size"),
        (lambda a: a.append(True), "chunk_size"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(memory_inputs, break_args, name):
    args = memory_inputs(length=10)
    break_args(args)
    if len(args) == 8:
        args.append(4)
    with pytest.raises(ValueError, match=name.replace("[", r"\[").replace("]", r"\]")):
        memory_update(*args)


@pytest.mark.parametrize(
    "change, name",
    [
        (lambda c: dataclasses.replace(c, g=c.g[..., :0], s=c.s[..., :0]), "rows"),
        (lambda c: dataclasses.replace(c, inputs=c.inputs[:1]), "layers"),
        (
            lambda c: dataclasses.replace(c, deltas=[c.deltas[0][..., :-1], c.deltas[1]]),
            r"open_chunk.deltas\[0\]",
        ),
        (lambda c: dataclasses.replace(c, s=None), "open_chunk.s"),
        (lambda c: dataclasses.replace(c, beta=c.beta.float()), "open_chunk.beta"),
        (lambda c: dataclasses.replace(c, f=c.f[:1]), "open_chunk.f"),
    ],
)
def test_a_malformed_open_chunk_is_refused(memory_inputs, change, name):
    q, k, v, theta, eta, alpha, weights, surprise = memory_inputs(length=5)
    _, _, _, open_chunk = memory_stream(q, k, v, theta, eta, alpha, weights, surprise, 8)
    assert isinstance(open_chunk, OpenChunk)
    with pytest.raises(ValueError, match=name):
        memory_stream(q, k, v, theta, eta, alpha, weights, surprise, 8, change(open_chunk))


# The divergence guard: each token's gradient clipped to norm max_surprise, in every path.


@pytest.mark.parametrize("depth", [1, 2])
@pytest.mark.parametrize("chunk_size", [1, 5, 16])
@pytest.mark.parametrize("momentum", [True, False])
def test_the_guarded_update_matches_the_guarded_definition(memory_inputs, depth, chunk_size, momentum):
    args = memory_inputs(length=47, depth=depth, momentum=momentum, max_lr=0.3)
    args[2] = 4 * args[2]  # large values: most tokens' gradients are longer than the bound
    reference = memory_update_reference(*args, chunk_size, max_surprise=1.5)
    assert_matches(memory_update(*args, chunk_size, max_surprise=1.5), reference, 1e-9)
    streamed = stream_in_pieces(args, chunk_size, [3, 4, 20, 33], max_surprise=1.5)
    assert_matches(streamed, reference, 1e-9)
    # and the guard did bite: without it the result differs (or diverges)
    unguarded = memory_update_reference(*args, chunk_size)
    assert not torch.allclose(unguarded[0], reference[0], rtol=1e-3)


def test_decode_steps_apply_the_guard_as_the_definition_does(memory_inputs):
    args = memory_inputs(length=21, depth=2, max_lr=0.3)
    args[2] = 4 * args[2]
    q, k, v, theta, eta, alpha, weights, surprise = args
    reference = memory_update_reference(*args, 8, max_surprise=0.7)
    outputs, open_chunk = [], None
    for t in range(q.shape[2]):
        row = [
            x[..., t : t + 1, :] if x.dim() == 4 else x[..., t : t + 1] for x in (q, k, v, theta, eta, alpha)
        ]
        y, open_chunk = memory_step(*row, weights, surprise, 8, open_chunk, max_surprise=0.7)
        outputs.append(y)
        if open_chunk.length == 8:
            weights, surprise = commit_chunk(weights, surprise, open_chunk)
            open_chunk = None
    weights, surprise = commit_chunk(weights, surprise, open_chunk)
    assert_matches((torch.cat(outputs, dim=-2), weights, surprise), reference, 1e-9)


def test_gradients_through_the_guard_match_the_definition(memory_inputs):
    args = memory_inputs(length=29, depth=2, max_lr=0.3, requires_grad=True)
    with torch.no_grad():
        args[2].mul_(4)
    inputs = tensors(args)
    fast = memory_update(*args, 8, max_surprise=1.5)
    reference = memory_update_reference(*args, 8, max_surprise=1.5)
    probe = [torch.randn_like(x) for x in tensors(list(fast))]
    grads = torch.autograd.grad(sum((a * p).sum() for a, p in zip(tensors(list(fast)), probe)), inputs)
    expected = torch.autograd.grad(
        sum((a * p).sum() for a, p in zip(tensors(list(reference)), probe)), inputs
    )
    for g, e in zip(grads, expected):
        assert rel_error(g, e) < 1e-8


def test_below_the_bound_the_guard_changes_nothing(memory_inputs):
    args = memory_inputs(length=40, depth=2)
    plain = memory_update(*args, 16)
    guarded = memory_update(*args, 16, max_surprise=1e6)
    for a, b in zip(tensors(list(plain)), tensors(list(guarded))):
        assert torch.equal(a, b)


@pytest.mark.parametrize("value", [0, -1.0, float("inf"), float("nan"), True, "1"])
def test_a_bad_bound_is_refused(memory_inputs, value):
    with pytest.raises(ValueError, match="max_surprise"):
        memory_update(*memory_inputs(), 4, max_surprise=value)


@pytest.mark.parametrize("max_surprise", [None, 1.5])
@pytest.mark.parametrize("momentum", [True, False])
@pytest.mark.parametrize("depth", [1, 2])
def test_write_strengths_match_the_definition_whatever_the_pieces(
    memory_inputs, max_surprise, momentum, depth
):
    """theta_t |u_t| per token, u_t the (clipped) gradient over every layer, as the oracle computes it."""
    args = memory_inputs(length=43, depth=depth, momentum=momentum, max_lr=0.3)
    args[2] = 4 * args[2]  # with the guard on, most tokens are clipped
    expected = []
    memory_update_reference(*args, 8, max_surprise=max_surprise, on_write=expected.append)
    expected = torch.cat(expected, dim=-1).detach()
    for cuts in ([], [3, 8, 9, 30], list(range(1, 43))):  # one call, ragged pieces, decode steps
        got = []
        q, k, v, theta, eta, alpha, weights, surprise = args
        open_chunk = None
        for start, end in zip([0, *cuts], [*cuts, 43]):
            piece = [x[..., start:end, :] if x.dim() == 4 else x[..., start:end] for x in (q, k, v, theta)]
            gates = [None if x is None else x[..., start:end] for x in (eta, alpha)]
            _, weights, surprise, open_chunk = memory_stream(
                *piece,
                *gates,
                weights,
                surprise,
                8,
                open_chunk,
                max_surprise=max_surprise,
                on_write=got.append,
            )
        assert rel_error(torch.cat(got, dim=-1), expected) < 1e-10
    if max_surprise is not None:  # the bound holds: no token writes more than theta_t * max_surprise
        assert (expected <= args[3] * max_surprise * (1 + 1e-12)).all()
        assert torch.isclose(expected, args[3] * max_surprise).float().mean() > 0.5
