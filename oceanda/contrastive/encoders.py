"""Encoders g_state, g_obs: R^{input shape} -> R^ne, each rebuildable from a JSON-able config.

Every encoder checks its input shape (``[N, *in_shape]``) and says what it expected. ``config()``
returns ``{"type": ..., **constructor kwargs}``; :func:`build_encoder` inverts it (used by
``ContrastiveModel.load``: no pickling).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from oceanda.errors import OceandaError


def _shape(s: int | Sequence[int]) -> tuple[int, ...]:
    return (int(s),) if isinstance(s, (int, np.integer)) else tuple(int(v) for v in s)


class Encoder(nn.Module):
    """Base class: shape check, ``out_dim`` and ``config``."""

    kind = "base"

    def __init__(self, in_shape: int | Sequence[int], out_dim: int):
        super().__init__()
        self.in_shape = _shape(in_shape)
        self.out_dim = int(out_dim)
        self._kwargs: dict[str, Any] = {}

    def check(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as a tensor of shape ``[N, *in_shape]``; another shape raises ``OceandaError``.

        Parameters
        ----------
        x : the input (tensor or array-like)

        Returns
        -------
        torch.Tensor
            ``x``, float32 when converted.
        """
        if not isinstance(x, torch.Tensor):
            x = torch.as_tensor(np.asarray(x), dtype=torch.float32)
        if x.ndim != len(self.in_shape) + 1 or tuple(x.shape[1:]) != self.in_shape:
            raise OceandaError(
                f"{type(self).__name__}: input of shape {tuple(x.shape)}; expected [N, {', '.join(map(str, self.in_shape))}]"
                " (the shape this encoder was built for)"
            )
        return x

    def config(self) -> dict[str, Any]:
        """JSON-able architecture (:func:`build_encoder` rebuilds the encoder from it)."""
        return {"type": self.kind, "in_shape": list(self.in_shape), "out_dim": self.out_dim, **self._kwargs}


class LinearEncoder(Encoder):
    """g(x) = W x (+ b with ``bias``): the paper's linear encoders; x flattened."""

    kind = "linear"

    def __init__(self, in_shape, out_dim: int, bias: bool = False):
        super().__init__(in_shape, out_dim)
        self._kwargs = {"bias": bool(bias)}
        self.linear = nn.Linear(int(np.prod(self.in_shape)), self.out_dim, bias=bias)

    @property
    def weight(self) -> torch.Tensor:
        """The matrix W ``[out_dim, prod(in_shape)]``."""
        return self.linear.weight

    def forward(self, x):
        """Embeddings ``[N, out_dim]`` of inputs ``[N, *in_shape]``.

        Parameters
        ----------
        x : ``[N, *in_shape]`` inputs (tensor or array)

        Returns
        -------
        torch.Tensor
            ``[N, out_dim]``.
        """
        x = self.check(x)
        return self.linear(x.reshape(x.shape[0], -1))


_ACT = {"gelu": nn.GELU, "relu": nn.ReLU, "tanh": nn.Tanh, "silu": nn.SiLU}
ACTIVATIONS = tuple(_ACT)


def _packed_trunk(trunk: nn.Sequential, channels: tuple[int, ...] | None = None):
    """``trunk`` as a function on oneDNN tensors with its convolution weights prepacked once, or None where
    that would change the numbers (or this torch has no oneDNN).

    ``channels``: the input channels the function takes (the first convolution's weights sliced to them), for
    inputs whose other channels are all zero -- e.g. the error and mask channels of variables never observed.
    """
    exact = (nn.GELU, nn.ReLU, nn.AvgPool2d)  # layers measured bit-identical on oneDNN tensors (SiLU is refused)
    if not torch.backends.mkldnn.is_available() or not all(
            isinstance(m, exact) or (isinstance(m, nn.Conv2d) and m.padding_mode == "zeros") for m in trunk) or not all(
            p.dtype == torch.float32 and p.device.type == "cpu" for p in trunk.parameters()):
        return None
    steps, first = [], True
    try:
        with torch.no_grad():
            for m in trunk:
                if isinstance(m, nn.Conv2d):
                    w = m.weight.detach()
                    if first and channels is not None:
                        w = w[:, list(channels)].contiguous()
                    first = False
                    w = torch._C._nn.mkldnn_reorder_conv2d_weight(w.to_mkldnn(), m.padding, m.stride, m.dilation,
                                                                   m.groups)
                    b = (m.bias if m.bias is not None else torch.zeros(m.out_channels)).detach().to_mkldnn()
                    steps.append(lambda h, w=w, b=b, m=m: torch.mkldnn_convolution(h, w, b, m.padding, m.stride,
                                                                                   m.dilation, m.groups))
                else:
                    steps.append(m)
    except (AttributeError, RuntimeError):  # a torch without these oneDNN entry points: the eager trunk
        return None

    def run(h):
        for f in steps:
            h = f(h)
        return h
    return run


class MLPEncoder(Encoder):
    """Flattened input -> hidden layers (activation, optional LayerNorm) -> ``out_dim``."""

    kind = "mlp"

    def __init__(self, in_shape, out_dim: int, hidden: Sequence[int] = (256, 256), activation: str = "gelu",
                 layernorm: bool = False):
        super().__init__(in_shape, out_dim)
        if activation not in _ACT:
            raise OceandaError(f"activation '{activation}' unknown; expected one of {sorted(_ACT)}")
        self._kwargs = {"hidden": [int(h) for h in hidden], "activation": activation, "layernorm": bool(layernorm)}
        layers: list[nn.Module] = []
        d = int(np.prod(self.in_shape))
        for h in hidden:
            layers += [nn.Linear(d, int(h))] + ([nn.LayerNorm(int(h))] if layernorm else []) + [_ACT[activation]()]
            d = int(h)
        layers.append(nn.Linear(d, self.out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        """Embeddings ``[N, out_dim]`` of inputs ``[N, *in_shape]``.

        Parameters
        ----------
        x : ``[N, *in_shape]`` inputs (tensor or array)

        Returns
        -------
        torch.Tensor
            ``[N, out_dim]``.
        """
        x = self.check(x)
        return self.net(x.reshape(x.shape[0], -1))


class MaskedCNNEncoder(Encoder):
    """Gridded fields with gaps: input ``[N, C, Y, X]`` = filled values then 0/1 mask channels
    (``fields.with_mask_channels``; :func:`masked_input` does the same on tensors).

    A convolutional trunk (``depth`` stages of two 3x3 convolutions, the second strided by 2;
    circular padding for doubly periodic grids) then a linear head on the flattened final feature
    map, which keeps where things are (a global pool would not). The grid size is fixed at
    construction; other sizes are refused. ``first_stride=2`` makes the first convolution strided
    (4x cheaper; a 3x3 kernel with stride 2 still sees every cell, so no observation is dropped).
    ``input_pool=p`` first averages p x p blocks (values and masks alike: each block keeps the mean
    observed value times the observed fraction, and the fraction), p**2 times cheaper again. ``trunk(x)`` is fully convolutional (any size divisible
    by 2**depth) for callers that want feature maps of larger fields. A grid that the network's stride
    ``f = 2**depth * first_stride * input_pool`` does not divide is zero-padded up to a multiple of f on
    its far sides (an 18 x 30 grid runs as 24 x 32 with depth 3): zero values and zero masks, i.e.
    nothing observed there. Weights start variance-preserving (:func:`init_weights`).

    ``head="spatial"`` replaces the linear head by a 1x1 convolution to ``out_dim / (h * w)``
    channels and keeps the map: the embedding is a coarse field of features, so an inner product of
    two embeddings is a sum of local agreements -- the shape of a Gaussian log-likelihood
    (sum over observed points of x_i y_i - x_i^2 / 2), translation-equivariant, and so matched to
    random periodic shifts. ``out_dim`` must then be a multiple of the final map's h * w.
    ``crop=k`` drops k cells from each side of the final map before the head: an observation window
    with a halo then yields the map of its centre, aligned cell by cell with a state window's map.
    """

    kind = "masked_cnn"

    def __init__(self, in_shape, out_dim: int, width: int = 32, depth: int = 3, periodic: bool = True,
                 max_width: int = 128, activation: str = "gelu", first_stride: int = 1, input_pool: int = 1,
                 head: str = "linear", crop: int = 0):
        super().__init__(in_shape, out_dim)
        if len(self.in_shape) != 3:
            raise OceandaError(f"MaskedCNNEncoder: in_shape {self.in_shape}; expected (channels, Y, X)")
        c, ny, nx = self.in_shape
        if first_stride not in (1, 2):
            raise OceandaError(f"MaskedCNNEncoder: first_stride={first_stride}; expected 1 or 2")
        f = 2 ** int(depth) * int(first_stride) * int(input_pool)
        if int(depth) < 0 or int(input_pool) < 1:
            raise OceandaError(f"MaskedCNNEncoder: depth={depth}, input_pool={input_pool}; expected depth >= 0 and input_pool >= 1")
        # a grid that the network's stride f does not divide is padded up to it (zeros: no value, no observation)
        self.pad = ((-ny) % f, (-nx) % f)
        ny, nx = ny + self.pad[0], nx + self.pad[1]
        if activation not in _ACT:
            raise OceandaError(f"activation '{activation}' unknown; expected one of {sorted(_ACT)}")
        self._kwargs = {"width": int(width), "depth": int(depth), "periodic": bool(periodic),
                        "max_width": int(max_width), "activation": activation, "first_stride": int(first_stride),
                        "input_pool": int(input_pool)}
        if head not in ("linear", "spatial"):
            raise OceandaError(f"MaskedCNNEncoder: head '{head}'; expected 'linear' or 'spatial'")
        if head != "linear":  # old checkpoints have no 'head' key and stay loadable
            self._kwargs["head"] = head
        if int(crop):
            self._kwargs["crop"] = int(crop)
        pad = "circular" if periodic else "zeros"
        layers: list[nn.Module] = [nn.AvgPool2d(int(input_pool))] if int(input_pool) > 1 else []
        cin = c
        for k in range(int(depth)):
            w = min(int(width) * 2**k, int(max_width))
            s0 = int(first_stride) if k == 0 else 1
            layers += [nn.Conv2d(cin, w, 3, stride=s0, padding=1, padding_mode=pad), _ACT[activation](),
                       nn.Conv2d(w, w, 3, stride=2, padding=1, padding_mode=pad), _ACT[activation]()]
            cin = w
        self.trunk = nn.Sequential(*layers)
        self.crop = int(crop)
        fy, fx = ny // f - 2 * self.crop, nx // f - 2 * self.crop
        if self.crop < 0 or fy < 1 or fx < 1:
            raise OceandaError(f"MaskedCNNEncoder: crop={crop} leaves no cell of the final {ny // f}x{nx // f} map")
        self.feature_shape = (cin, fy, fx)
        if head == "spatial":
            cells = fy * fx
            if self.out_dim % cells:
                raise OceandaError(f"MaskedCNNEncoder: head='spatial' needs out_dim a multiple of the final map's "
                                   f"{fy}x{fx} = {cells} cells; got out_dim={self.out_dim}")
            self.head = nn.Conv2d(cin, self.out_dim // cells, 1)
        else:
            self.head = nn.Linear(int(np.prod(self.feature_shape)), self.out_dim)
        self.spatial = head == "spatial"
        init_weights(self)

    def forward(self, x):
        """Embeddings ``[N, out_dim]`` of inputs ``[N, *in_shape]``.

        Parameters
        ----------
        x : ``[N, *in_shape]`` inputs (values then masks, no NaN)

        Returns
        -------
        torch.Tensor
            ``[N, out_dim]``.
        """
        x = self.check(x)
        if torch.isnan(x).any():
            raise OceandaError("MaskedCNNEncoder: input holds NaN; fill gaps and add mask channels first (masked_input)")
        return self.embed_checked(x)

    def embed_checked(self, x):
        """:meth:`forward` without its NaN scan, for inputs built NaN-free (local mode's windows); the shape is checked.

        Why: the NaN scan cost 7 % of the encoder on the 64 windows of a local analysis.
        """
        x = self.check(x)
        if self.pad != (0, 0):
            x = torch.nn.functional.pad(x, (0, self.pad[1], 0, self.pad[0]))
        h = self.trunk(x) if torch.is_grad_enabled() else self._inference_trunk(x)
        if self.crop:
            h = h[..., self.crop:-self.crop, self.crop:-self.crop]
        return self.head(h).flatten(1) if self.spatial else self.head(h.flatten(1))

    def _inference_trunk(self, x):
        """The trunk without gradients, on weights prepacked for oneDNN once, skipping all-zero input channels.

        Why: the eager trunk reorders every weight on each call; prepacked, the trunk took 0.70-0.75 of the
        time on the 64 windows of a local analysis, and without the 6 of 9 channels that altimetry leaves at
        zero (psi never observed) 0.68 of that again. Equal to the eager trunk to float32 rounding (bit for bit
        when no channel is dropped). The packed copies follow the weights (rebuilt when a parameter's version
        changes, e.g. after an optimiser step); trunks it cannot pack exactly (circular padding, SiLU/Tanh)
        run eagerly.
        """
        if x.dtype != torch.float32 or x.device.type != "cpu" or x.ndim != 4:
            return self.trunk(x)
        key = tuple((id(p), p._version) for p in self.trunk.parameters())
        cache = self.__dict__.get("_packed")  # a plain attribute: not a submodule, not in the state dict
        if cache is None or cache[0] != key:
            cache = (key, {})
            self.__dict__["_packed"] = cache
        n, c = x.shape[:2]  # numpy's reduction: a tenth of torch's over these axes
        used = np.flatnonzero(np.abs(x.detach().numpy()).reshape(n, c, -1).max(axis=2).max(axis=0)) if n else ()
        channels = None if len(used) in (0, c) else tuple(int(k) for k in used)
        if channels not in cache[1]:
            if len(cache[1]) >= 8:  # a few observation layouts at a time
                cache[1].clear()
            cache[1][channels] = _packed_trunk(self.trunk, channels)
        run = cache[1][channels]
        if run is None:
            return self.trunk(x)
        if channels is not None:
            x = x[:, list(channels)]
        return run(x.contiguous().to_mkldnn()).to_dense()


def init_weights(module: nn.Module) -> None:
    """He-normal weights and zero biases for every convolution and dense layer of ``module``.

    Why: PyTorch's default initialisation shrinks the signal about threefold in variance per layer
    while its random biases add a constant, so a 6-convolution trunk maps every input to nearly the
    same embedding (cosine 0.999 between random inputs on a 64 x 64 grid). All logits then agree,
    the contrastive loss sits at its chance value 0 with a vanishing gradient, and training stays at
    chance (R@1 = 1/N) while the loss creeps to 0 by collapsing further. He initialisation keeps the
    inputs' differences through the trunk (logits about 100x more spread at the start).

    Parameters
    ----------
    module : the encoder (modified in place)
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def masked_input(
values: torch.Tensor | np.ndarray, fill: float = 0.0) -> torch.Tensor:
    """``[N, C, Y, X]`` with NaN gaps -> ``[N, 2C, Y, X]`` (filled values, then 0/1 masks).

    The tensor twin of ``oceanda.fields.with_mask_channels`` (the contrastive core knows no fields).

    Parameters
    ----------
    values : ``[N, C, Y, X]``, NaN unobserved
    fill : the value written into the gaps

    Returns
    -------
    torch.Tensor
        ``[N, 2C, Y, X]`` in ``values``' dtype.
    """
    v = torch.as_tensor(values)
    m = torch.isfinite(v)
    return torch.cat([torch.where(m, v, torch.full_like(v, fill)), m.to(v.dtype)], dim=1)


class TrajectoryTransformer(Encoder):
    """Drifter tracks ``[N, L, F]`` (tokens: positions and time, F features) -> ``out_dim``.

    Tokens with any NaN are padding (masked out). With ``periodic`` the first ``n_periodic``
    features are coordinates on the unit torus and are embedded as sin/cos of 2*pi*x. Pooling:
    ``last`` (the last valid token, as in the paper) or ``mean`` over valid tokens.
    """

    kind = "trajectory_transformer"

    def __init__(self, in_shape, out_dim: int, d_model: int = 64, nhead: int = 4, num_layers: int = 2,
                 dim_feedforward: int = 128, pooling: str = "last", periodic: bool = False, n_periodic: int = 2):
        super().__init__(in_shape, out_dim)
        if len(self.in_shape) != 2:
            raise OceandaError(f"TrajectoryTransformer: in_shape {self.in_shape}; expected (L tokens, F features)")
        if pooling not in ("last", "mean"):
            raise OceandaError(f"pooling '{pooling}'; expected 'last' or 'mean'")
        self._kwargs = {"d_model": int(d_model), "nhead": int(nhead), "num_layers": int(num_layers),
                        "dim_feedforward": int(dim_feedforward), "pooling": pooling, "periodic": bool(periodic),
                        "n_periodic": int(n_periodic)}
        L, F = self.in_shape
        self.pooling, self.periodic, self.n_periodic = pooling, bool(periodic), int(n_periodic)
        fin = F + (self.n_periodic if periodic else 0)
        self.embed = nn.Linear(fin, d_model)
        self.pos = nn.Parameter(torch.zeros(L, d_model))
        nn.init.normal_(self.pos, std=0.02)
        layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout=0.0, batch_first=True,
                                           norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.proj = nn.Linear(d_model, self.out_dim)

    def forward(self, x):
        """Embeddings ``[N, out_dim]`` of inputs ``[N, *in_shape]``.

        Parameters
        ----------
        x : ``[N, *in_shape]`` inputs (NaN tokens are padding)

        Returns
        -------
        torch.Tensor
            ``[N, out_dim]``.
        """
        x = self.check(x)
        valid = torch.isfinite(x).all(-1)  # [N, L]
        if not bool(valid.any(1).all()):
            raise OceandaError("TrajectoryTransformer: a track has no valid token (all NaN)")
        x = torch.nan_to_num(x)
        if self.periodic:
            p = 2 * math.pi * x[..., : self.n_periodic]
            x = torch.cat([torch.sin(p), torch.cos(p), x[..., self.n_periodic:]], -1)
        h = self.embed(x) + self.pos
        h = self.norm(self.blocks(h, src_key_padding_mask=~valid))
        if self.pooling == "mean":
            w = valid.to(h.dtype).unsqueeze(-1)
            pooled = (h * w).sum(1) / w.sum(1)
        else:
            idx = (valid.long() * torch.arange(1, x.shape[1] + 1, device=x.device)).argmax(1)
            pooled = h[torch.arange(h.shape[0], device=x.device), idx]
        return self.proj(pooled)


class FixedEncoder(Encoder):
    """A prescribed linear embedding g(x) = M x (identity by default, e.g. the paper's 98 Eulerian
    coefficients); nothing is trained. ``M`` is a buffer, saved with the checkpoint."""

    kind = "fixed"

    def __init__(self, in_shape, out_dim: int | None = None, matrix: np.ndarray | torch.Tensor | None = None,
                 scale: float = 1.0):
        d = int(np.prod(_shape(in_shape)))
        if matrix is None:
            out_dim = d if out_dim is None else int(out_dim)
            if out_dim != d:
                raise OceandaError(f"FixedEncoder: identity needs out_dim == input size {d}; got {out_dim}")
            M = torch.eye(d)
        else:
            M = torch.as_tensor(np.asarray(matrix), dtype=torch.float32)
            if M.ndim != 2 or M.shape[1] != d:
                raise OceandaError(f"FixedEncoder: matrix of shape {tuple(M.shape)}; expected [out_dim, {d}]")
            out_dim = M.shape[0]
        super().__init__(in_shape, out_dim)
        self._kwargs = {"scale": float(scale)}
        self.register_buffer("matrix", M * float(scale))

    def forward(self, x):
        """Embeddings ``[N, out_dim]`` of inputs ``[N, *in_shape]``.

        Parameters
        ----------
        x : ``[N, *in_shape]`` inputs (tensor or array)

        Returns
        -------
        torch.Tensor
            ``[N, out_dim]``.
        """
        x = self.check(x)
        return x.reshape(x.shape[0], -1).to(self.matrix.dtype) @ self.matrix.T

    def config(self):
        """As :meth:`Encoder.config`; the fixed matrix itself travels with the weights."""
        cfg = super().config()
        cfg["scale"] = 1.0  # the buffer already holds the scaled matrix
        cfg["matrix"] = "buffer"
        return cfg


ENCODERS = {c.kind: c for c in (LinearEncoder, MLPEncoder, MaskedCNNEncoder, TrajectoryTransformer, FixedEncoder)}


def keywords(kind: str) -> tuple[str, ...]:
    """The keyword arguments of the constructor of encoder ``kind`` (the keys its config may hold)."""
    import inspect

    return tuple(k for k in inspect.signature(ENCODERS[kind].__init__).parameters if k != "self")


def arguments(config: dict[str, Any]) -> dict[str, Any]:
    """The constructor arguments an encoder config stands for: the stored ones over the constructor's defaults.

    Parameters
    ----------
    config : the dict of :meth:`Encoder.config` (``type`` one of :data:`ENCODERS`)

    Returns
    -------
    dict
        Every keyword of the encoder's constructor (``in_shape``, ``out_dim``, ...), ``type`` left out.
    """
    import inspect

    params = inspect.signature(ENCODERS[config["type"]].__init__).parameters
    out = {k: p.default for k, p in params.items() if k != "self"}
    out.update({k: v for k, v in config.items() if k != "type"})
    return out


def _cnn_sizes(a: dict[str, Any]) -> tuple[int, int]:
    c, ny, nx = a["in_shape"]
    f = 2 ** a["depth"] * a["first_stride"] * a["input_pool"]
    py, px = -(-ny // f) * f, -(-nx // f) * f  # padded up to the stride
    params, widest, cin = 0, c * py * px, c
    hy, hx = py // a["input_pool"], px // a["input_pool"]
    for k in range(a["depth"]):
        w = min(a["width"] * 2**k, a["max_width"])
        s0 = a["first_stride"] if k == 0 else 1
        hy, hx = -(-hy // s0), -(-hx // s0)
        params += cin * w * 9 + w + w * w * 9 + w
        widest = max(widest, w * hy * hx)
        hy, hx, cin = -(-hy // 2), -(-hx // 2), w
    cells = max(py // f - 2 * a["crop"], 1) * max(px // f - 2 * a["crop"], 1)
    o = a["out_dim"]
    params += cin * (o // cells) + o // cells if a["head"] == "spatial" else cin * cells * o + o
    return params, widest


def _transformer_sizes(a: dict[str, Any]) -> tuple[int, int]:
    L, F = a["in_shape"]
    d, ff, o = a["d_model"], a["dim_feedforward"], a["out_dim"]
    fin = F + (a["n_periodic"] if a["periodic"] else 0)
    block = 3 * d * d + 3 * d + d * d + d + d * ff + ff + ff * d + d + 4 * d
    params = fin * d + d + L * d + a["num_layers"] * block + 2 * d + d * o + o
    return params, L * max(d, ff, fin) + a["nhead"] * L * L


def encoder_sizes(config: dict[str, Any]) -> tuple[int, int]:
    """Parameters and the values of one sample's widest layer of the encoder ``config`` describes.

    Why: computed from the config alone, so a checkpoint asking for 160 GB of weights is refused
    before any module allocates them (``oceanda.contrastive.checkpoint.check_architecture``).

    Parameters
    ----------
    config : a checked encoder config (:meth:`Encoder.config`)

    Returns
    -------
    tuple of ints (parameters and buffers, values)
    """
    a = arguments(config)
    kind = config["type"]
    d = math.prod(_shape(a["in_shape"]))  # Python integers: no overflow, whatever the config asks
    o = a["out_dim"] if a["out_dim"] is not None else d
    if kind == "masked_cnn":
        return _cnn_sizes(a)
    if kind == "trajectory_transformer":
        return _transformer_sizes(a)
    if kind == "mlp":
        params, widest = 0, d
        for h in a["hidden"]:
            params += d * h + h + (2 * h if a["layernorm"] else 0)
            widest, d = max(widest, h), h
        return params + d * o + o, widest
    return d * o + (o if kind == "linear" and a["bias"] else 0), max(d, o)  # linear and fixed


def build_encoder(config: dict[str, Any]) -> Encoder:
    """Rebuild an encoder from ``Encoder.config()`` (weights are loaded separately).

    Parameters
    ----------
    config : the dict of :meth:`Encoder.config` (``type`` one of :data:`ENCODERS`)

    Returns
    -------
    Encoder
        An untrained encoder of that architecture.
    """
    cfg = dict(config)
    kind = cfg.pop("type", None)
    if kind not in ENCODERS:
        raise OceandaError(f"encoder type '{kind}' unknown; expected one of {sorted(ENCODERS)}")
    if kind == "fixed":
        cfg.pop("matrix", None)
        in_shape, out_dim = cfg["in_shape"], cfg["out_dim"]
        d = int(np.prod(_shape(in_shape)))
        return FixedEncoder(in_shape, matrix=np.zeros((out_dim, d), dtype=np.float32), scale=1.0)
    try:
        return ENCODERS[kind](**cfg)
    except TypeError as exc:
        raise OceandaError(f"encoder config {config} does not match {kind}: {exc}") from exc
