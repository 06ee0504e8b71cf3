"""Baptista, Stuart & Tran (2025), section 6.2 (images and labels) on scikit-learn's 8 x 8 digits.

MNIST cannot be downloaded here; ``sklearn.datasets.load_digits`` ships inside scikit-learn (1797
images, 10 classes). The image is the ``state``, the one-hot label the ``obs``. Three losses:

- ``label|image`` (loss ``obs|state``) with fixed one-hot label embeddings: the usual
  cross-entropy classifier (the in-batch normaliser estimates the sum over the label marginal);
- ``image|label`` (loss ``state|obs``) with learned label embeddings;
- two-sided (``clip``) with learned label embeddings.

Zero-shot classification (Algorithm 2): argmax_k s(g(image), h(e_k)). Fine-tuning (paper 4.2):
freeze the image encoder, learn label embeddings G and a log-prior F with the one-sided
label|image loss (exact normaliser over the 10 labels), predict argmax_k (G^T g(u) / tau + F)_k.
Generation: for a label k, weights softmax_i s(u_i, k) over a library of test images, then
weighted resampling; diversity is measured by the effective sample size of those weights, the
weight on images of class k (purity), and the distinct images among resampled members.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from oceanda.analysis.posterior import effective_sample_size, resample, softmax_weights
from oceanda.contrastive.encoders import FixedEncoder, LinearEncoder, MaskedCNNEncoder
from oceanda.contrastive.model import ContrastiveModel
from oceanda.contrastive.similarity import Similarity
from oceanda.contrastive.training import train

LOSS_OF = {"label|image": "obs|state", "image|label": "state|obs", "two-sided": "clip"}


def load_split(test_fraction: float, rng: np.random.Generator):
    """Digits as ``[N, 1, 8, 8]`` in [0, 1] and one-hot labels, split stratified by class.

    Parameters
    ----------
    test_fraction : fraction of each class held out for testing
    rng : random generator (the split)

    Returns
    -------
    tuple: ``(X, y, onehot)`` for train, then for test
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    X = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    test = np.zeros(len(y), bool)
    for k in range(10):
        idx = rng.permutation(np.flatnonzero(y == k))
        test[idx[: int(round(test_fraction * idx.size))]] = True
    onehot = np.eye(10, dtype=np.float32)
    return (X[~test], y[~test], onehot[y[~test]]), (X[test], y[test], onehot[y[test]])


def build_model(kind: str, ne: int, width: int) -> ContrastiveModel:
    """An untrained image/label model for loss ``kind`` (a key of :data:`LOSS_OF`).

    Parameters
    ----------
    kind : ``label|image``, ``image|label`` or ``two-sided``
    ne : embedding dimension (10 for ``label|image``)
    width : CNN width

    Returns
    -------
    ContrastiveModel
    """
    img = MaskedCNNEncoder((1, 8, 8), ne if kind != "label|image" else 10, width=width, depth=2, periodic=False)
    if kind == "label|image":  # fixed one-hot label embeddings: exactly the cross-entropy classifier
        return ContrastiveModel(img, FixedEncoder(10), Similarity("inner_product", tau=1.0))
    return ContrastiveModel(img, LinearEncoder(10, ne), Similarity("cosine", tau=0.1, learn_tau=True))


@torch.no_grad()
def label_logits(model: ContrastiveModel, X: np.ndarray) -> torch.Tensor:
    """s(image_i, label k) / tau for the 10 labels, [N, 10] (the zero-shot classifier).

    Parameters
    ----------
    model : a trained image/label model
    X : ``[N, 1, 8, 8]`` images

    Returns
    -------
    torch.Tensor ``[N, 10]``
    """
    model.eval()
    return model.logits(model.embed_state(torch.as_tensor(X)), model.embed_obs(torch.eye(10)))


def fine_tune(model: ContrastiveModel, Xtr, ytr, Xte, yte, steps: int, seed: int) -> float:
    """Frozen image encoder; learned G (ne x 10) and log-prior F (10); returns test accuracy.

    Parameters
    ----------
    model : a trained image/label model (its image encoder is frozen)
    Xtr, ytr : training images and integer labels
    Xte, yte : test images and integer labels
    steps : Adam steps
    seed : torch seed

    Returns
    -------
    float: test accuracy
    """
    torch.manual_seed(seed)
    with torch.no_grad():
        model.eval()
        ztr = model.embed_state(torch.as_tensor(Xtr))
        zte = model.embed_state(torch.as_tensor(Xte))
    scale = ztr.std()
    G = torch.nn.Parameter(0.01 * torch.randn(ztr.shape[1], 10))
    F = torch.nn.Parameter(torch.zeros(10))
    opt = torch.optim.Adam([G, F], lr=0.05)
    yt = torch.as_tensor(ytr)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy((ztr / scale) @ G + F, yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = ((zte / scale) @ G + F).argmax(1).numpy()
    return float((pred == yte).mean())


def generate(model: ContrastiveModel, Xlib, ylib, members: int, rng: np.random.Generator) -> dict:
    """Weighted resampling of a library of images for each label.

    Parameters
    ----------
    model : a trained image/label model
    Xlib, ylib : library images ``[N, 1, 8, 8]`` and their integer labels
    members : images resampled per label
    rng : random generator

    Returns
    -------
    dict: ESS, purity and diversity diagnostics, and ``picks`` ``[10, members]``
    """
    S = label_logits(model, Xlib).double().numpy()  # [N, 10]
    W = softmax_weights(S, axis=0)
    ess = effective_sample_size(W, axis=0)
    purity = np.array([W[ylib == k, k].sum() for k in range(10)])
    picks = np.stack([resample(W[:, k], members, rng, method="multinomial") for k in range(10)])
    distinct = np.array([np.unique(p).size for p in picks])
    correct = np.array([(ylib[p] == k).mean() for k, p in enumerate(picks)])
    return {"ess": ess.tolist(), "ess_mean": float(ess.mean()), "purity": purity.tolist(), "purity_mean": float(purity.mean()),
            "distinct_of_resampled": distinct.tolist(), "resampled_correct_fraction": float(correct.mean()),
            "library_size": int(len(ylib)), "class_size_mean": float(len(ylib) / 10), "picks": picks}


def run_digits(cfg: dict, seed: int, progress=None) -> dict:
    """Train the three losses on the digits; zero-shot, fine-tuned and generation results.

    Parameters
    ----------
    cfg : settings (``test_fraction``, ``ne``, ``width``, ``epochs``, ``batch``, ``lr``,
        ``finetune_steps``, ``members``)
    seed : random seed
    progress : callable taking a message string (None: silent)

    Returns
    -------
    tuple: the results dict, and ``(Xte, picks)`` for :func:`plot_generated`
    """
    t0 = time.perf_counter()
    rng = np.random.default_rng([seed, 62])
    (Xtr, ytr, Ytr), (Xte, yte, Yte) = load_split(cfg["test_fraction"], rng)
    out: dict = {"setting": {"dataset": "sklearn.datasets.load_digits (8x8, 1797 images)", "n_train": int(len(ytr)),
                             "n_test": int(len(yte)), "encoder": f"MaskedCNNEncoder depth 2 width {cfg['width']}",
                             "embedding_dim": cfg["ne"], "epochs": cfg["epochs"], "batch_size": cfg["batch"], "lr": cfg["lr"]},
                 "losses": {}}
    picks = {}
    for kind, loss in LOSS_OF.items():
        torch.manual_seed(seed)
        model = build_model(kind, cfg["ne"], cfg["width"])
        train(model, (Xtr, Ytr), loss=loss, epochs=cfg["epochs"], batch_size=cfg["batch"], lr=cfg["lr"], seed=seed,
              quiet=True, retrieval_max=0, weight_decay=1e-4)
        L = label_logits(model, Xte).numpy()
        r = {"loss": loss, "zero_shot_accuracy": float((L.argmax(1) == yte).mean())}
        if kind != "label|image":
            r["fine_tuned_accuracy"] = fine_tune(model, Xtr, ytr, Xte, yte, cfg["finetune_steps"], seed)
        else:
            r["test_accuracy"] = r["zero_shot_accuracy"]
        g = generate(model, Xte, yte, cfg["members"], np.random.default_rng([seed, 7]))
        picks[kind] = g.pop("picks")
        r["generation"] = g
        out["losses"][kind] = r
        if progress:
            progress(f"digits {kind}: zero-shot {r['zero_shot_accuracy']:.3f}, ESS {g['ess_mean']:.1f}, purity {g['purity_mean']:.3f}")
    out["seconds"] = time.perf_counter() - t0
    return out, (Xte, picks)


def plot_generated(Xlib, picks: dict, show: int = 8):
    """Figure of the resampled images: per loss, row k holds ``show`` members for label k.

    Parameters
    ----------
    Xlib : library images ``[N, 1, 8, 8]``
    picks : per loss, the ``[10, members]`` indices from :func:`generate`
    show : members shown per label

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    kinds = list(picks)
    fig, axes = plt.subplots(1, len(kinds), figsize=(3.2 * len(kinds), 4.2))
    for ax, kind in zip(axes, kinds):
        tiles = np.zeros((10 * 9, show * 9))
        for k in range(10):
            for m in range(show):
                tiles[k * 9:k * 9 + 8, m * 9:m * 9 + 8] = Xlib[picks[kind][k, m], 0]
        ax.imshow(tiles, cmap="gray_r", interpolation="nearest")
        ax.set_title(f"{kind}\n(row k: resampled for label k)", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks(np.arange(10) * 9 + 4)
        ax.set_yticklabels(range(10), fontsize=7)
    fig.suptitle("Digits generated by weighted resampling of a test-image library")
    fig.tight_layout()
    return fig
