"""The training loop: learning matches the Gaussian theory, determinism, resume, early stopping."""

import json

import numpy as np
import pytest
import torch

from oceanda.contrastive import gaussian as G
from oceanda.contrastive.encoders import LinearEncoder, MLPEncoder
from oceanda.contrastive.model import ContrastiveModel
from oceanda.contrastive.similarity import Similarity
from oceanda.contrastive.retrieval import recall_at_k, retrieval_recalls
from oceanda.contrastive.training import TrainConfig, Trainer, evaluate, time_split, train
from oceanda.errors import ConfigurationError, OceandaError, OutputExistsError


def _cov(seed=0):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((7, 7))
    return W @ W.T / 7 + 0.3 * np.eye(7)


def _sample(C, n, seed):
    x = np.random.default_rng(seed).multivariate_normal(np.zeros(7), C, size=n)
    return x[:, :4].astype(np.float32), x[:, 4:].astype(np.float32)


def _linear_model(kind, seed=0, ne=4):
    torch.manual_seed(seed)
    return ContrastiveModel(LinearEncoder(4, ne), LinearEncoder(3, ne), Similarity(kind, tau=1.0))


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def gauss_data():
    C = _cov()
    return C, _sample(C, 100_000, 1)


def test_learning_matches_theory_inner_product(gauss_data):
    """Issue acceptance (shortened schedule; benchmarks/bench_linear_gaussian.py runs the full one)."""
    torch.set_num_threads(1)
    C, (u, v) = gauss_data
    model = _linear_model("inner_product")
    train(model, (u, v), loss="clip", epochs=3, batch_size=1024, lr=5e-2, seed=0, grad_clip=None, quiet=True)
    Gm, Hm = (e.weight.detach().double().numpy() for e in (model.state_encoder, model.obs_encoder))
    A_star = G.inner_product_conditional_optimum(C[:4, :4], C[:4, 4:], C[4:, 4:])
    assert _rel(Gm.T @ Hm, A_star) < 0.05


def test_learning_matches_theory_quadratic(gauss_data):
    torch.set_num_threads(1)
    C, (u, v) = gauss_data
    Cuu, Cuv, Cvv = C[:4, :4], C[:4, 4:], C[4:, 4:]
    model = _linear_model("neg_sq_distance")
    train(model, (u, v), loss="state|obs", epochs=3, batch_size=1024, lr=5e-2, seed=0, grad_clip=None, quiet=True)
    Gm, Hm = (e.weight.detach().double().numpy() for e in (model.state_encoder, model.obs_encoder))
    A, B = Gm.T @ Hm, Gm.T @ Gm
    As, Bs = G.quadratic_one_sided_optimum(Cuu, Cuv, Cvv)
    assert _rel(A, As) < 0.05 and _rel(B, Bs) < 0.05
    _, cov = G.quadratic_model_state_given_obs(A, B, Cuu)
    assert _rel(cov, G.conditional_state_given_obs(Cuu, Cuv, Cvv)[1]) < 0.05


def _small(seed=0):
    torch.manual_seed(seed)
    return ContrastiveModel(MLPEncoder(4, 4, hidden=(16,)), LinearEncoder(3, 4, bias=True),
                            Similarity("cosine", tau=0.2, learn_tau=True))


def _small_data(n=512, seed=2):
    return _sample(_cov(), n, seed)


def _fresh(epoch, rng):
    """A callable training set: new samples each epoch."""
    C = _cov()
    x = rng.multivariate_normal(np.zeros(7), C, size=256)
    return x[:, :4].astype(np.float32), x[:, 4:].astype(np.float32)


def test_deterministic_and_resumable(tmp_path):
    torch.set_num_threads(1)
    val = _small_data(200, 3)
    kw = dict(loss="clip", epochs=4, batch_size=64, lr=1e-2, seed=7, quiet=True, warmup_steps=3, weight_decay=1e-3)
    a = _small()
    ra = train(a, _fresh, val, checkpoint_dir=tmp_path / "a", **kw)
    b = _small()
    rb = train(b, _fresh, val, **kw)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    assert [h["train_loss"] for h in ra.history] == [h["train_loss"] for h in rb.history]
    assert [h["val_loss"] for h in ra.history] == [h["val_loss"] for h in rb.history]

    class Stop(Exception):
        pass

    def interrupt(epoch, metrics):
        if epoch == 2:
            raise Stop

    c = _small()
    with pytest.raises(Stop):
        train(c, _fresh, val, checkpoint_dir=tmp_path / "c", callback=interrupt, **kw)
    c2 = _small(seed=123)  # a different initialisation: everything must come from the checkpoint
    rc = train(c2, _fresh, val, checkpoint_dir=tmp_path / "c", resume=True, **kw)
    for (k, va), vc in zip(a.state_dict().items(), c2.state_dict().values()):
        assert torch.equal(va, vc), k
    assert [h["train_loss"] for h in rc.history] == [h["train_loss"] for h in ra.history]
    # the checkpoint directory holds the model and its history
    back = ContrastiveModel.load(tmp_path / "c")
    assert torch.equal(back.state_encoder.net[0].weight, a.state_encoder.net[0].weight)
    hist = json.loads((tmp_path / "c" / "history.json").read_text())
    assert len(hist) == 4 and {"val_loss", "val_r1_state_from_obs", "val_r5_obs_from_state"} <= set(hist[0])
    assert back.config["loss"]["name"] == "clip" and back.config["training"]["seed"] == 7
    assert TrainConfig.from_dict(back.config["train"]) == TrainConfig(epochs=4, batch_size=64, lr=1e-2, seed=7,
                                                                      warmup_steps=3, weight_decay=1e-3)
    with pytest.raises(OutputExistsError):
        train(_small(), _fresh, val, checkpoint_dir=tmp_path / "c", **kw)


def test_early_stopping_restores_best():
    torch.set_num_threads(1)
    tr, val = _small_data(256, 4), _small_data(128, 5)
    # a huge learning rate without schedule makes validation loss worse fast
    m = _small()
    res = train(m, tr, val, epochs=30, batch_size=64, lr=0.5, schedule="constant", patience=2, seed=0, quiet=True,
                grad_clip=None)
    assert res.stopped_early and len(res.history) < 30
    best = min(h["val_loss"] for h in res.history)
    assert res.best_metric == pytest.approx(best)
    assert evaluate(m, val, "clip", batch_size=64)["loss"] == pytest.approx(best, rel=1e-5)


def test_training_improves_retrieval_and_mmd_runs():
    torch.set_num_threads(1)
    tr, val = _small_data(1024, 6), _small_data(256, 7)
    m = _small()
    before = evaluate(m, val, "clip", batch_size=64)
    res = train(m, tr, val, epochs=5, batch_size=64, lr=1e-2, seed=0, quiet=True)
    after = res.history[-1]
    assert after["val_loss"] < before["loss"] - 0.05
    assert after["val_r5_state_from_obs"] > before["r5_state_from_obs"]
    m2 = _small()
    r2 = train(m2, tr, None, loss="mmd_conditional", epochs=2, batch_size=64, lr=1e-2, seed=0, quiet=True)
    assert np.isfinite(r2.history[-1]["train_loss"])


def test_recall_and_time_split():
    S = torch.tensor([[3.0, 0.0, 0.0], [4.0, 1.0, 0.0], [0.0, 2.0, 5.0]])
    r = retrieval_recalls(S, ks=(1, 2))
    assert r["r1_state_from_obs"] == pytest.approx(1 / 3)  # columns 0 and 1: another state scores higher
    assert r["r1_obs_from_state"] == pytest.approx(2 / 3)  # row 1: obs 0 scores higher than obs 1
    assert r["r2_state_from_obs"] == 1.0
    tr, va = time_split(100, 0.2, gap=5)
    assert va.min() - tr.max() == 6 and len(va) == 20 and len(tr) == 75
    with pytest.raises(OceandaError):
        time_split(10, 0.0)
    with pytest.raises(OceandaError, match="batch_size"):
        train(_small(), _small_data(10), epochs=1, batch_size=1)


def test_recall_counts_ties_against_the_query():
    # query 0: its candidate ties with candidate 1 -> rank 1; query 1: clear first; query 2: all equal -> rank 2
    S = np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 1.0], [5.0, 5.0, 5.0]])
    assert recall_at_k(S, k=1) == pytest.approx(1 / 3)
    assert recall_at_k(S, k=(2, 3)) == {2: pytest.approx(2 / 3), 3: 1.0}
    assert recall_at_k(torch.tensor(S, dtype=torch.float32), k=1) == pytest.approx(1 / 3)  # torch input
    assert recall_at_k(np.ones((4, 4)), k=3) == 0.0  # a collapsed model retrieves nothing
    assert recall_at_k(S[[2, 0]], k=1, targets=[2, 0]) == 0.0
    both = retrieval_recalls(torch.ones(3, 3), ks=(1,))
    assert both == {"r1_state_from_obs": 0.0, "r1_obs_from_state": 0.0}
    nan_true = np.array([[np.nan, 0.0], [0.0, 1.0]])
    assert recall_at_k(nan_true, k=2) == 0.5  # a NaN score never counts as retrieved
    with pytest.raises(ValueError, match="expected"):
        recall_at_k(np.ones((3, 2)), k=1)


def test_train_config_validates_and_round_trips():
    cfg = TrainConfig(epochs=3, lr=0.01, patience=2, loss="state|obs", max_seconds=5.0)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.replace(epochs=None, lr=0.5).lr == 0.5 and cfg.replace(epochs=None).epochs == 3
    for bad, name in ((dict(epochs=0), "epochs"), (dict(lr=0.0), "lr"), (dict(lr=float("inf")), "lr"),
                      (dict(batch_size=1), "batch_size"), (dict(schedule="linear"), "schedule"),
                      (dict(patience=0), "patience"), (dict(loss="nope"), "loss"), (dict(min_lr_ratio=2.0), "min_lr_ratio"),
                      (dict(loss_kwargs={"kernel_state": len}), "loss_kwargs")):
        with pytest.raises(ConfigurationError, match=name):
            TrainConfig(**bad)
    with pytest.raises(ConfigurationError, match="unknown"):
        TrainConfig.from_dict({**cfg.to_dict(), "epoch": 3})


def test_trainer_equals_train():
    torch.set_num_threads(1)
    tr, val = _small_data(256, 4), _small_data(128, 5)
    a, b = _small(), _small()
    ra = train(a, tr, val, epochs=3, batch_size=64, lr=1e-2, seed=3, quiet=True, block_size=4, block_start=1)
    rb = Trainer(TrainConfig(epochs=3, batch_size=64, lr=1e-2, seed=3, block_size=4, block_start=1), quiet=True).fit(b, tr, val)
    assert [h["val_loss"] for h in ra.history] == [h["val_loss"] for h in rb.history]
    for va, vb in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(va, vb)
    assert b.config["train"]["block_size"] == 4 and b.config["train"]["schema"] == "oceanda.TrainConfig"


def test_block_permutation_keeps_neighbours_together():
    from oceanda.contrastive.training import _block_permutation

    p = _block_permutation(20, 4, np.random.default_rng(0))
    assert sorted(p.tolist()) == list(range(20))
    for b in range(5):
        blk = p[4 * b:4 * b + 4]
        assert blk.tolist() == list(range(blk[0], blk[0] + 4))
    assert not np.array_equal(p, np.arange(20))


def test_a_custom_loss_object_trains_as_before_the_reshape():
    from oceanda.contrastive.losses import Loss, clip

    torch.set_num_threads(1)
    tr, val = _small_data(256, 4), _small_data(128, 5)
    a, b = _small(), _small()
    ra = train(a, tr, val, loss=Loss("my_clip", clip, {}), epochs=2, batch_size=64, lr=1e-2, seed=3, quiet=True)
    rb = train(b, tr, val, loss="clip", epochs=2, batch_size=64, lr=1e-2, seed=3, quiet=True)
    assert [h["val_loss"] for h in ra.history] == [h["val_loss"] for h in rb.history]  # same function, any name
    assert a.config["train"]["loss"] is None and TrainConfig.from_dict(a.config["train"]).loss is None
    with pytest.raises(ConfigurationError, match="loss=None"):
        TrainConfig(loss=None).make_loss()
