import math

import numpy as np
import pytest
import torch

from oceanda.contrastive.similarity import ALIASES, KINDS, Similarity, canonical_kind, numpy_scores
from oceanda.errors import OceandaError


def _z(seed, n, ne=5):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, ne, generator=g, dtype=torch.float64)


def test_definitions_against_loops():
    a, b = _z(0, 4), _z(1, 3)
    for kind in ("cosine", "inner_product", "neg_sq_distance"):
        sim = Similarity(kind, tau=0.5).double()
        S = sim(a, b)
        assert S.shape == (4, 3)
        for i in range(4):
            for j in range(3):
                if kind == "cosine":
                    ref = float(a[i] @ b[j] / (a[i].norm() * b[j].norm()))
                elif kind == "inner_product":
                    ref = float(a[i] @ b[j])
                else:
                    ref = -float(((a[i] - b[j]) ** 2).sum()) / 2
                assert abs(float(S[i, j]) - ref / float(sim.tau)) < 1e-10
        p = sim.paired(a[:3], b)
        assert torch.allclose(p, S[:3].diagonal(), atol=1e-12)


def test_cosine_scale_invariant():
    a, b = _z(2, 6), _z(3, 6)
    sim = Similarity("cosine").double()
    S = sim(a, b)
    scale = torch.rand(6, 1, dtype=torch.float64) * 10 + 0.1
    assert torch.allclose(sim(a * scale, b * 3.7), S, atol=1e-12)
    ip = Similarity("inner_product").double()
    assert not torch.allclose(ip(a * 2, b), ip(a, b))


def test_learned_tau_is_clamped_and_trainable():
    sim = Similarity("inner_product", tau=0.1, learn_tau=True, tau_min=0.05)
    assert abs(float(sim.tau.detach()) - 0.1) < 1e-6
    assert any(p is sim.log_tau for p in sim.parameters())
    with torch.no_grad():
        sim.log_tau.fill_(math.log(1e-6))
    assert abs(float(sim.tau.detach()) - 0.05) < 1e-6
    fixed = Similarity("inner_product", tau=0.1)
    assert len(list(fixed.parameters())) == 0


def test_errors():
    with pytest.raises(OceandaError, match="expected one of"):
        Similarity("dott")
    with pytest.raises(ValueError, match="tau"):
        Similarity("cosine", tau=0.0)
    with pytest.raises(OceandaError, match="same ne"):
        Similarity()(_z(0, 3, 4), _z(1, 3, 5))


def test_one_alias_table_for_torch_and_numpy():
    assert KINDS == ("cosine", "inner_product", "neg_sq_distance")
    assert canonical_kind("Dot") == "inner_product" and canonical_kind("neg-sq-dist") == "neg_sq_distance"
    assert Similarity("negsqdist").kind == "neg_sq_distance"
    assert set(ALIASES.values()) == set(KINDS)
    with pytest.raises(ValueError, match="unknown similarity"):
        canonical_kind("euclid")


def test_numpy_scores_match_the_torch_similarity():
    a, b = _z(4, 50, 6), _z(5, 7, 6)
    for kind in KINDS:
        sim = Similarity(kind, tau=0.3).double()
        ref = sim(a, b).numpy()
        got = numpy_scores(a.numpy(), b.numpy(), kind, tau=float(sim.tau), chunk=16)  # several chunks
        assert got.shape == (50, 7) and got.dtype == np.float64
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-10)
        one = numpy_scores(a.numpy(), b.numpy()[3], kind, tau=0.3)
        assert one.shape == (50,)
        np.testing.assert_array_equal(one, numpy_scores(a.numpy(), b.numpy()[3:4], kind, tau=0.3)[:, 0])
