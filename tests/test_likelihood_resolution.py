"""likelihood_resolution: the gate a learned likelihood passes before it weights a forecast ensemble."""

import numpy as np
import pytest
import xarray as xr

from oceanda.analysis.resolution import rank_correlation
from oceanda.analysis.windows import WindowSpec
from oceanda.errors import DataValidationError, GridMismatchError
from oceanda.metrics import likelihood_resolution

SPEC = WindowSpec(size=8, stride=4, halo=2, periodic=True)


class ExactCritic:
    """Logit = minus the member window's RMSE against a known truth (times ``gain``), or a constant."""

    window, state_channels, obs_channels = SPEC, [("ssh", None)], [("ssh", None)]

    def __init__(self, truth, gain=1.0, constant=False):
        from oceanda.analysis import windows as W

        self.W, self.truth, self.gain, self.constant = W, truth, gain, constant

    def logits(self, states, obs):
        if self.constant:
            return np.full(states.shape[:2], 3.0)
        iy, ix = self.W.positions(*self.truth.shape[-2:], SPEC)
        tw = self.W.extract(self.truth[None], iy, ix, SPEC.size, 0, True)
        return -self.gain * np.sqrt(((states - tw[None]) ** 2).mean(axis=(2, 3, 4)))


def _case(n=6, ny=16, nx=16, seed=0):
    rng = np.random.default_rng(seed)
    truth = rng.standard_normal((ny, nx))
    ens = truth[None] + rng.uniform(0.1, 1.0, (n, 1, 1)) * rng.standard_normal((n, ny, nx))
    obs = np.where(rng.random((ny, nx)) < 0.3, truth, np.nan)[None]
    return ens, truth, obs


def test_exact_critic_ranks_perfectly_and_its_range_is_the_error_spread():
    ens, truth, obs = _case()
    r = likelihood_resolution(ExactCritic(truth, gain=10.0), ens, truth, obs)
    assert len(r.rank_corr) == 16  # 16 x 16 grid, stride 4
    np.testing.assert_allclose(r.rank_corr, 1.0)
    np.testing.assert_allclose(r.logit_range, 10.0 * (r.errors.max(axis=0) - r.errors.min(axis=0)), rtol=1e-12)
    assert r.summary["rank_corr_median"] == pytest.approx(1.0)
    assert r.summary["logit_range_median"] > 1.0


def test_a_critic_that_prefers_the_worst_member_scores_minus_one():
    ens, truth, obs = _case(seed=1)
    r = likelihood_resolution(ExactCritic(truth, gain=-1.0), ens, truth, obs)
    np.testing.assert_allclose(r.rank_corr, -1.0)


def test_constant_critic_has_zero_range_and_no_ranking():
    ens, truth, obs = _case()
    r = likelihood_resolution(ExactCritic(truth, constant=True), ens, truth, obs)
    np.testing.assert_array_equal(r.logit_range, 0.0)
    assert np.isnan(r.rank_corr).all() and np.isnan(r.summary["rank_corr_median"])


def test_datasets_in_the_library_layout():
    ens, truth, obs = _case()
    y, x = np.arange(16.0), np.arange(16.0)
    eds = xr.Dataset({"ssh": (("member", "y", "x"), ens), "psi": (("member", "layer", "y", "x"), np.stack([ens, ens], 1))},
                     coords={"y": y, "x": x})
    tds = xr.Dataset({"ssh": (("time", "y", "x"), truth[None])}, coords={"y": y, "x": x})
    ods = xr.Dataset({"ssh": (("y", "x"), obs[0])}, coords={"y": y, "x": x})
    r = likelihood_resolution(ExactCritic(truth), eds, tds, ods)
    np.testing.assert_allclose(r.rank_corr, 1.0)


def test_rank_correlation_matches_scipy():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((9, 4)), rng.standard_normal((9, 4))
    a[:3, 0] = 0.0  # ties
    want = [spearmanr(a[:, k], b[:, k]).statistic for k in range(4)]
    np.testing.assert_allclose(rank_correlation(a, b), want, rtol=1e-12)


def test_one_member_is_a_one_line_error():
    ens, truth, obs = _case()
    with pytest.raises(DataValidationError, match="ensemble: 1 member; expected at least 2") as e:
        likelihood_resolution(ExactCritic(truth), ens[:1], truth, obs)
    assert "\n" not in str(e.value)


def test_truth_on_another_grid_is_a_one_line_error():
    ens, truth, obs = _case()
    with pytest.raises(GridMismatchError, match="truth: grid 12 x 16; expected the ensemble's grid 16 x 16") as e:
        likelihood_resolution(ExactCritic(truth), ens, truth[:12], obs)
    assert "\n" not in str(e.value)


def test_an_ensemble_without_member_dim_or_the_variable_is_refused():
    ens, truth, obs = _case()
    ds = xr.Dataset({"ssh": (("time", "y", "x"), ens)})
    with pytest.raises(DataValidationError, match="6 times; expected one time"):
        likelihood_resolution(ExactCritic(truth), ds, truth, obs)
    with pytest.raises(DataValidationError, match="lacks \\['ssh'\\]"):
        likelihood_resolution(ExactCritic(truth), xr.Dataset({"sst": (("member", "y", "x"), ens)}), truth, obs)


def test_exact_likelihood_reference_agrees_with_a_bayes_critic():
    ens, truth, obs = _case(seed=2)

    class Bayes(ExactCritic):
        def logits(self, states, o):  # the Gaussian log-likelihood (sigma 0.5) of the window's own observations
            h, s = SPEC.halo, SPEC.size
            return -0.5 * np.nansum((states - o[None, :, :, h:h + s, h:h + s]) ** 2, axis=(2, 3, 4)) / 0.25

    r = likelihood_resolution(Bayes(truth), ens, truth, obs, obs_error=0.5)
    np.testing.assert_allclose(r.oracle_logits, r.logits, rtol=1e-12)
    assert r.summary["agreement_median"] == pytest.approx(1.0)
    assert -1.0 <= r.summary["oracle_rank_corr_median"] <= 1.0
    assert "agreement_median" not in likelihood_resolution(Bayes(truth), ens, truth, obs).summary  # no error known


def test_neighbour_negatives_are_perturbed_copies_of_the_groups_positive():
    from oceanda.analysis.window_training import NeighbourNegatives, WindowPairSampler

    rng = np.random.default_rng(0)
    states = rng.standard_normal((6, 1, 16, 16)).astype(np.float32)
    errors = 0.1 * rng.standard_normal((3, 1, 16, 16)).astype(np.float32)
    nb = NeighbourNegatives(errors, k=3, scale=(1.0, 1.0))
    s = WindowPairSampler(states, np.zeros(6, int), [0], [0], lambda n, r: r.random((n, 16, 16)) < 0.3, [0.0],
                          WindowSpec(8, 4, 2, True), neighbours=nb)
    xs, xo = s(8, np.random.default_rng(1))  # two groups of 4
    assert xs.shape == (8, 1, 8, 8) and xo.shape == (8, 2, 12, 12)
    for g in (0, 4):
        d = xs[g + 1:g + 4] - xs[g]
        assert np.all(np.abs(d).max(axis=(1, 2, 3)) > 0)  # neighbours differ from the positive ...
        assert np.abs(d).max() < 1.0  # ... by an error-sized perturbation
    with pytest.raises(Exception, match="expected finite"):
        NeighbourNegatives(np.full((1, 1, 4, 4), np.nan))


def test_learned_update_tempers_each_window_to_the_target_ess():
    """Healthy windows keep softmax(logits); degenerate ones are flattened just enough (ESS = min_ess)."""
    from oceanda.analysis.learned_update import _tempered
    from oceanda.analysis.posterior import effective_sample_size, softmax_weights

    g = np.random.default_rng(0)
    logits = np.stack([0.01 * g.standard_normal(20), 50.0 * g.standard_normal(20)], axis=1)
    w, ess = _tempered(logits, min_ess=8.0)
    np.testing.assert_allclose(w.sum(0), 1.0)
    np.testing.assert_allclose(w[:, 0], softmax_weights(logits[:, 0], 1.0))
    assert effective_sample_size(softmax_weights(logits[:, 1], 1.0)) < 8.0
    assert ess[1] == pytest.approx(8.0, rel=1e-6) and ess[0] > 19.0


def test_the_bundled_pattern_model_reads_observations_of_one_variable_and_their_errors():
    """The bundled window model was trained on a pattern mixture (SSH and psi observed, error channel): SSH
    tracks alone are read with psi unobserved, and the tracks' own ``ssh_error`` enters the logits."""
    from pathlib import Path

    from oceanda import io

    sample = Path(__file__).resolve().parents[1] / "sample_data"
    lib = io.open_states(sample / "qg" / "library.nc")
    truth = io.open_states(sample / "qg" / "truth_eval_1.nc").isel(time=5).load()
    obs = io.open_obs(sample / "qg" / "obs_altimetry_eval_1.nc", like=lib).isel(time=5).load()
    ens = lib.isel(time=slice(0, 4)).rename(time="member").drop_vars("member", errors="ignore")[["psi", "ssh"]].load()
    assert "psi" not in obs.data_vars
    r = likelihood_resolution(sample / "models" / "qg_window", ens, truth, obs)
    assert np.isfinite(r.logits).all() and r.logits.shape[0] == 4
    noisier = obs.assign(ssh_error=obs["ssh_error"] * 10)
    r10 = likelihood_resolution(sample / "models" / "qg_window", ens, truth, noisier)
    assert np.abs(r10.logits - r.logits).max() > 1e-3
