"""The closed-form chunked update equals the token-by-token definition (DESIGN.md §2)."""

import pytest
import torch

from titans_core.ops import commit_chunk, memory_stream, memory_update, memory_update_reference


def rel_error(fast, reference):
    return ((fast - reference.detach()).abs().max() / reference.detach().abs().max().clamp_min(1e-30)).item()


def assert_matches(fast, reference, tolerance):
    (y, weights, surprise), (y_ref, weights_ref, surprise_ref) = fast, reference
    assert torch.isfinite(y).all()
    assert rel_error(y, y_ref) < tolerance
    for w, w_ref in zip(weights, weights_ref, strict=True):
        assert rel_error(w, w_ref) < tolerance
    assert (surprise is None) == (surprise_ref is None)
    for s, s_ref in zip(surprise or [], surprise_ref or [], strict=True):
        assert rel_error(s, s_ref) < tolerance


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("chunk_size", [1, 4, 16, 64])
@pytest.mark.parametrize("momentum", [True, False])
@pytest.mark.parametrize("decay", [True, False])
def test_matches_definition_in_float64(memory_inputs, depth, chunk_size, momentum, decay):
    # 83 tokens: several chunks of 16, one full and one partial chunk of 64, a partial chunk of 4.
    args = memory_inputs(length=83, depth=depth, momentum=momentum, decay=decay)
    assert_matches(memory_update(*args, chunk_size), memory_update_reference(*args, chunk_size), 1e-9)


@pytest.mark.parametrize(
    "gate_values",
    [
        {"theta": 0.0, "eta": 0.0, "alpha": 0.0},
        {"theta": 1e-9, "eta": 1e-9, "alpha": 1e-9},
        {"theta": 0.2, "eta": 1.0, "alpha": 1.0},
        {"theta": 0.05, "eta": 1 - 1e-9, "alpha": 1 - 1e-9},
        {"theta": 0.05, "eta": 1.0, "alpha": 0.0},
    ],
    ids=lambda g: ",".join(f"{k}={v:g}" for k, v in g.items()),
)
def test_gates_at_and_near_their_bounds(memory_inputs, gate_values):
    q, k, v, theta, eta, alpha, weights, surprise = memory_inputs(length=70)
    theta, eta, alpha = (torch.full_like(theta, gate_values[name]) for name in ("theta", "eta", "alpha"))
    # Mix in random gates for half the tokens, so exact 0/1 gates meet ordinary ones inside a chunk.
    mixed = torch.rand_like(theta) < 0.5
    eta = torch.where(mixed, torch.rand_like(eta), eta)
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


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("momentum", [True, False])
def test_gradients_match_definition(memory_inputs, depth, momentum):
    args = memory_inputs(
        batch=1, heads=2, length=21, dim=4, depth=depth, momentum=momentum, requires_grad=True
    )
    leaves = [x for a in args if a is not None for x in (a if isinstance(a, list) else [a])]

    def gradients(fn):
        y, weights, surprise = fn(*args, 8)
        outputs = [y, *weights, *(surprise or [])]
        torch.manual_seed(1234)  # the same random projection of the outputs for both
        loss = sum((out * torch.randn_like(out)).sum() for out in outputs)
        return torch.autograd.grad(loss, leaves)

    for fast, reference in zip(gradients(memory_update), gradients(memory_update_reference), strict=True):
        assert rel_error(fast, reference) < 1e-9


def test_runs_under_inference_mode(memory_inputs):
    args = memory_inputs(length=40, dtype=torch.float32)
    with torch.inference_mode():
        y, weights, surprise = memory_update(*args, 16)
    assert y.shape == (2, 2, 40, 8) and not y.requires_grad
    assert [w.shape for w in weights] == [w.shape for w in args[6]]


def test_no_momentum_is_momentum_gate_zero(memory_inputs):
    q, k, v, theta, _, alpha, weights, _ = memory_inputs(length=50, momentum=False)
    without = memory_update(q, k, v, theta, None, alpha, weights, None, 16)
    zero_gate = memory_update(
        q, k, v, theta, torch.zeros_like(theta), alpha, weights, [torch.zeros_like(w) for w in weights], 16
    )
    assert rel_error(without[0], zero_gate[0]) < 1e-10
    for w, w_zero in zip(without[1], zero_gate[1], strict=True):
        assert rel_error(w, w_zero) < 1e-10
    assert without[2] is None


@pytest.mark.parametrize("chunk_size", [1, 5, 16])
def test_streaming_in_random_pieces_equals_one_call(memory_inputs, chunk_size):
    q, k, v, theta, eta, alpha, weights, surprise = memory_inputs(length=61)
    y_once, weights_once, surprise_once = memory_update(
        q, k, v, theta, eta, alpha, weights, surprise, chunk_size
    )
    cuts = sorted(torch.randperm(60)[:7].add(1).tolist())
    pieces, open_chunk = [], None
    for start, end in zip([0, *cuts], [*cuts, 61]):
        rows = slice(start, end)
        y, weights, surprise, open_chunk = memory_stream(
            q[..., rows, :],
            k[..., rows, :],
            v[..., rows, :],
            theta[..., rows],
            eta[..., rows],
            alpha[..., rows],
            weights,
            surprise,
            chunk_size,
            open_chunk,
        )
        pieces.append(y)
    assert (open_chunk is None) == (61 % chunk_size == 0)
    if open_chunk is not None:
        assert open_chunk.length == 61 % chunk_size
        weights, surprise = commit_chunk(weights, surprise, open_chunk)
    assert rel_error(torch.cat(pieces, dim=-2), y_once) < 1e-10
    for w, w_once in zip(weights + surprise, weights_once + surprise_once, strict=True):
        assert rel_error(w, w_once) < 1e-10


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
        (lambda a: a.__setitem__(4, a[4].float()), "eta"),
        (lambda a: a.__setitem__(5, a[5].unsqueeze(-1)), "alpha"),
        (lambda a: a.__setitem__(6, []), "weights"),
        (lambda a: a[6].__setitem__(1, a[6][1][..., :-1, :]), "weights[1]"),
        (lambda a: a.__setitem__(7, a[7][:1]), "momentum"),
        (lambda a: a.__setitem__(7, None), "eta and momentum"),
        (lambda a: a.append(0), "chunk_size"),
        (lambda a: a.append(2.5), "chunk_size"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(memory_inputs, break_args, name):
    args = memory_inputs(length=10)
    break_args(args)
    if len(args) == 8:
        args.append(4)
    with pytest.raises(ValueError, match=name.replace("[", r"\[").replace("]", r"\]")):
        memory_update(*args)


def test_inputs_are_never_modified(memory_inputs):
    # The op updates weights in place only when it made them itself: a caller's state stays valid.
    args = memory_inputs(length=100, dtype=torch.float32)
    before = [x.clone() for a in args if a is not None for x in (a if isinstance(a, list) else [a])]
    with torch.inference_mode():
        memory_update(*args, 16)
    after = [x for a in args if a is not None for x in (a if isinstance(a, list) else [a])]
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
