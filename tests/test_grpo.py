"""The GRPO step: advantages, chunked token log-probs, the loss (hand-derived numbers)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from visualrft_lite.grpo import (
    aggregate_rewards,
    group_advantages,
    grpo_loss,
    mask_truncated,
    tied_groups,
    token_logprobs,
    zero_signal_fraction,
)

LN2 = math.log(2.0)
K3_LN2 = 2.0 - LN2 - 1.0  # k3 at ref − logp = ln 2: e^{ln 2} − ln 2 − 1 = 0.30685…


# ---------------------------------------------------------------- advantages

# rewards [1, 0, 0, 1 | 2, 2, 2, 2], G = 4.
# Group 0: mean 0.5, deviations ±0.5; unbiased var = 4·0.25 / 3 = 1/3, std = sqrt(1/3) = 0.57735.
# Group 1: constant, deviations 0 → advantage 0 / (0 + eps) = 0.
# Whole batch: mean 10/8 = 1.25; squared deviations 2·0.0625 + 2·1.5625 + 4·0.5625 = 5.5;
#   unbiased var 5.5 / 7, std = 0.88641.
REWARDS = [1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0]
SIGNS = [1, -1, -1, 1, 0, 0, 0, 0]


@pytest.mark.parametrize(
    "scale, magnitude",
    [
        # the paper: 0.5 / (sqrt(1/3) + 1e-4) = 0.86588 (a population std, 0.5, would give 0.9998)
        ("group", 0.5 / (math.sqrt(1 / 3) + 1e-4)),
        # one std for all 8 rewards: 0.5 / (sqrt(5.5/7) + 1e-4) = 0.56401
        ("batch", 0.5 / (math.sqrt(5.5 / 7) + 1e-4)),
        # Dr. GRPO: centred only
        ("none", 0.5),
    ],
    ids=["group", "batch", "none"],
)
def test_group_advantages_hand_derived(scale, magnitude):
    got = group_advantages(torch.tensor(REWARDS), 4, scale)
    want = torch.tensor([s * magnitude for s in SIGNS])
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_group_advantages_literal_value():
    # Guard against an expression-for-expression test: 0.5 / 0.57745 = 0.865876 written out.
    got = group_advantages(torch.tensor(REWARDS), 4)
    assert got[0].item() == pytest.approx(0.865876, abs=1e-5)
    assert got[1].item() == pytest.approx(-0.865876, abs=1e-5)


def test_group_advantages_groups_are_contiguous():
    # G = 2 pairs (1, 0), (0, 1), (2, 2), (2, 2): each pair centred on 0.5 or 2;
    # std of a pair {0, 1} is sqrt(0.5) → ±0.5 / (0.70711 + 1e-4).
    got = group_advantages(torch.tensor(REWARDS), 2, "group")
    a = 0.5 / (math.sqrt(0.5) + 1e-4)
    torch.testing.assert_close(got, torch.tensor([a, -a, -a, a, 0, 0, 0, 0]), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "rewards, group_size",
    [
        ([1.0, 0.0, 1.0], 2),  # 3 rewards do not split into pairs
        ([1.0, 0.0], 1),  # a group of one has no comparison
    ],
)
def test_group_advantages_rejects_bad_layout(rewards, group_size):
    with pytest.raises(ValueError):
        group_advantages(torch.tensor(rewards), group_size)


@pytest.mark.parametrize(
    "rewards, group_size, want",
    [
        (REWARDS, 4, 0.5),  # [1,0,0,1] has signal, [2,2,2,2] none
        ([1.0, 1.0, 0.0, 0.0], 2, 1.0),  # both pairs constant
        ([1.0, 0.0, 0.0, 1.0], 2, 0.0),  # both pairs mixed
        ([0.3, 0.3, 0.3, 0.7, 0.7, 0.7], 3, 1.0),  # constant at non-integer values too
    ],
)
def test_zero_signal_fraction(rewards, group_size, want):
    assert zero_signal_fraction(torch.tensor(rewards), group_size) == pytest.approx(want)


# ---------------------------------------------------------------- token log-probs


def _reference_logprobs(hidden, weight, targets, bias=None, temperature=1.0):
    logits = hidden @ weight.T  # [N, V]
    if bias is not None:
        logits = logits + bias
    logits = logits.float() / temperature  # [N, V]
    return torch.log_softmax(logits, -1).gather(-1, targets[:, None]).squeeze(-1)  # [N]


def _inputs(n=37, h=16, v=50, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=g).to(dtype).requires_grad_()
    weight = torch.randn(v, h, generator=g).to(dtype).requires_grad_()
    bias = torch.randn(v, generator=g).to(dtype).requires_grad_()
    targets = torch.randint(0, v, (n,), generator=g)
    return hidden, weight, bias, targets


@pytest.mark.parametrize("chunk_size", [1, 5, 8, 36, 37, 256])  # 5 and 8 do not divide N = 37
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_token_logprobs_matches_full_log_softmax_fp32(chunk_size, temperature):
    hidden, weight, bias, targets = _inputs()
    got = token_logprobs(hidden, weight, targets, bias=bias, temperature=temperature, chunk_size=chunk_size)
    upstream = torch.randn(got.shape, generator=torch.Generator().manual_seed(1))  # [N]
    got_grads = torch.autograd.grad((got * upstream).sum(), (hidden, weight, bias))

    want = _reference_logprobs(hidden, weight, targets, bias, temperature)
    want_grads = torch.autograd.grad((want * upstream).sum(), (hidden, weight, bias))

    assert got.dtype == torch.float32 and got.shape == (37,)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


def test_token_logprobs_frozen_lm_head():
    # The LoRA case: lm_head frozen, only the hidden states carry a gradient.
    hidden, weight, _, targets = _inputs()
    weight = weight.detach()
    got = token_logprobs(hidden, weight, targets, chunk_size=10)
    (g,) = torch.autograd.grad(got.sum(), hidden)
    (w,) = torch.autograd.grad(_reference_logprobs(hidden, weight, targets).sum(), hidden)
    torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


def test_token_logprobs_temperature_is_applied():
    # A wrong or missing temperature would pass the equality test only if T had no effect;
    # check it has: log-probs at T = 0.7 differ from T = 1.
    hidden, weight, _, targets = _inputs()
    with torch.no_grad():
        at_1 = token_logprobs(hidden, weight, targets)
        at_07 = token_logprobs(hidden, weight, targets, temperature=0.7)
    assert (at_1 - at_07).abs().max() > 0.1


@pytest.mark.parametrize("chunk_size", [4, 7, 64])
def test_token_logprobs_bf16_inputs(chunk_size):
    # bf16 hidden/weight (the GPU path): the result is fp32 and equals the reference that
    # does the same bf16 matmul then an fp32 log-softmax; the gradients come back in bf16.
    hidden, weight, _, targets = _inputs(dtype=torch.bfloat16)
    got = token_logprobs(hidden, weight, targets, temperature=0.9, chunk_size=chunk_size)
    got_grads = torch.autograd.grad(got.sum(), (hidden, weight))
    want = _reference_logprobs(hidden, weight, targets, temperature=0.9)
    want_grads = torch.autograd.grad(want.sum(), (hidden, weight))

    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for g, w in zip(got_grads, want_grads):
        assert g.dtype == torch.bfloat16
        torch.testing.assert_close(g.float(), w.float(), rtol=2e-2, atol=2e-2)
    # and it stays within bf16 rounding of an all-fp32 computation (logits |x| ≲ 15 → error ≲ 0.1)
    exact = _reference_logprobs(hidden.float(), weight.float(), targets, temperature=0.9)
    torch.testing.assert_close(got, exact, rtol=0, atol=0.1)


def test_token_logprobs_without_grad_and_empty():
    hidden, weight, _, targets = _inputs()
    with torch.no_grad():
        out = token_logprobs(hidden, weight, targets, chunk_size=8)
    assert not out.requires_grad
    empty = token_logprobs(hidden[:0], weight, targets[:0])
    assert empty.shape == (0,) and empty.dtype == torch.float32


def test_token_logprobs_rejects_mismatched_shapes():
    hidden, weight, _, targets = _inputs()
    with pytest.raises(ValueError):
        token_logprobs(hidden, weight, targets[:-1])
    with pytest.raises(ValueError):
        token_logprobs(hidden, weight[:, :-1], targets)


class _ShapeRecorder(TorchDispatchMode):
    """Records the shape of every tensor any aten op produces (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.shapes.append(tuple(t.shape))
        return out


def _vocab_rows(shapes, v):
    # rows of every [rows, V] tensor; weight is [V, H] with H != V, so it is not counted
    return [s[0] for s in shapes if len(s) == 2 and s[1] == v]


N_BIG, H_SMALL, V_BIG, CHUNK = 64, 8, 40, 16


def test_token_logprobs_never_creates_full_logits():
    hidden, weight, _, targets = _inputs(n=N_BIG, h=H_SMALL, v=V_BIG)
    with _ShapeRecorder() as rec:
        out = token_logprobs(hidden, weight, targets, chunk_size=CHUNK)
        out.sum().backward()
    rows = _vocab_rows(rec.shapes, V_BIG)
    assert rows and max(rows) == CHUNK  # logits exist, one chunk at a time, in forward and backward

    # the instrument can fail: the naive computation makes [N, V] logits
    with _ShapeRecorder() as naive:
        _reference_logprobs(hidden, weight, targets).sum().backward()
    assert max(_vocab_rows(naive.shapes, V_BIG)) == N_BIG


def test_token_logprobs_keeps_no_logits_for_backward():
    # With checkpointing, nothing [*, V] is saved for backward (only hidden, weight, targets);
    # without it, every chunk's logits would stay alive until backward.
    hidden, weight, _, targets = _inputs(n=N_BIG, h=H_SMALL, v=V_BIG)
    saved = _saved_for_backward(lambda: token_logprobs(hidden, weight, targets, chunk_size=CHUNK))
    assert _vocab_rows(saved, V_BIG) == []
    saved = _saved_for_backward(lambda: _reference_logprobs(hidden, weight, targets))
    assert N_BIG in _vocab_rows(saved, V_BIG)  # the naive path does keep [N, V]


def _saved_for_backward(fn) -> list[tuple[int, ...]]:
    """Shapes of the tensors autograd keeps for backward while `fn` runs."""
    saved: list[tuple[int, ...]] = []

    def pack(t):
        saved.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return saved


# ---------------------------------------------------------------- the loss

# Two sequences: lengths 2 and 3 (T = 3), advantages A = [1, −0.5]. The padded slot holds NaN to
# prove padding never reaches the loss. With old_logp = None the ratio is 1 everywhere, so the
# policy term per token is −A: seq 0 → −1 (×2 tokens), seq 1 → +0.5 (×3 tokens).
LOGP = [[-1.0, -2.0, float("nan")], [-0.5, -1.5, -3.0]]
MASK = [[1, 1, 0], [1, 1, 1]]
ADV = [1.0, -0.5]


def _batch():
    logp = torch.tensor(LOGP, requires_grad=True)
    return logp, torch.tensor(MASK), torch.tensor(ADV)


# Expected values, no reference:
#   grpo    = mean(−1, 0.5)                 = (−1 + 0.5) / 2       = −0.25
#   dapo    = (2·(−1) + 3·0.5) / 5 tokens   = −0.5 / 5             = −0.1
#   dr_grpo = −0.5 / (2 seqs · L=4)                                = −0.0625
# With a reference at ref − logp = ln 2 on seq 1 only (0 on seq 0), beta = 0.04:
#   seq 1 per token = 0.5 + 0.04·(1 − ln 2) = 0.5122741
#   grpo    = (−1 + 0.5122741) / 2          = −0.2438629
#   dapo    = (−2 + 3·0.5122741) / 5        = −0.0926355
#   dr_grpo = (−2 + 3·0.5122741) / 8        = −0.0578972
# Gradient wrt logp (ratio 1 → d(−ratio·A)/dlogp = −A; d k3/dlogp = 1 − e^{ref−logp} = −1 at ln 2):
#   grpo: seq 0 tokens −1/(2·2) = −0.25; seq 1 tokens (0.5 − 0.04)/(3·2) = 0.0766667
#   dapo: seq 0 −1/5 = −0.2; seq 1 0.46/5 = 0.092
#   dr_grpo: seq 0 −1/8 = −0.125; seq 1 0.46/8 = 0.0575
CASES = [
    # loss_type, loss without ref, loss with ref, grad row 0, grad row 1 (with ref)
    ("grpo", -0.25, -0.2438629, -0.25, 0.0766667),
    ("dapo", -0.1, -0.0926355, -0.2, 0.092),
    ("dr_grpo", -0.0625, -0.0578972, -0.125, 0.0575),
]


@pytest.mark.parametrize("loss_type, plain, with_ref, grad0, grad1", CASES)
def test_grpo_loss_hand_derived(loss_type, plain, with_ref, grad0, grad1):
    logp, mask, adv = _batch()
    loss, stats = grpo_loss(logp, mask, adv, loss_type=loss_type, max_completion_length=4)
    assert loss.item() == pytest.approx(plain, abs=1e-6)
    assert stats["kl"] == 0.0 and stats["ratio_mean"] == pytest.approx(1.0)
    assert stats["clip_fraction"] == 0.0 and stats["completion_tokens"] == 5

    ref = (logp.detach() + torch.tensor([[0.0, 0.0, 0.0], [LN2, LN2, LN2]])).nan_to_num(5.0)
    loss, stats = grpo_loss(logp, mask, adv, ref_logp=ref, beta=0.04, loss_type=loss_type, max_completion_length=4)
    assert loss.item() == pytest.approx(with_ref, abs=1e-6)
    assert stats["loss"] == pytest.approx(with_ref, abs=1e-6)
    # mean k3 over 5 tokens: 3·(1 − ln 2) / 5 = 0.1841117
    assert stats["kl"] == pytest.approx(3 * K3_LN2 / 5, abs=1e-6)

    (grad,) = torch.autograd.grad(loss, logp)
    want = torch.tensor([[grad0, grad0, 0.0], [grad1, grad1, grad1]])
    torch.testing.assert_close(grad, want, rtol=0, atol=1e-6)  # padding gets 0, not NaN


def test_kl_is_zero_at_the_reference_and_k3_of_ln2():
    logp, mask, adv = _batch()
    _, stats = grpo_loss(logp, mask, adv, ref_logp=logp.detach().clone())
    assert stats["kl"] == 0.0
    # ref − logp = ln 2 everywhere: k3 = 2 − ln 2 − 1 = 0.306853, on every token
    _, stats = grpo_loss(logp, mask, adv, ref_logp=logp.detach() + LN2)
    assert stats["kl"] == pytest.approx(0.306853, abs=1e-6)


def test_beta_zero_reports_kl_but_does_not_add_it():
    logp, mask, adv = _batch()
    ref = logp.detach() + LN2
    loss, stats = grpo_loss(logp, mask, adv, ref_logp=ref, beta=0.0)
    assert loss.item() == pytest.approx(-0.25, abs=1e-6)  # the plain grpo value above
    assert stats["kl"] == pytest.approx(K3_LN2, abs=1e-6)


# Clipping, one token per sequence, eps = 0.2. old_logp = logp − 1 → ratio = e = 2.71828.
#   A = +1: min(e·1, 1.2·1) = 1.2 → objective −1.2, clipped, gradient 0 (clamp is flat there).
#   A = −1: min(−e, −1.2) = −e → objective +e, unclipped, gradient −A·ratio = e.
# old_logp = logp + 1 → ratio = 1/e = 0.36788.
#   A = +1: min(0.368, 0.8) = 0.368 → objective −0.36788, unclipped, gradient −1/e.
#   A = −1: min(−0.368, −0.8) = −0.8 → objective +0.8, clipped, gradient 0.
@pytest.mark.parametrize(
    "log_ratio, adv, objective, grad, clipped",
    [
        (1.0, 1.0, -1.2, 0.0, 1.0),
        (1.0, -1.0, math.e, math.e, 0.0),
        (-1.0, 1.0, -math.exp(-1), -math.exp(-1), 0.0),
        (-1.0, -1.0, 0.8, 0.0, 1.0),
    ],
)
def test_ratio_clipping(log_ratio, adv, objective, grad, clipped):
    logp = torch.tensor([[-0.7]], requires_grad=True)
    loss, stats = grpo_loss(
        logp, torch.ones(1, 1), torch.tensor([adv]), old_logp=logp.detach() - log_ratio, beta=0.0
    )
    assert loss.item() == pytest.approx(objective, abs=1e-6)
    (g,) = torch.autograd.grad(loss, logp)
    assert g.item() == pytest.approx(grad, abs=1e-6)
    assert stats["clip_fraction"] == clipped
    assert stats["ratio_mean"] == pytest.approx(math.exp(log_ratio), rel=1e-6)


def test_epsilon_high_is_separate_from_epsilon_low():
    # DAPO's clip-higher: epsilon_high = 0.28 lets ratio e be clipped at 1.28, not 1.2.
    logp = torch.tensor([[-0.7]], requires_grad=True)
    loss, _ = grpo_loss(logp, torch.ones(1, 1), torch.tensor([1.0]), old_logp=logp.detach() - 1.0, epsilon_high=0.28)
    assert loss.item() == pytest.approx(-1.28, abs=1e-6)


def test_one_update_per_rollout_gradient_is_advantage_times_grad_logp():
    # old_logp None: ratio is 1 but still carries the gradient (exp(logp − sg(logp))), so the
    # per-token gradient is −A — the same as passing old_logp = logp.detach() explicitly.
    logp, mask, adv = _batch()
    (g_default,) = torch.autograd.grad(grpo_loss(logp, mask, adv)[0], logp)
    old = logp.detach().nan_to_num(0.0)
    (g_explicit,) = torch.autograd.grad(grpo_loss(logp, mask, adv, old_logp=old)[0], logp)
    torch.testing.assert_close(g_default, g_explicit)
    assert g_default[0, 0].item() == pytest.approx(-0.25)


def test_empty_sequences_give_no_nan():
    logp = torch.tensor([[-1.0, -2.0], [-0.3, -0.4]], requires_grad=True)
    mask = torch.tensor([[1, 1], [0, 0]])  # seq 1 has no completion tokens
    adv = torch.tensor([1.0, 1.0])
    for loss_type in ("grpo", "dapo", "dr_grpo"):
        loss, stats = grpo_loss(logp, mask, adv, ref_logp=logp.detach(), loss_type=loss_type, max_completion_length=2)
        (g,) = torch.autograd.grad(loss, logp)
        assert torch.isfinite(loss) and torch.isfinite(g).all()
        assert g[1].abs().sum() == 0
    # grpo: seq 0 mean −1, seq 1 contributes 0, over 2 sequences → −0.5
    assert grpo_loss(logp, mask, adv)[0].item() == pytest.approx(-0.5)
    # an all-empty micro-batch: loss 0, stats 0, nothing NaN
    loss, stats = grpo_loss(logp, torch.zeros(2, 2), adv, loss_type="dapo")
    assert loss.item() == 0.0 and all(math.isfinite(v) for v in stats.values())


def test_dr_grpo_requires_max_completion_length():
    logp, mask, adv = _batch()
    with pytest.raises(ValueError, match="max_completion_length"):
        grpo_loss(logp, mask, adv, loss_type="dr_grpo")


def test_rejects_mismatched_shapes():
    logp, mask, adv = _batch()
    with pytest.raises(ValueError):
        grpo_loss(logp, mask, adv[:1])
    with pytest.raises(ValueError):
        grpo_loss(logp, mask[:, :2], adv)


@pytest.mark.parametrize("importance_sampling", ["token", "sequence"])
@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo"])
def test_micro_batches_sum_to_the_full_batch(loss_type, importance_sampling):
    # 6 sequences of lengths 0..7 split 2 + 3 + 1; each micro-batch trims its padding to its
    # own longest sequence, as the loop may. Ratios ≠ 1 and a reference exercise every term.
    g = torch.Generator().manual_seed(0)
    B, T = 6, 7
    lengths = torch.tensor([3, 7, 0, 5, 1, 2])
    mask = torch.arange(T)[None, :] < lengths[:, None]  # [B, T]
    logp = (-torch.rand(B, T, generator=g) * 3).requires_grad_()
    old = logp.detach() + 0.4 * torch.randn(B, T, generator=g)
    ref = logp.detach() + 0.3 * torch.randn(B, T, generator=g)
    adv = torch.randn(B, generator=g)
    kwargs = dict(beta=0.04, loss_type=loss_type, max_completion_length=8, importance_sampling=importance_sampling)

    full, full_stats = grpo_loss(logp, mask, adv, old_logp=old, ref_logp=ref, **kwargs)
    (full_grad,) = torch.autograd.grad(full, logp)
    assert 0 < full_stats["clip_fraction"] < 1  # the clipped branch is really exercised

    total = torch.zeros(())
    for rows in (slice(0, 2), slice(2, 5), slice(5, 6)):
        width = max(int(lengths[rows].max()), 1)
        part, _ = grpo_loss(
            logp[rows, :width], mask[rows, :width], adv[rows],
            old_logp=old[rows, :width], ref_logp=ref[rows, :width],
            num_sequences=B, num_tokens=int(mask.sum()), **kwargs,
        )
        total = total + part
    (micro_grad,) = torch.autograd.grad(total, logp)
    torch.testing.assert_close(total, full, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(micro_grad, full_grad, rtol=1e-6, atol=1e-7)

    # and the test can fail: without the full-batch counts the sum is not the full loss
    naive = sum(
        grpo_loss(logp[r], mask[r], adv[r], old_logp=old[r], ref_logp=ref[r], **kwargs)[0]
        for r in (slice(0, 2), slice(2, 5), slice(5, 6))
    )
    assert not torch.isclose(naive, full)


# ---------------------------------------------------------------- GSPO: sequence-level ratios

GSPO_EPS = dict(epsilon_low=3e-4, epsilon_high=4e-4)  # the GSPO paper's clip range


# One sequence of 2 tokens, padded to T = 3 (NaN logp and a garbage old_logp of +5 in the pad:
# the mean must run over the 2 real tokens only), beta 0, loss_type grpo (so a constant per-token
# objective is the sequence's objective), eps 3e-4 / 4e-4.
# log ratios [0.3, −0.1]: s = e^{(0.3 − 0.1)/2} = e^0.1 = 1.105171 (over T = 3 it would be e^0.0667).
#   A = +1: min(1.105171, 1.0004) = 1.0004 → loss −1.0004, clipped: gradient 0, clip_fraction 1.
#   A = −1: min(−1.105171, −1.0004) = −1.105171 → loss +1.105171, unclipped:
#           ∂/∂logp_t of −A·s = −A·s·(1/2) = 0.5525855 on each token.
#   token level, A = +1: r = [e^0.3, e^−0.1] = [1.349859, 0.904837], clip(r) = [1.0004, 0.9997];
#           min = [1.0004, 0.904837] → loss −(1.0004 + 0.904837)/2 = −0.9526186;
#           gradient [0 (clipped), −0.904837/2 = −0.4524187].
# log ratios [0.3, −0.3]: s = e^0 = 1, inside any clip range, though both tokens are outside it.
#   A = +1: loss −1, gradient −1/2 on each token, nothing clipped.
#   token level: min = [1.0004, e^−0.3 = 0.7408182] → loss −0.8706091; gradient [0, −0.3704091].
@pytest.mark.parametrize(
    "log_ratios, adv, level, loss, grad, clipped",
    [
        ((0.3, -0.1), 1.0, "sequence", -1.0004, (0.0, 0.0), 1.0),
        ((0.3, -0.1), -1.0, "sequence", 1.105171, (0.5525855, 0.5525855), 0.0),
        ((0.3, -0.1), 1.0, "token", -0.9526186, (0.0, -0.4524187), 0.5),
        ((0.3, -0.3), 1.0, "sequence", -1.0, (-0.5, -0.5), 0.0),
        ((0.3, -0.3), 1.0, "token", -0.8706091, (0.0, -0.3704091), 0.5),
    ],
)
def test_sequence_level_ratio_hand_derived(log_ratios, adv, level, loss, grad, clipped):
    logp = torch.tensor([[-0.7, -1.2, float("nan")]], requires_grad=True)
    old = logp.detach().nan_to_num(0.0) - torch.tensor([[*log_ratios, -5.0]])
    got, stats = grpo_loss(logp, torch.tensor([[1, 1, 0]]), torch.tensor([adv]), old_logp=old, beta=0.0,
                           importance_sampling=level, **GSPO_EPS)
    assert got.item() == pytest.approx(loss, abs=1e-6)
    (g,) = torch.autograd.grad(got, logp)
    torch.testing.assert_close(g, torch.tensor([[*grad, 0.0]]), rtol=0, atol=1e-6)
    assert stats["clip_fraction"] == pytest.approx(clipped)


def test_sequence_level_ratio_is_per_sequence_and_its_mean_is_token_weighted():
    # Two sequences: [0.2, 0.4] → s0 = e^0.3; [−0.6] → s1 = e^−0.6. ratio_mean over the 3 tokens:
    # (2·e^0.3 + e^−0.6) / 3 = (2·1.349859 + 0.548812) / 3 = 1.082843.
    logp = torch.tensor([[-1.0, -1.0], [-1.0, 0.0]], requires_grad=True)
    old = logp.detach() - torch.tensor([[0.2, 0.4], [-0.6, 0.0]])
    _, stats = grpo_loss(logp, torch.tensor([[1, 1], [1, 0]]), torch.tensor([1.0, 1.0]), old_logp=old, beta=0.0,
                         importance_sampling="sequence", epsilon_low=0.5, epsilon_high=0.5)
    assert stats["ratio_mean"] == pytest.approx(1.082843, abs=1e-6)
    assert stats["clip_fraction"] == 0.0  # both inside [0.5, 1.5]


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo"])
def test_sequence_level_on_policy_equals_token_level(loss_type):
    # old_logp None: every ratio is 1 at both levels and the gradients agree (the GSPO paper's
    # remark); the KL term (per token at both levels) is included through a reference.
    logp, mask, adv = _batch()
    ref = (logp.detach() + 0.3).nan_to_num(1.0)
    kwargs = dict(ref_logp=ref, beta=0.04, loss_type=loss_type, max_completion_length=4)
    tok, tok_stats = grpo_loss(logp, mask, adv, **kwargs)
    seq, seq_stats = grpo_loss(logp, mask, adv, importance_sampling="sequence", **kwargs)
    (g_tok,) = torch.autograd.grad(tok, logp)
    (g_seq,) = torch.autograd.grad(seq, logp)
    torch.testing.assert_close(seq, tok)
    torch.testing.assert_close(g_seq, g_tok)
    assert seq_stats["kl"] == pytest.approx(tok_stats["kl"]) and seq_stats["kl"] > 0


def test_importance_sampling_is_validated():
    logp, mask, adv = _batch()
    with pytest.raises(ValueError, match="importance_sampling"):
        grpo_loss(logp, mask, adv, importance_sampling="sentence")


# ---------------------------------------------------------------- DAPO: dynamic sampling, overlong filtering


@pytest.mark.parametrize(
    "rewards, group_size, want",
    [
        (REWARDS, 4, [False, True]),  # [1,0,0,1] differs, [2,2,2,2] ties
        ([0.0, 0.0, 1.0, 1.0, 0.5, 0.25], 2, [True, True, False]),  # all-wrong and all-right both tie
        ([0.3, 0.3 + 1e-7, 0.7, 0.7], 2, [False, True]),  # any difference is signal (exact equality)
    ],
)
def test_tied_groups(rewards, group_size, want):
    got = tied_groups(torch.tensor(rewards, dtype=torch.float64), group_size)
    assert got.dtype == torch.bool and got.tolist() == want


@pytest.mark.parametrize(
    "ids, mask, eos, want_truncated",
    [
        # row 0 ends with EOS 2 then padding; row 1 fills the budget without EOS; row 2 is one EOS
        ([[5, 2, 0], [5, 6, 7], [2, 0, 0]], [[1, 1, 0], [1, 1, 1], [1, 0, 0]], [2], [False, True, False]),
        # several end tokens (Qwen's <|im_end|> and <|endoftext|>): either one ends a completion
        ([[5, 9, 0], [5, 6, 7]], [[1, 1, 0], [1, 1, 1]], [2, 9], [False, True]),
        # an end-token id outside the mask does not count
        ([[5, 6, 2]], [[1, 1, 0]], [2], [True]),
    ],
)
def test_mask_truncated(ids, mask, eos, want_truncated):
    mask_t = torch.tensor(mask, dtype=torch.float32)
    new_mask, truncated = mask_truncated(torch.tensor(ids), mask_t, eos)
    assert truncated.tolist() == want_truncated
    assert new_mask.dtype == mask_t.dtype
    for row, cut in enumerate(want_truncated):
        want = torch.zeros(len(ids[row])) if cut else mask_t[row]
        torch.testing.assert_close(new_mask[row], want)
    assert mask_t.tolist() == mask  # the input is not modified


def test_masked_truncated_completion_adds_no_loss_or_gradient():
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-0.5, -1.5, -3.0]], requires_grad=True)
    ids = torch.tensor([[5, 2, 0], [5, 6, 7]])  # row 1 has no EOS: truncated
    mask, _ = mask_truncated(ids, torch.tensor([[1, 1, 0], [1, 1, 1]]), [2])
    # dapo over the 2 remaining tokens of row 0 with A = 1: −(1 + 1)/2 = −1; row 1 gets gradient 0
    loss, stats = grpo_loss(logp, mask, torch.tensor([1.0, -0.5]), loss_type="dapo")
    assert loss.item() == pytest.approx(-1.0) and stats["completion_tokens"] == 2
    (g,) = torch.autograd.grad(loss, logp)
    assert g[1].abs().sum() == 0 and g[0, 0].item() == pytest.approx(-0.5)


# ---------------------------------------------------------------- several reward components

# One group of G = 4 detection completions: iou [0.9, 0.1, 0.5, 0.5], format [1, 1, 1, 0].
#   sum: total = [1.9, 1.1, 1.5, 0.5] as scored.
#   iou:    mean 0.5, deviations [.4, −.4, 0, 0], unbiased var 0.32/3, std 0.3265986
#           → z = ±0.4 / 0.3266986 = ±1.224370, 0, 0
#   format: mean 0.75, deviations [.25, .25, .25, −.75], unbiased var 0.75/3, std 0.5
#           → z = [0.25, 0.25, 0.25, −0.75] / 0.5001 = [0.499900, 0.499900, 0.499900, −1.499700]
#   normalize_then_sum = [1.724270, −0.724470, 0.499900, −1.499700]
#   with weights {iou: 2}: [2.948640, −1.948840, 0.499900, −1.499700]
GROUP = [{"format": 1.0, "iou": 0.9, "total": 1.9}, {"format": 1.0, "iou": 0.1, "total": 1.1},
         {"format": 1.0, "iou": 0.5, "total": 1.5}, {"format": 0.0, "iou": 0.5, "total": 0.5}]


@pytest.mark.parametrize(
    "mode, weights, want",
    [
        ("sum", None, [1.9, 1.1, 1.5, 0.5]),
        ("normalize_then_sum", None, [1.724270, -0.724470, 0.499900, -1.499700]),
        ("normalize_then_sum", {"iou": 2.0}, [2.948640, -1.948840, 0.499900, -1.499700]),
    ],
)
def test_aggregate_rewards_hand_derived(mode, weights, want):
    got = aggregate_rewards(GROUP, 4, mode, weights=weights)
    torch.testing.assert_close(got, torch.tensor(want), rtol=0, atol=1e-5)


def test_aggregate_rewards_constant_component_contributes_exactly_zero():
    # G = 3, two groups. Group 0: format constant at 0.1 (its float mean is not exactly 0.1),
    # accuracy [1, 0, 0]. Group 1: every component constant (at 0.1 and 0.7, whose float means
    # differ from them by ~1e-17, i.e. ~1e-13 after dividing by eps) → exactly 0, still tied.
    # accuracy in group 0: mean 1/3, deviations [2/3, −1/3, −1/3], unbiased std sqrt(1/3) = 0.577350
    #   → [0.666667, −0.333333, −0.333333] / 0.577450 = [1.154501, −0.577250, −0.577250]
    rewards = [{"format": 0.1, "accuracy": a, "total": 0.1 + a} for a in (1.0, 0.0, 0.0)]
    rewards += [{"format": 0.1, "accuracy": 0.7, "total": 0.8}] * 3
    got = aggregate_rewards(rewards, 3, "normalize_then_sum")
    torch.testing.assert_close(got[:3], torch.tensor([1.154501, -0.577250, -0.577250]), rtol=0, atol=1e-5)
    assert got[3:].tolist() == [0.0, 0.0, 0.0]
    assert tied_groups(got, 3).tolist() == [False, True]


def test_aggregate_rewards_missing_component_counts_as_zero_and_mode_is_checked():
    # pair {confidence 1, (missing)}: like {1, 0} → ±0.5 / (sqrt(0.5) + 1e-4) = ±0.707007
    got = aggregate_rewards([{"confidence": 1.0, "total": 1.0}, {"total": 0.0}], 2, "normalize_then_sum")
    torch.testing.assert_close(got, torch.tensor([0.707007, -0.707007]), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="unknown reward aggregation .mean."):
        aggregate_rewards(GROUP, 4, "mean")  # type: ignore[arg-type]


# ---------------------------------------------------------------- entropy from the same chunk logits


def _reference_entropy(hidden, weight, bias=None, temperature=1.0):
    logits = hidden @ weight.T
    if bias is not None:
        logits = logits + bias
    logp = torch.log_softmax(logits.float() / temperature, -1)  # [N, V]
    return -(logp.exp() * logp).sum(-1)  # [N]


@pytest.mark.parametrize("chunk_size", [1, 5, 37, 256])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_token_entropy_matches_direct_computation(chunk_size, temperature):
    hidden, weight, bias, targets = _inputs()
    logp, entropy = token_logprobs(hidden, weight, targets, bias=bias, temperature=temperature,
                                   chunk_size=chunk_size, return_entropy=True)
    torch.testing.assert_close(entropy, _reference_entropy(hidden, weight, bias, temperature), rtol=1e-5, atol=1e-5)
    assert entropy.shape == (37,) and entropy.dtype == torch.float32 and not entropy.requires_grad
    # the log-probs and their gradients are those of the plain call
    plain = token_logprobs(hidden, weight, targets, bias=bias, temperature=temperature, chunk_size=chunk_size)
    torch.testing.assert_close(logp, plain)
    g_with = torch.autograd.grad(logp.sum(), (hidden, weight, bias))
    g_plain = torch.autograd.grad(plain.sum(), (hidden, weight, bias))
    for a, b in zip(g_with, g_plain):
        torch.testing.assert_close(a, b)


def test_token_entropy_hand_derived():
    # weight 0: every logit is 0, the distribution is uniform over V = 50 → entropy ln 50 = 3.912023
    hidden, weight, _, targets = _inputs()
    with torch.no_grad():
        _, h = token_logprobs(hidden, torch.zeros_like(weight), targets, return_entropy=True)
    assert h.tolist() == pytest.approx([math.log(50)] * 37, abs=1e-5)
    # a bias of 30 on one token: p ≈ 1 there, entropy ≈ 0 (about 49·31·e^−30 ≈ 1.4e−10)
    bias = torch.zeros(50)
    bias[3] = 30.0
    with torch.no_grad():
        _, h = token_logprobs(hidden, torch.zeros_like(weight), targets, bias=bias, return_entropy=True)
    assert h.abs().max().item() < 1e-6


def test_token_entropy_keeps_no_logits_for_backward_and_handles_empty():
    hidden, weight, _, targets = _inputs(n=N_BIG, h=H_SMALL, v=V_BIG)
    saved = _saved_for_backward(lambda: token_logprobs(hidden, weight, targets, chunk_size=CHUNK, return_entropy=True))
    assert _vocab_rows(saved, V_BIG) == []
    logp, entropy = token_logprobs(hidden[:0], weight, targets[:0], return_entropy=True)
    assert logp.shape == entropy.shape == (0,)
