import json

import numpy as np
import pytest
import torch

from oceanda.contrastive.encoders import (FixedEncoder, LinearEncoder, MLPEncoder, MaskedCNNEncoder,
                                          TrajectoryTransformer, build_encoder, masked_input)
from oceanda.contrastive.model import ContrastiveModel
from oceanda.contrastive.similarity import Similarity
from oceanda.errors import CheckpointError, OceandaError, OutputExistsError
from oceanda.fields import with_mask_channels


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


def test_linear_is_linear_and_affine_option():
    enc = LinearEncoder(5, 3)
    x, y = torch.randn(4, 5, generator=_g()), torch.randn(4, 5, generator=_g(1))
    assert torch.allclose(enc(2 * x + y), 2 * enc(x) + enc(y), atol=1e-5)
    aff = LinearEncoder(5, 3, bias=True)
    assert not torch.allclose(aff(torch.zeros(1, 5)), torch.zeros(1, 3))


def test_shape_errors_say_what_was_expected():
    with pytest.raises(OceandaError, match=r"expected \[N, 5\]"):
        LinearEncoder(5, 3)(torch.zeros(2, 4))
    cnn = MaskedCNNEncoder((2, 16, 16), 8, width=4, depth=2)
    with pytest.raises(OceandaError, match=r"expected \[N, 2, 16, 16\]"):
        cnn(torch.zeros(1, 2, 32, 32))
    odd = MaskedCNNEncoder((2, 10, 18), 8, depth=2)  # not divisible by 4: padded to 12 x 20, not refused
    assert odd.pad == (2, 2) and odd(torch.zeros(3, 2, 10, 18)).shape == (3, 8)
    with pytest.raises(OceandaError, match=r"expected \[N, 2, 10, 18\]"):
        odd(torch.zeros(1, 2, 12, 20))



def test_masked_cnn_uses_mask_and_matches_fields():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 1, 16, 16)).astype(np.float32)
    a[a > 1.0] = np.nan
    x = masked_input(torch.tensor(a))
    assert np.array_equal(x.numpy(), with_mask_channels(a))
    cnn = MaskedCNNEncoder((2, 16, 16), 8, width=4, depth=2)
    z = cnn(x)
    assert z.shape == (3, 8)
    # a zero-valued observation and a gap differ only through the mask channel
    x2 = x.clone()
    x2[:, 1] = 1.0
    assert not torch.allclose(cnn(x2), z)
    with pytest.raises(OceandaError, match="NaN"):
        cnn(torch.tensor(np.concatenate([a, a], 1)))


def test_embed_checked_is_forward_without_the_checks():
    cnn = MaskedCNNEncoder((2, 10, 18), 8, width=4, depth=2)  # padded grid: the padding is in embed_checked too
    x = torch.randn(5, 2, 10, 18, generator=_g(4))
    assert torch.equal(cnn.embed_checked(x), cnn(x))
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(OceandaError, match="NaN"):
        cnn(x)


@pytest.mark.parametrize("periodic,activation,packed", [(False, "gelu", True), (False, "relu", True),
                                                        (True, "gelu", False), (False, "silu", False)])
def test_inference_trunk_is_the_trunk_bit_for_bit_and_follows_the_weights(periodic, activation, packed):
    """Without gradients the trunk runs on prepacked oneDNN weights where that is exact (zero padding, GELU/ReLU)."""
    torch.manual_seed(0)
    enc = MaskedCNNEncoder((3, 16, 16), 8, width=4, depth=2, periodic=periodic, activation=activation).eval()
    x = torch.randn(5, 3, 16, 16)
    want = enc.embed_checked(x)  # gradients on: the eager trunk
    with torch.inference_mode():
        got = enc.embed_checked(x)
    torch.testing.assert_close(got, want.detach(), rtol=0, atol=0)
    assert (enc.__dict__["_packed"][1][None] is not None) == (packed and torch.backends.mkldnn.is_available())
    opt = torch.optim.SGD(enc.parameters(), lr=0.5)
    enc.embed_checked(x).square().sum().backward()
    opt.step()  # new weights: the packed copy is rebuilt
    with torch.no_grad():
        torch.testing.assert_close(enc.embed_checked(x), enc.trunk(x).flatten(1) @ enc.head.weight.T + enc.head.bias,
                                   rtol=0, atol=1e-5)
        assert not torch.equal(enc.embed_checked(x), got)


def test_inference_trunk_skips_all_zero_channels_with_the_same_embeddings():
    """Channels zero in every input (variables never observed) are dropped from the first convolution."""
    torch.manual_seed(1)
    enc = MaskedCNNEncoder((5, 16, 16), 8, width=4, depth=2).eval()
    x = torch.randn(6, 5, 16, 16)
    x[:, [0, 3]] = 0.0
    x[2, 1] = 0.0  # zero in one input only: kept
    want = enc.embed_checked(x).detach()
    with torch.no_grad():
        got = enc.embed_checked(x)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        if torch.backends.mkldnn.is_available():
            assert (1, 2, 4) in enc.__dict__["_packed"][1]
        torch.testing.assert_close(enc.embed_checked(torch.zeros(2, 5, 16, 16)), enc.head(enc.trunk(torch.zeros(2, 5, 16, 16)).flatten(1)),
                                   rtol=0, atol=0)


def test_periodic_cnn_trunk_is_shift_equivariant():
    cnn = MaskedCNNEncoder((1, 16, 16), 4, width=4, depth=2, periodic=True)
    x = torch.randn(2, 1, 16, 16, generator=_g(2))
    f = cnn.trunk(x)
    fs = cnn.trunk(torch.roll(x, shifts=(4, 8), dims=(2, 3)))
    assert torch.allclose(torch.roll(f, shifts=(1, 2), dims=(2, 3)), fs, atol=1e-5)


def test_spatial_head_keeps_the_map_and_is_shift_equivariant():
    """head='spatial': the embedding is the final feature map (1x1 conv), so a periodic shift of the
    input by a multiple of the downsampling rolls the embedding map, and inner products of shifted
    pairs are unchanged -- the structure of a likelihood summed over grid cells."""
    torch.manual_seed(0)
    cnn = MaskedCNNEncoder((2, 16, 16), 4 * 4 * 3, width=4, depth=2, periodic=True, head="spatial")
    x = torch.randn(3, 2, 16, 16, generator=_g(3))
    z = cnn(x)
    assert z.shape == (3, 48)
    zs = cnn(torch.roll(x, shifts=(4, 8), dims=(2, 3)))
    assert torch.allclose(torch.roll(z.reshape(3, 3, 4, 4), shifts=(1, 2), dims=(2, 3)).reshape(3, -1), zs, atol=1e-5)
    other = MaskedCNNEncoder((1, 16, 16), 48, width=4, depth=2, periodic=True, head="spatial")
    y = torch.randn(3, 1, 16, 16, generator=_g(4))
    ip = (z * other(y)).sum(1)
    ip_shift = (zs * other(torch.roll(y, shifts=(4, 8), dims=(2, 3)))).sum(1)
    assert torch.allclose(ip, ip_shift, rtol=1e-4, atol=1e-5)
    assert build_encoder(cnn.config()).config() == cnn.config() and cnn.config()["head"] == "spatial"
    assert "head" not in MaskedCNNEncoder((2, 16, 16), 5, width=4, depth=2).config()  # old checkpoints unchanged
    with pytest.raises(OceandaError, match="multiple of the final map's 4x4 = 16 cells"):
        MaskedCNNEncoder((2, 16, 16), 50, width=4, depth=2, head="spatial")
    # crop: a 32x32 observation window with a halo of 8 maps its centre onto the 16x16 state window's 4x4 map
    obs_enc = MaskedCNNEncoder((2, 32, 32), 48, width=4, depth=2, head="spatial", crop=2)
    full = MaskedCNNEncoder((2, 32, 32), 8 * 8 * 3, width=4, depth=2, head="spatial")
    full.load_state_dict(obs_enc.state_dict())
    w = torch.randn(2, 2, 32, 32, generator=_g(5))
    assert torch.allclose(obs_enc(w), full(w).reshape(2, 3, 8, 8)[..., 2:6, 2:6].reshape(2, -1), atol=1e-6)
    assert build_encoder(obs_enc.config()).config()["crop"] == 2
    with pytest.raises(OceandaError, match="crop=4 leaves no cell"):
        MaskedCNNEncoder((2, 32, 32), 16, width=4, depth=2, crop=4)
    with pytest.raises(OceandaError, match="head 'pool'"):
        MaskedCNNEncoder((2, 16, 16), 16, width=4, depth=2, head="pool")


def test_trajectory_transformer_pooling_and_padding():
    for pooling in ("last", "mean"):
        enc = TrajectoryTransformer((10, 3), 6, d_model=16, nhead=2, num_layers=1, dim_feedforward=32,
                                    pooling=pooling, periodic=True)
        x = torch.rand(3, 10, 3, generator=_g(3))
        z = enc(x)
        assert z.shape == (3, 6)
        # padding tokens (NaN) at the end are ignored: same as a track whose tail is anything else masked
        xp = x.clone()
        xp[0, 7:] = float("nan")
        xq = x.clone()
        xq[0, 7:] = float("nan")
        xq[0, 7:, 0] = float("nan")
        assert torch.allclose(enc(xp), enc(xq))
        assert not torch.allclose(enc(xp)[0], z[0])
    # torus periodicity: x and x+1 give the same embedding
    enc = TrajectoryTransformer((5, 3), 4, d_model=8, nhead=2, num_layers=1, dim_feedforward=16, periodic=True)
    x = torch.rand(2, 5, 3, generator=_g(4))
    x1 = x.clone()
    x1[..., :2] += 1.0
    assert torch.allclose(enc(x), enc(x1), atol=1e-5)


def test_fixed_encoder():
    enc = FixedEncoder(98)
    x = torch.randn(2, 98, generator=_g(5))
    assert torch.equal(enc(x), x)
    assert len(list(enc.parameters())) == 0
    M = np.arange(6.0).reshape(2, 3)
    assert np.allclose(FixedEncoder(3, matrix=M)(torch.ones(1, 3)).numpy(), [[3.0, 12.0]])


@pytest.mark.parametrize("kind", ["linear", "mlp", "cnn", "traj", "fixed"])
def test_model_save_load_round_trip(tmp_path, kind):
    torch.manual_seed(0)
    if kind == "linear":
        se, oe, xs, xo = LinearEncoder(4, 3, bias=True), LinearEncoder(2, 3), torch.randn(5, 4), torch.randn(5, 2)
    elif kind == "mlp":
        se, oe = MLPEncoder(4, 3, hidden=(8,), layernorm=True), MLPEncoder((2, 3), 3, hidden=(5, 5), activation="tanh")
        xs, xo = torch.randn(5, 4), torch.randn(5, 2, 3)
    elif kind == "cnn":
        se, oe = MaskedCNNEncoder((2, 8, 8), 3, width=4, depth=2), MaskedCNNEncoder((4, 8, 8), 3, width=2, depth=1)
        xs, xo = torch.randn(5, 2, 8, 8), torch.rand(5, 4, 8, 8)
    elif kind == "traj":
        se = TrajectoryTransformer((6, 3), 3, d_model=8, nhead=2, num_layers=1, dim_feedforward=8, pooling="mean")
        oe = LinearEncoder(3, 3)
        xs, xo = torch.randn(5, 6, 3), torch.randn(5, 3)
    else:
        se, oe, xs, xo = FixedEncoder(3, matrix=np.random.default_rng(0).standard_normal((3, 3))), LinearEncoder(2, 3), torch.randn(5, 3), torch.randn(5, 2)
    model = ContrastiveModel(se, oe, Similarity("neg_sq_distance", tau=0.3, learn_tau=True),
                             config={"normalization": {"state": {"mean": [1.0], "std": [2.0]}}, "grid_fingerprint": "abc",
                                     "extra": {"window": 5}})
    model.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    for key in ("state_encoder", "obs_encoder", "similarity", "temperature", "normalization", "grid_fingerprint", "oceanda_version", "extra"):
        assert key in cfg
    back = ContrastiveModel.load(tmp_path / "m")
    with torch.no_grad():
        assert torch.allclose(back(xs, xo), model(xs, xo), atol=1e-6)
    assert abs(float(back.tau.detach()) - 0.3) < 1e-6
    assert back.config["extra"] == {"window": 5} and back.config["grid_fingerprint"] == "abc"
    with pytest.raises(OutputExistsError):
        model.save(tmp_path / "m")
    model.save(tmp_path / "m", overwrite=True)


def test_load_refuses_mismatched_weights(tmp_path):
    model = ContrastiveModel(LinearEncoder(4, 3), LinearEncoder(2, 3), Similarity("cosine"))
    model.save(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["state_encoder"]["in_shape"] = [5]
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="do not match"):
        ContrastiveModel.load(tmp_path / "m")
    with pytest.raises(CheckpointError, match="missing"):
        ContrastiveModel.load(tmp_path / "nothing")
    with pytest.raises(OceandaError, match="unknown"):
        build_encoder({"type": "resnet"})
