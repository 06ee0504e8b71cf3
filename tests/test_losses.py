import math

import numpy as np
import pytest
import torch

from oceanda.contrastive import losses as L
from oceanda.errors import OceandaError


def _S(n=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, n, generator=g, dtype=torch.float64) * 2


def _K(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g, dtype=torch.float64)
    return torch.exp(-torch.cdist(x, x) ** 2 / 2)


def _lme(vals):
    m = max(vals)
    return m + math.log(sum(math.exp(v - m) for v in vals) / len(vals))


def test_conditional_losses_match_loops():
    S = _S()
    n = S.shape[0]
    s = S.tolist()
    sg = sum(-s[j][j] + _lme([s[i][j] for i in range(n)]) for j in range(n)) / n
    og = sum(-s[i][i] + _lme([s[i][j] for j in range(n)]) for i in range(n)) / n
    assert abs(float(L.state_given_obs(S)) - sg) < 1e-10
    assert abs(float(L.obs_given_state(S)) - og) < 1e-10
    assert abs(float(L.clip(S)) - 0.5 * (sg + og)) < 1e-10
    assert abs(float(L.weighted_conditional(S, 0.3, 1.7)) - (0.15 * sg + 0.85 * og)) < 1e-10
    assert abs(float(L.get_loss("state|obs")(S)) - sg) < 1e-10
    assert abs(float(L.get_loss("obs|state")(S)) - og) < 1e-10
    assert abs(float(L.get_loss("weighted", lambda_state=2.0, lambda_obs=0.0)(S)) - sg) < 1e-10


def test_clip_is_cross_entropy_minus_log_n():
    S = _S(9, 1)
    assert abs(float(L.clip_cross_entropy(S)) - math.log(9) - float(L.clip(S))) < 1e-10


def test_joint_matches_loop_and_is_stable():
    S = _S(6, 2)
    n = 6
    s = S.tolist()
    off = [s[i][j] for i in range(n) for j in range(n) if i != j]
    ref = -sum(s[i][i] for i in range(n)) / n + _lme(off)
    assert abs(float(L.joint(S)) - ref) < 1e-10
    big = S * 1e4  # logsumexp keeps it finite
    assert torch.isfinite(L.joint(big)) and torch.isfinite(L.clip(big))


def test_mmd_conditional_matches_loop():
    S = _S(5, 3)
    n = 5
    Ks, Ko = _K(n, 4), _K(n, 5)
    s = S.numpy()
    ref_s = 0.0  # state|obs: weights over states for each obs j
    for j in range(n):
        w = np.exp(s[:, j] - s[:, j].max())
        w /= w.sum()
        ref_s += 0.5 * sum(Ks[a, b].item() * w[a] * w[b] for a in range(n) for b in range(n))
        ref_s -= sum(Ks[j, i].item() * w[i] for i in range(n))
    ref_s /= n
    ref_o = 0.0
    for i in range(n):
        w = np.exp(s[i, :] - s[i, :].max())
        w /= w.sum()
        ref_o += 0.5 * sum(Ko[a, b].item() * w[a] * w[b] for a in range(n) for b in range(n))
        ref_o -= sum(Ko[i, j].item() * w[j] for j in range(n))
    ref_o /= n
    got = float(L.mmd_conditional(S, Ks, Ko, lambda_state=1.0, lambda_obs=0.5))
    assert abs(got - (0.5 * ref_s + 0.25 * ref_o)) < 1e-10
    assert abs(float(L.mmd_conditional(S, K_state=Ks)) - 0.5 * ref_s) < 1e-10


def test_mmd_joint_matches_loop():
    S = _S(4, 6)
    n = 4
    Ks, Ko = _K(n, 7).numpy(), _K(n, 8).numpy()
    s = S.numpy()
    P = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if i != j:
                P[i, j] = math.exp(s[i, j])
    P /= P.sum()
    first = sum(P[i, j] * P[k, l] * Ks[i, k] * Ko[j, l] for i in range(n) for j in range(n) for k in range(n) for l in range(n))
    second = sum(P[i, j] * Ks[i, m] * Ko[j, m] for i in range(n) for j in range(n) for m in range(n)) / n
    got = float(L.mmd_joint(S, torch.tensor(Ks), torch.tensor(Ko)))
    assert abs(got - (0.5 * first - second)) < 1e-10


def test_mmd_loss_object_builds_kernels_and_gradients():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 3, generator=g), torch.randn(8, 2, generator=g)
    S = (torch.randn(8, 8, generator=g)).requires_grad_()
    for name in ("mmd_conditional", "mmd_joint"):
        loss = L.get_loss(name)
        assert loss.needs_data
        val = loss(S, x, y)
        val.backward()
        assert torch.isfinite(val) and S.grad is not None and S.grad.abs().sum() > 0
        S.grad = None
        with pytest.raises(OceandaError, match="raw state"):
            loss(S)


def test_loss_errors():
    with pytest.raises(OceandaError, match="expected one of"):
        L.get_loss("infonce")
    with pytest.raises(OceandaError, match="takes no option"):
        L.get_loss("clip", lambda_state=2)
    with pytest.raises(OceandaError, match="square"):
        L.clip(torch.zeros(3, 4))
