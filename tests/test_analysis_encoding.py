"""EncoderPair.embed_state on libraries with land (NaN): embedded as the whole-field training fills them."""

import numpy as np
import torch
import xarray as xr

from oceanda import fields
from oceanda.analysis.encoding import EncoderPair
from oceanda.analysis.library import Library
from oceanda.contrastive.encoders import MaskedCNNEncoder
from oceanda.contrastive.model import ContrastiveModel
from oceanda.contrastive.similarity import Similarity
from oceanda.fields import encoder_state_input


def _land_library(n=12, ny=8, nx=8, seed=0):
    rng = np.random.default_rng(seed)
    ssh = (0.3 + 0.1 * rng.standard_normal((n, ny, nx))).astype(np.float32)
    iy, ix = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    land = (iy + ix) > 11
    ssh[:, land] = np.nan
    time = np.datetime64("2001-01-01", "ns") + np.arange(n) * np.timedelta64(1, "D")
    ds = xr.Dataset({"ssh": (("time", "y", "x"), ssh, {"units": "m"})},
                    coords={"time": time, "y": ("y", np.arange(ny) * 20.0, {"units": "km"}),
                            "x": ("x", np.arange(nx) * 20.0, {"units": "km"})})
    return ds, land


def _pair(ds):
    torch.manual_seed(0)
    ny, nx = ds.sizes["y"], ds.sizes["x"]
    se = MaskedCNNEncoder((1, ny, nx), 6, width=4, depth=1)  # refuses NaN input
    oe = MaskedCNNEncoder((2, ny, nx), 6, width=4, depth=1)
    arr = fields.to_array(ds, fields.layout_of(ds, ["ssh"]))[0]
    st = fields.Standardizer.fit(arr)
    cfg = {"grid_fingerprint": fields.grid_fingerprint(ds, ["ssh"]), "normalization": {"state": st.to_dict()},
           "extra": {"state_channels": [["ssh", None]], "obs_channels": [["ssh", None]]}}
    model = ContrastiveModel(se, oe, Similarity("cosine", tau=0.1), cfg).eval()
    return EncoderPair.from_model(model), arr, st


def test_library_with_a_land_mask_embeds_as_in_training():
    ds, land = _land_library()
    enc, arr, st = _pair(ds)
    assert np.isnan(arr[:, 0, land]).all() and np.isfinite(arr[:, 0, ~land]).all()
    z = enc.embed_state(arr)
    assert z.shape == (len(arr), 6) and np.isfinite(z).all()
    # exactly what whole-field training feeds the state encoder (fields.encoder_state_input)
    with torch.no_grad():
        z_train = enc.model.state_encoder(torch.as_tensor(encoder_state_input(arr, st))).numpy()
    np.testing.assert_array_equal(z, z_train)
    # the same as embedding the explicitly filled array: land = the channel mean of the standardisation
    filled = np.where(np.isnan(arr), st.mean[None, :, None, None], arr).astype(np.float32)
    np.testing.assert_allclose(enc.embed_state(filled), z, atol=1e-5)
    # through a Library and its layout (what assimilate does)
    lib = Library(ds)
    z_lib = lib.embeddings(lambda s: enc.embed_state(s, lib.layout), key="land-test")
    np.testing.assert_allclose(z_lib, z, atol=1e-6)
