"""Checkpoint schema: what a model, resume or embedding-cache folder must hold before anything is built from it.

Why: ``config.json`` and ``model.safetensors`` are inputs like any other file. A missing key used to
surface as ``KeyError``, a zero standard deviation as an all-NaN analysis, ``"hidden": [200000, 200000]``
as a 160 GB allocation. Every check here runs before the modules are built and raises one
:class:`~oceanda.errors.CheckpointError` line naming the file, the (dotted) key or tensor and what was
expected. The architecture part is generic (any :class:`~oceanda.contrastive.model.ContrastiveModel`);
what an ocean model must also hold (normalisation, channels, grid fingerprint, window) is checked by
``oceanda.analysis.encoding``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from oceanda.errors import CheckpointError, ConfigurationError

#: Deepest nesting of objects/arrays accepted in a ``config.json`` (the bundled models use 5).
MAX_DEPTH = 32
#: Largest single architecture size: widths, hidden units, embedding dimension, cells along an axis.
MAX_SIZE = 65536
#: Most values in one encoder input sample (a 8192 x 8192 field of one channel).
MAX_INPUT = 2**26
#: Most layers (hidden layers, transformer blocks) of one encoder.
MAX_LAYERS = 64
#: Most convolution stages of a masked CNN (each halves the grid).
MAX_DEPTH_CNN = 12

_JSON = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}


def config_file(directory: Any) -> str:
    """``<directory>/config.json`` as the user gave the directory (named in errors)."""
    from oceanda.io import CHECKPOINT_CONFIG

    return f"{directory}/{CHECKPOINT_CONFIG}"


def weights_file(directory: Any) -> str:
    """``<directory>/model.safetensors`` as the user gave the directory (named in errors)."""
    from oceanda.io import CHECKPOINT_WEIGHTS

    return f"{directory}/{CHECKPOINT_WEIGHTS}"


def _describe(v: Any) -> str:
    if isinstance(v, (bool, int, float)):
        return f"{v!r}" if not isinstance(v, int) or abs(v) < 10**20 else f"a {len(str(abs(v)))}-digit integer"
    if isinstance(v, str):
        return f"the string {v[:40]!r}"
    return _JSON.get(type(v), type(v).__name__)


# --- reading ---------------------------------------------------------------------------------------


def read(directory: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(tensors, config)`` of a checkpoint folder; every failure a one-line :class:`CheckpointError`.

    Parameters
    ----------
    directory : a folder with ``model.safetensors`` and ``config.json``

    Returns
    -------
    tuple (tensors, config), the config nested at most :data:`MAX_DEPTH` levels
    """
    from oceanda.io import load_checkpoint

    tensors, config = load_checkpoint(directory)  # regular files, sizes, UTF-8 JSON: one line each
    check_depth(config, config_file(directory))
    return tensors, config


def check_depth(obj: Any, where: str, limit: int = MAX_DEPTH) -> None:
    """Refuse objects/arrays nested deeper than ``limit`` (walked without recursion)."""
    stack = [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if isinstance(o, (dict, list)):
            if d > limit:
                raise CheckpointError(f"{where}: nested more than {limit} levels deep; expected at most {limit}")
            stack.extend((v, d + 1) for v in (o.values() if isinstance(o, dict) else o))


# --- typed entries ---------------------------------------------------------------------------------

_MISSING = object()


def entry(cfg: Mapping[str, Any], key: str, where: str, kind: type | tuple[type, ...], expected: str,
          default: Any = _MISSING) -> Any:
    """``cfg[a][b]...`` for ``key = "a.b..."``, of JSON type ``kind``; absent (or null) -> ``default``.

    Parameters
    ----------
    cfg : the decoded ``config.json``
    key : dotted key
    where : the file named in errors
    kind : the Python type(s) of the JSON value (``dict``, ``list``, ``str``, ``bool``, ``(int, float)``)
    expected : what the value should be, in words (quoted in errors)
    default : returned when the key is absent or null (none: the key is required)
    """
    node: Any = cfg
    parts = key.split(".")
    for i, p in enumerate(parts):
        if not isinstance(node, dict):
            raise CheckpointError(f"{where}: '{'.'.join(parts[:i])}' is {_describe(node)}; expected an object")
        node = node.get(p, _MISSING)
        if node is _MISSING or node is None:
            if default is not _MISSING:
                return default
            what = "missing key" if node is _MISSING else "null at key"
            raise CheckpointError(f"{where}: {what} '{key}'; expected {expected}")
    kinds = kind if isinstance(kind, tuple) else (kind,)
    bad_bool = isinstance(node, bool) and bool not in kinds
    if bad_bool or not isinstance(node, kinds):
        raise CheckpointError(f"{where}: '{key}' is {_describe(node)}; expected {expected}")
    return node


def number(value: Any, key: str, where: str, *, integer: bool = False, lo: float | None = None,
           hi: float | None = None, lo_open: bool = False) -> Any:
    """``value`` if it is a finite number (an integer) within the bounds, else a :class:`CheckpointError`."""
    from oceanda.settings import check_number

    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**62:
        raise CheckpointError(f"{where}: '{key}' is {_describe(value)}; expected {'an integer' if integer else 'a number'}"
                              f"{'' if hi is None else f' <= {hi}'}")
    try:
        check_number(f"'{key}'", value, lo=lo, hi=hi, lo_open=lo_open, integer=integer)
    except ConfigurationError as exc:
        raise CheckpointError(f"{where}: {exc}") from None
    if integer and not isinstance(value, int):
        raise CheckpointError(f"{where}: '{key}' is {_describe(value)}; expected an integer (no decimal point)")
    return value


def numbers(values: Any, key: str, where: str, length: int | None = None, **bounds: Any) -> list[float]:
    """A JSON array of ``length`` finite numbers within ``bounds`` (:func:`number`), each one checked."""
    if not isinstance(values, list):
        raise CheckpointError(f"{where}: '{key}' is {_describe(values)}; expected an array of numbers")
    if length is not None and len(values) != length:
        raise CheckpointError(f"{where}: '{key}' holds {len(values)} values; expected {length}")
    return [number(v, f"{key}[{i}]", where, **bounds) for i, v in enumerate(values)]


def size(cfg: Mapping[str, Any], key: str, where: str, default: Any = _MISSING, lo: int = 1,
         hi: int = MAX_SIZE) -> Any:
    """An integer entry in ``[lo, hi]`` (architecture sizes: positive and bounded before allocating); absent: ``default``."""
    v = entry(cfg, key, where, int, f"an integer in [{lo}, {hi}]", default)
    if v is None and default is None:
        return v
    return int(number(v, key, where, integer=True, lo=lo, hi=hi))


def choice(cfg: Mapping[str, Any], key: str, where: str, choices: Iterable[str], default: Any = _MISSING) -> Any:
    """A string entry among ``choices``; absent: ``default``."""
    allowed = sorted(choices)
    v = entry(cfg, key, where, str, f"one of {allowed}", default)
    if v is None and default is None:
        return v
    if v not in allowed:
        raise CheckpointError(f"{where}: '{key}' is {_describe(v)}; expected one of {allowed}")
    return v


def flag(cfg: Mapping[str, Any], key: str, where: str, default: Any = _MISSING) -> bool:
    """A boolean entry (``true``/``false``, not 0/1)."""
    return entry(cfg, key, where, bool, "true or false", default)


def shape(cfg: Mapping[str, Any], key: str, where: str, ndim: Iterable[int] = (1, 2, 3, 4)) -> list[int]:
    """An array of positive integer sizes (at most :data:`MAX_SIZE` each, :data:`MAX_INPUT` in all)."""
    dims = tuple(ndim)
    v = entry(cfg, key, where, list, f"an array of {'/'.join(map(str, dims))} positive integers")
    if len(v) not in dims:
        raise CheckpointError(f"{where}: '{key}' has {len(v)} entries; expected {' or '.join(map(str, dims))}")
    out = [int(number(s, f"{key}[{i}]", where, integer=True, lo=1, hi=MAX_SIZE)) for i, s in enumerate(v)]
    if math.prod(out) > MAX_INPUT:
        raise CheckpointError(f"{where}: '{key}' = {out} holds {math.prod(out)} values per sample; expected at most {MAX_INPUT}")
    return out


def unknown_keys(cfg: Mapping[str, Any], known: Iterable[str], key: str, where: str) -> None:
    """Refuse keys an object may not hold (a constructor would raise ``TypeError`` on them)."""
    extra = sorted(set(cfg) - set(known))
    if extra:
        raise CheckpointError(f"{where}: '{key}' holds unknown key '{extra[0]}'; expected only {sorted(known)}")


# --- the architecture (generic: any ContrastiveModel) ----------------------------------------------


def _check_mlp(config: Mapping[str, Any], key: str, where: str, in_shape: list[int]) -> None:
    from oceanda.contrastive.encoders import ACTIVATIONS

    hidden = entry(config, f"{key}.hidden", where, list, "an array of positive integers", [])
    if len(hidden) > MAX_LAYERS:
        raise CheckpointError(f"{where}: '{key}.hidden' lists {len(hidden)} layers; expected at most {MAX_LAYERS}")
    for i, h in enumerate(hidden):
        number(h, f"{key}.hidden[{i}]", where, integer=True, lo=1, hi=MAX_SIZE)
    choice(config, f"{key}.activation", where, ACTIVATIONS, None)
    flag(config, f"{key}.layernorm", where, None)


def _check_cnn(config: Mapping[str, Any], key: str, where: str, in_shape: list[int]) -> None:
    from oceanda.contrastive.encoders import ACTIVATIONS, arguments

    for k in ("width", "max_width"):
        size(config, f"{key}.{k}", where, None)
    size(config, f"{key}.depth", where, None, lo=0, hi=MAX_DEPTH_CNN)
    size(config, f"{key}.first_stride", where, None, hi=2)
    size(config, f"{key}.input_pool", where, None, hi=max(in_shape[1:]))
    size(config, f"{key}.crop", where, None, lo=0)
    flag(config, f"{key}.periodic", where, None)
    choice(config, f"{key}.activation", where, ACTIVATIONS, None)
    head = choice(config, f"{key}.head", where, ("linear", "spatial"), None)
    a = arguments(config[key])
    f = 2 ** a["depth"] * a["first_stride"] * a["input_pool"]
    fy, fx = [-(-n // f) - 2 * a["crop"] for n in in_shape[1:]]
    if fy < 1 or fx < 1:
        raise CheckpointError(f"{where}: '{key}.crop' = {a['crop']} leaves no cell of the final "
                              f"{-(-in_shape[1] // f)} x {-(-in_shape[2] // f)} map; expected a smaller crop")
    if head == "spatial" and a["out_dim"] % (fy * fx):
        raise CheckpointError(f"{where}: '{key}.out_dim' = {a['out_dim']}; expected a multiple of the final map's "
                              f"{fy} x {fx} cells (head 'spatial')")


def _check_transformer(config: Mapping[str, Any], key: str, where: str, in_shape: list[int]) -> None:
    d_model = size(config, f"{key}.d_model", where, 64)
    nhead = size(config, f"{key}.nhead", where, 4)
    if d_model % nhead:
        raise CheckpointError(f"{where}: '{key}.d_model' = {d_model} is not a multiple of '{key}.nhead' = {nhead}; "
                              "expected d_model divisible by nhead")
    size(config, f"{key}.num_layers", where, None, lo=0, hi=MAX_LAYERS)
    size(config, f"{key}.dim_feedforward", where, None)
    size(config, f"{key}.n_periodic", where, None, lo=0, hi=in_shape[1])
    choice(config, f"{key}.pooling", where, ("last", "mean"), None)
    flag(config, f"{key}.periodic", where, None)


def _check_linear(config: Mapping[str, Any], key: str, where: str, in_shape: list[int]) -> None:
    flag(config, f"{key}.bias", where, None)


def _check_fixed(config: Mapping[str, Any], key: str, where: str, in_shape: list[int]) -> None:
    v = entry(config, f"{key}.scale", where, (int, float), "a finite number", 1.0)
    number(v, f"{key}.scale", where)
    choice(config, f"{key}.matrix", where, ("buffer",), None)


_KIND_CHECKS = {"linear": _check_linear, "mlp": _check_mlp, "masked_cnn": _check_cnn,
                "trajectory_transformer": _check_transformer, "fixed": _check_fixed}
_NDIM = {"masked_cnn": (3,), "trajectory_transformer": (2,)}


def check_encoder(config: Mapping[str, Any], key: str, where: str) -> tuple[int, int]:
    """Check the encoder config ``config[key]``; return its (parameters, values of one sample's widest layer).

    Parameters
    ----------
    config : the decoded ``config.json``
    key : ``state_encoder`` or ``obs_encoder``
    where : the file named in errors

    Returns
    -------
    tuple of ints, computed from the config alone (nothing is built)
    """
    from oceanda.contrastive.encoders import ENCODERS, encoder_sizes, keywords

    enc = entry(config, key, where, dict, "an object describing the encoder (type, in_shape, out_dim, ...)")
    kind = choice(config, f"{key}.type", where, ENCODERS)
    unknown_keys(enc, ("type", *keywords(kind)), key, where)
    in_shape = shape(config, f"{key}.in_shape", where, _NDIM.get(kind, (1, 2, 3, 4)))
    size(config, f"{key}.out_dim", where)
    _KIND_CHECKS[kind](config, key, where, in_shape)
    return encoder_sizes(enc)


def check_similarity(config: Mapping[str, Any], where: str) -> None:
    """The similarity's kind and temperature bounds (finite, tau > 0, tau_min <= tau_max), and ``temperature``."""
    from oceanda.contrastive.similarity import KINDS, canonical_kind

    sim = entry(config, "similarity", where, dict, "an object (kind, tau, learn_tau, tau_min, tau_max)")
    unknown_keys(sim, ("kind", "tau", "learn_tau", "tau_min", "tau_max"), "similarity", where)
    kind = entry(config, "similarity.kind", where, str, f"one of {list(KINDS)}")
    try:
        canonical_kind(kind)
    except ConfigurationError as exc:
        raise CheckpointError(f"{where}: 'similarity.kind': {exc}") from None
    flag(config, "similarity.learn_tau", where, None)
    bounds = {}
    for k, default in (("tau", 1.0), ("tau_min", 1e-3), ("tau_max", 100.0)):
        v = entry(config, f"similarity.{k}", where, (int, float), "a finite number > 0", default)
        bounds[k] = number(v, f"similarity.{k}", where, lo=0, lo_open=True)
    if bounds["tau_min"] > bounds["tau_max"]:
        raise CheckpointError(f"{where}: 'similarity.tau_min' = {bounds['tau_min']} > 'similarity.tau_max' = "
                              f"{bounds['tau_max']}; expected tau_min <= tau_max")
    v = entry(config, "temperature", where, (int, float), "a finite number > 0", None)
    if v is not None:
        number(v, "temperature", where, lo=0, lo_open=True)


def check_units(config: Mapping[str, Any], where: str) -> dict[str, str]:
    """The optional ``units`` entry: ``{variable: UDUNITS units}`` of the data a model was trained on.

    Why: a library in ``cm`` given to a model trained in ``m`` would be analysed wrong without a word;
    with the units recorded it is converted (or refused). Older models have none: ``{}``.

    Parameters
    ----------
    config : the decoded ``config.json``
    where : the file named in errors

    Returns
    -------
    dict (empty when the model records no units)
    """
    from oceanda.io import units_are_known

    units = entry(config, "units", where, dict, "an object {variable: units}", {})
    if len(units) > MAX_SIZE:
        raise CheckpointError(f"{where}: 'units' lists {len(units)} variables; expected at most {MAX_SIZE}")
    for name, value in units.items():
        if not isinstance(value, str) or not units_are_known(value):
            raise CheckpointError(f"{where}: 'units.{name}' is {_describe(value)}; expected UDUNITS units "
                                  "such as 'm' or 'm2 s-1'")
    return dict(units)


def check_architecture(config: Mapping[str, Any], where: str) -> int:
    """Check the encoders and the similarity of a model config and that they fit in memory.

    Why before building: the modules allocate their weights at construction, so an absurd size is
    refused here, from the config alone, by :func:`oceanda.io.check_allocation`.

    Parameters
    ----------
    config : the decoded ``config.json``
    where : the file named in errors

    Returns
    -------
    int: the bytes estimated (float32 weights plus one sample through the widest layer of each encoder)
    """
    from oceanda.io import check_allocation

    params, values = 0, 0
    for key in ("state_encoder", "obs_encoder"):
        p, a = check_encoder(config, key, where)
        params, values = params + p, max(values, a)
    dims = [config[k]["out_dim"] for k in ("state_encoder", "obs_encoder")]
    if dims[0] != dims[1]:
        raise CheckpointError(f"{where}: 'state_encoder.out_dim' = {dims[0]} but 'obs_encoder.out_dim' = {dims[1]}; "
                              "expected one embedding dimension")
    check_similarity(config, where)
    nbytes = 4 * (params + values)
    check_allocation(nbytes, where)
    return nbytes


# --- tensors ---------------------------------------------------------------------------------------


def check_tensors(expected: Mapping[str, Any], tensors: Mapping[str, Any], where: str, prefix: str = "") -> None:
    """The file's tensors are exactly the architecture's: same names and shapes, float, finite.

    Parameters
    ----------
    expected : the built model's ``state_dict()`` (names -> tensors of the right shape and dtype)
    tensors : the tensors read from the file (names without ``prefix``)
    where : the weights file named in errors
    prefix : how the names are spelled in the file (``model.`` in a resume checkpoint)
    """
    import torch

    for name, ref in expected.items():
        t = tensors.get(name)
        if t is None:
            raise CheckpointError(f"{where}: weights do not match config.json: missing tensor '{prefix}{name}' of "
                                  f"shape {list(ref.shape)}; expected every tensor of the architecture in config.json")
        if tuple(t.shape) != tuple(ref.shape):
            raise CheckpointError(f"{where}: weights do not match config.json: tensor '{prefix}{name}' has shape "
                                  f"{list(t.shape)}; expected {list(ref.shape)} (the architecture in config.json)")
        if t.is_floating_point() != ref.is_floating_point() or t.is_complex():
            raise CheckpointError(f"{where}: tensor '{prefix}{name}' is {str(t.dtype).replace('torch.', '')}; "
                                  f"expected {str(ref.dtype).replace('torch.', '')}")
        if ref.is_floating_point():
            bad = int((~torch.isfinite(t.to(ref.dtype))).sum())
            if bad:
                raise CheckpointError(f"{where}: tensor '{prefix}{name}' holds {bad} NaN/Inf value(s) (as "
                                      f"{str(ref.dtype).replace('torch.', '')}); expected finite weights")
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise CheckpointError(f"{where}: weights do not match config.json: unexpected tensor '{prefix}{extra[0]}'; "
                              f"expected only the {len(expected)} tensors of the architecture in config.json")


# --- training resume checkpoints (``<model dir>/resume/``) -----------------------------------------


def check_resume_meta(meta: dict[str, Any], where: str) -> None:
    """The run counters and history of a resume ``config.json``; a null ``best_metric`` (inf) becomes inf."""
    for k in ("epoch", "step", "bad_epochs"):
        number(entry(meta, k, where, int, "an integer >= 0"), k, where, integer=True, lo=0)
    number(entry(meta, "best_epoch", where, int, "an integer >= -1"), "best_epoch", where, integer=True, lo=-1)
    best = entry(meta, "best_metric", where, (int, float), "a number or null (none yet)", None)
    meta["best_metric"] = math.inf if best is None else number(best, "best_metric", where)
    history = entry(meta, "history", where, list, "an array of per-epoch metrics")
    for i, h in enumerate(history):
        if not isinstance(h, dict):
            raise CheckpointError(f"{where}: 'history[{i}]' is {_describe(h)}; expected an object of metrics")
    flag(meta, "finished", where, None)
    entry(meta, "optimizer", where, dict, "an object with 'param_groups' and 'state'")


def _check_group(saved: Any, live: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    """One optimiser parameter group: the live group's keys, with values of the same kinds (finite numbers)."""
    if not isinstance(saved, dict):
        raise CheckpointError(f"{where}: '{key}' is {_describe(saved)}; expected an object")
    out = dict(saved)
    for k, v in live.items():
        if k == "params":
            p = saved.get("params")
            if not isinstance(p, list) or len(p) != len(v) or not all(type(i) is int for i in p):
                raise CheckpointError(f"{where}: '{key}.params' is {_describe(p)}; expected {len(v)} parameter indices "
                                      "(the model's trainable tensors)")
        elif k not in saved:
            raise CheckpointError(f"{where}: missing key '{key}.{k}'; expected the optimiser setting '{k}'")
        elif isinstance(v, bool):
            if not isinstance(saved[k], bool):
                raise CheckpointError(f"{where}: '{key}.{k}' is {_describe(saved[k])}; expected true or false")
        elif isinstance(v, (int, float)):
            number(saved[k], f"{key}.{k}", where, lo=0)
        elif isinstance(v, (tuple, list)):
            numbers(saved[k], f"{key}.{k}", where, len(v), lo=0, hi=1)
            out[k] = tuple(saved[k])
    return out


def _state_value(info: Any, key: str, tensors: Mapping[str, Any], param: Any, where: str, wfile: str) -> Any:
    """One entry of the optimiser state: ``{"value": number}``, or a shape naming the tensor ``opt.<key>``."""
    if isinstance(info, dict):
        v = entry(info, "value", where, (int, float), "a number")
        return number(v, f"optimizer.state.{key}.value", where)
    if not isinstance(info, list) or len(info) > 8:
        raise CheckpointError(f"{where}: 'optimizer.state.{key}' is {_describe(info)}; expected a tensor shape or "
                              "{\"value\": number}")
    shp = [int(number(s, f"optimizer.state.{key}[{i}]", where, integer=True, lo=0, hi=2**40)) for i, s in enumerate(info)]
    t = tensors.get(key)
    if t is None:
        raise CheckpointError(f"{wfile}: missing tensor 'opt.{key}'; expected the optimiser state config.json lists")
    want = list(param.shape) if key.split(".", 1)[1] in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq") else shp
    if shp != want or t.numel() != math.prod(shp):
        raise CheckpointError(f"{wfile}: tensor 'opt.{key}' of shape {list(t.shape)} for a state of shape {shp}; "
                              f"expected {want} (its parameter's shape)")
    check_tensors({key: t.float().reshape(shp)}, {key: t.reshape(shp)}, wfile, "opt.")
    return t.reshape(shp)


def optimizer_state(meta: dict[str, Any], tensors: Mapping[str, Any], opt: Any, where: str,
                    wfile: str) -> dict[str, Any]:
    """The optimiser ``state_dict`` a resume checkpoint describes, checked against the live optimiser ``opt``.

    Parameters
    ----------
    meta : the resume ``config.json`` (its ``optimizer`` entry)
    tensors : the checkpoint's ``opt.*`` tensors, names without ``opt.``
    opt : the optimiser of the model being resumed
    where, wfile : the config and weights files named in errors

    Returns
    -------
    dict for ``opt.load_state_dict``
    """
    params = [p for g in opt.param_groups for p in g["params"]]
    groups = entry(meta, "optimizer.param_groups", where, list, "an array of parameter groups")
    if len(groups) != len(opt.param_groups):
        raise CheckpointError(f"{where}: 'optimizer.param_groups' holds {len(groups)} groups; expected "
                              f"{len(opt.param_groups)} (this model's optimiser)")
    groups = [_check_group(g, live, f"optimizer.param_groups[{i}]", where) for i, (g, live) in
              enumerate(zip(groups, opt.param_groups))]
    state: dict[int, dict[str, Any]] = {}
    for key, info in entry(meta, "optimizer.state", where, dict, "an object of optimiser state entries").items():
        pid, _, name = key.partition(".")
        if not (pid.isascii() and pid.isdigit() and int(pid) < len(params) and name):
            raise CheckpointError(f"{where}: 'optimizer.state' key {key[:40]!r}; expected '<parameter index below "
                                  f"{len(params)}>.<name>'")
        state.setdefault(int(pid), {})[name] = _state_value(info, key, tensors, params[int(pid)], where, wfile)
    unused = sorted(set(tensors) - set(entry(meta, "optimizer.state", where, dict, "")))
    if unused:
        raise CheckpointError(f"{wfile}: unexpected tensor 'opt.{unused[0]}'; expected only the optimiser state "
                              "config.json lists")
    return {"state": state, "param_groups": groups}


def check_resume(directory: Any, model: Any, opt: Any) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any], dict[str, Any]]:
    """Read and check a resume checkpoint against the model and optimiser it is to restore.

    Parameters
    ----------
    directory : the ``resume/`` folder
    model : the model being resumed (its architecture fixes the tensors' names and shapes)
    opt : its optimiser

    Returns
    -------
    tuple (model weights, best weights or None, optimiser state_dict, meta), every part checked
    """
    tensors, meta = read(directory)
    where, wfile = config_file(directory), weights_file(directory)
    check_resume_meta(meta, where)
    parts: dict[str, dict[str, Any]] = {"model": {}, "best": {}, "opt": {}}
    for k, v in tensors.items():
        head, _, name = k.partition(".")
        if head not in parts:
            raise CheckpointError(f"{wfile}: unexpected tensor '{k}'; expected names starting model., best. or opt.")
        parts[head][name] = v
    ref = model.state_dict()
    check_tensors(ref, parts["model"], wfile, "model.")
    if parts["best"]:
        check_tensors(ref, parts["best"], wfile, "best.")
    opt_state = optimizer_state(meta, parts["opt"], opt, where, wfile)
    return parts["model"], parts["best"] or None, opt_state, meta


# --- the library embedding cache ---------------------------------------------------------------------


def read_embeddings(directory: Any, expect: Mapping[str, Any]) -> Any:
    """Cached embeddings ``[N, ne]`` (float32 numpy), or :class:`CheckpointError` if anything is off.

    Why: a cache is derived data; the caller recomputes on any error. ``expect`` names the entries
    that must equal those stored (e.g. ``{"library_fingerprint": ..., "key": ..., "n": ...}``).

    Parameters
    ----------
    directory : the cache folder (``model.safetensors`` with one tensor ``embeddings``, ``config.json``)
    expect : config entries the cache must hold with these values

    Returns
    -------
    numpy.ndarray: float32 ``[N, ne]``, finite
    """
    tensors, cfg = read(directory)
    where, wfile = config_file(directory), weights_file(directory)
    for k, v in expect.items():
        if cfg.get(k) != v:
            raise CheckpointError(f"{where}: '{k}' is {_describe(cfg.get(k))}; expected {_describe(v)} (a stale cache)")
    z = tensors.get("embeddings")
    if z is None or len(tensors) != 1 or z.ndim != 2:
        raise CheckpointError(f"{wfile}: expected exactly one 2-D tensor 'embeddings'")
    stored = entry(cfg, "shape", where, list, "the embeddings' shape")
    if list(z.shape) != stored:
        raise CheckpointError(f"{wfile}: 'embeddings' of shape {list(z.shape)}; expected {stored} (config.json)")
    import torch

    if not z.is_floating_point():
        raise CheckpointError(f"{wfile}: 'embeddings' is {str(z.dtype).replace('torch.', '')}; expected float32")
    z = z.to(torch.float32)
    bad = int((~torch.isfinite(z)).sum())
    if bad:
        raise CheckpointError(f"{wfile}: 'embeddings' holds {bad} NaN/Inf value(s); expected finite embeddings")
    return z.numpy()
