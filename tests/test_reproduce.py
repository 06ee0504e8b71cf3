"""`oceanda reproduce baptista2025 --quick` end to end, and the closed forms the experiments rest on."""

import json

import numpy as np
import pytest
import torch

from oceanda import cli
from oceanda.contrastive import gaussian
from oceanda.experiments import _grf
from oceanda.experiments import torus_da as _torus
from oceanda.testbeds.torus import TorusFlow


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    torch.set_num_threads(2)
    out = tmp_path_factory.mktemp("reproduce") / "run"
    rc = cli.main(["reproduce", "baptista2025", "--quick", "--out", str(out), "--seed", "0", "--quiet"])
    assert rc == 0
    return out, json.loads((out / "results.json").read_text())


def test_quick_writes_results_and_figures(quick):
    out, r = quick
    for key in ("gaussian_random_field", "digits", "lagrangian", "reductions", "paper", "config", "seconds_total"):
        assert key in r
    for name in r["figures"]:
        png = out / name
        assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {"grf_sweeps.png", "digits_generated.png", "torus_assimilation.png"} <= set(r["figures"])


def test_quick_gaussian_random_field_trends(quick):
    sw = quick[1]["gaussian_random_field"]["sweeps"]
    dims = sw["embedding_dim"]
    assert dims["values"] == [1, 5]
    # rank 1 cannot represent the 5 canonical directions (its population optimum errs by 0.44); rank 5 can
    assert dims["err_u_given_v"][0] > 1.5 * dims["err_u_given_v"][1]
    assert dims["err_u_given_v"][0] >= dims["population_optimum"][0]["err_u_given_v"] - 1e-6
    assert dims["population_optimum"][1]["err_u_given_v"] < 1e-10
    # at quick size (a few hundred steps) the batch and N trends are within the optimisation noise:
    # only check they were measured
    for key in ("batch_size", "n_samples"):
        assert len(sw[key]["err_u_given_v"]) == len(sw[key]["values"]) == 2
        assert all(0 < e < 2 for e in sw[key]["err_u_given_v"] + sw[key]["err_v_given_u"])


def test_quick_digits(quick):
    d = quick[1]["digits"]["losses"]
    assert set(d) == {"label|image", "image|label", "two-sided"}
    assert d["label|image"]["test_accuracy"] > 0.85  # full run: >= 0.95
    for kind in ("image|label", "two-sided"):
        assert d[kind]["zero_shot_accuracy"] > 0.6
        assert d[kind]["fine_tuned_accuracy"] > 0.8
    for r in d.values():
        g = r["generation"]
        assert 1.0 <= g["ess_mean"] <= g["library_size"]
        assert 0.0 <= g["purity_mean"] <= 1.0
    # the generative loss spreads its weight over many images of the label; the classifier's does not
    assert d["image|label"]["generation"]["ess_mean"] > d["label|image"]["generation"]["ess_mean"]


def test_quick_lagrangian(quick):
    lag = quick[1]["lagrangian"]
    for direction in ("field_from_trajectory", "trajectory_from_field"):
        for k in ("R@1", "R@5"):
            assert 0.0 <= lag["retrieval"][direction][k] <= 1.0
        assert lag["retrieval"][direction]["R@1"] <= lag["retrieval"][direction]["R@5"]
    da = lag["data_assimilation"]
    assert set(da) == {"contrastive", "enkf_40", "linearised_gaussian", "climatology"}
    for m, s in da.items():
        for reg in _torus.REGIONS:
            for key in ("rmse", "rmse_fraction_of_climatology", "spread", "spread_skill", "crps"):
                assert np.isfinite(s[reg][key]), (m, reg, key)
        assert s["seconds_per_trajectory"] >= 0
        # Parseval: over the whole torus the RMSE does not depend on time
        assert s["domain_window"]["rmse"] == pytest.approx(s["domain_t0"]["rmse"], rel=1e-9)
    assert da["climatology"]["domain_t0"]["rmse_fraction_of_climatology"] == pytest.approx(1.0)
    # one drifter at noise 1e-3 carries information: the linearised Gaussian beats climatology
    assert da["linearised_gaussian"]["domain_t0"]["rmse_fraction_of_climatology"] < 0.9
    assert da["linearised_gaussian"]["band_window"]["rmse_fraction_of_climatology"] < 0.8


def test_refuses_non_empty_out_without_overwrite(tmp_path, capsys):
    (tmp_path / "x").write_text("keep")
    rc = cli.main(["reproduce", "baptista2025", "--quick", "--out", str(tmp_path), "--quiet"])
    assert rc == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "x").read_text() == "keep"


def test_unknown_experiment_is_refused(tmp_path, capsys):
    rc = cli.main(["reproduce", "nosuchpaper", "--out", str(tmp_path / "o")])
    assert rc == 2 and "baptista2025" in capsys.readouterr().err


# ---------------------------------------------------------------- closed forms behind the numbers
def test_grf_covariance_against_monte_carlo():
    """The joint covariance of (u, v) matches draws of the 1000-mode expansion itself."""
    p = _grf.grf_problem()
    rng = np.random.default_rng(0)
    j = np.arange(1000)
    lam = ((j * np.pi) ** 2 + 9.0) ** -2.0
    phi = np.where(j == 0, 1.0, np.sqrt(2) * np.cos(np.pi * j * p.points[:, None]))
    xi = rng.standard_normal((20000, 1000))
    u = xi * np.sqrt(lam) @ phi.T + 0.05 * rng.standard_normal((20000, 12))
    d = 1 / np.sqrt(np.diag((phi * lam) @ phi.T + 0.0025))
    u = u * d
    v = xi[:, :5]
    np.testing.assert_allclose(np.cov(u.T), p.Cuu, atol=0.03)
    np.testing.assert_allclose(u.T @ v / len(v), p.Cuv, atol=0.03)


def test_grf_mean_errors_are_zero_at_the_optimum_and_one_at_zero():
    p = _grf.grf_problem()
    A = gaussian.inner_product_conditional_optimum(p.Cuu, p.Cuv, p.Cvv)
    e = _grf.mean_errors(A, p)
    assert e["err_u_given_v"] < 1e-10 and e["err_v_given_u"] < 1e-10
    e0 = _grf.mean_errors(np.zeros_like(A), p)
    assert e0["err_u_given_v"] == pytest.approx(1.0) and e0["err_v_given_u"] == pytest.approx(1.0)


def test_velocity_and_psi_bases_match_the_testbed():
    flow = TorusFlow()
    rng = np.random.default_rng(1)
    c = flow.sample_coefficients(3, rng)
    x, y = rng.random((3, 5)), rng.random((3, 5))
    u, v = flow.velocity_at(c, x, y, t=0.03)
    V = _torus.velocity_basis(flow, x, y, np.full((3, 5), 0.03))  # [3, 5, 2, 98]
    np.testing.assert_allclose(np.einsum("fnca,fa->fnc", V, c)[..., 0], u, atol=1e-10)
    np.testing.assert_allclose(np.einsum("fnca,fa->fnc", V, c)[..., 1], v, atol=1e-10)
    B = _torus.psi_basis(flow, 8, np.array([0.0, 0.05]))
    psi = flow.gridded(c, [0.0, 0.05], n=8)["psi"]
    np.testing.assert_allclose(np.einsum("tyxa,fa->ftyx", B, c), psi, atol=1e-10)
    np.testing.assert_allclose(_torus.rotate(flow, _torus.rotate(flow, c, 0.02), -0.02), c, atol=1e-12)


def test_linearised_gaussian_recovers_a_flow_from_a_noiseless_track():
    """With tiny noise and a long track the linearised posterior mean is close to the truth in the
    modes the track sees, and its covariance is below the prior's."""
    flow = TorusFlow()
    rng = np.random.default_rng(2)
    c = flow.sample_coefficients(2, rng)
    cfg = {"dt": 1e-3, "T": 0.1, "keep_every": 1}
    pos, times = _torus.tracks(flow, c, cfg)
    res = _torus.linearised_gaussian(flow, pos, times, 1e-4, 10, rng)
    for r, truth in zip(res, c):
        prior_var = _torus.prior_sd(flow) ** 2
        assert np.all(np.diag(r["cov"]) <= prior_var + 1e-15)
        err = np.sum((r["mean"] - truth) ** 2) / np.sum(truth**2)
        assert err < 0.5
