"""`oceanda train`: train a contrastive encoder pair (window or whole-field) on gridded states and observations."""

from __future__ import annotations

HELP = "train contrastive state/observation encoders (writes MODEL_DIR/model.safetensors + config.json)"
#: cli.main runs this verb under oceanda.threads.configured() (torch's threads set on purpose)
RUNS_TORCH = True
DESCRIPTION = """\
Train encoders of model states and of observations with a contrastive loss (Baptista, Stuart & Tran
2025): the model defines nu(state | obs) ∝ exp(s(g_state(x), g_obs(y)) / tau) mu_state(dx).

--kind window (the default on grids larger than a 16-cell window) trains the local model that
`assimilate --mode local|hybrid` uses: pairs of state windows and the observations around them.
--kind field trains a whole-field model for `--mode global`. Any grid of the canonical layout works
(y/x km, lat/lon, curvilinear), land (NaN) included; grids other than km boxes are not periodic
unless --periodic.

Pairs are drawn afresh every epoch (unless --fixed-pairs): the observation patterns of OBS.nc (its
operator, e.g. along-track altimetry, or its own masks) and its noise (<var>_error) applied to the
training states. --obs-days N uses up to N days of observations per sample, looking back N days in
time whatever the snapshot step of the states. Validation states (the last runs or times) are never
trained on.

Training health: at the end the validation retrieval R@1/R@5 is printed next to chance (K / the
number of candidates). A model within 2x of chance (R@5 < 2 x 5 / candidates) has learned next to
nothing: the command warns and exits with code 3 unless --allow-weak. The figures are stored in
MODEL_DIR/config.json ("health"), and `oceanda assimilate` warns when given such a model. The loss
printed is 0 at chance and -log(batch size) at perfect retrieval: a loss near 0 means nothing learned.

Pattern models (--kind window --patterns FAMILIES): one model for tracks, cloud gaps and points; each
pair is observed by a fresh pattern and noise level, the mask and the observation error as encoder inputs,
so a new observation set needs no retraining. OBS.nc then names only the observed variables.

Calibration (window models): --tune-states/--tune-obs (a tuning run never in STATES) or --calibrate
(held-out STATES) fit the spread factor and the hybrid's Kalman settings into the model.

MODEL_DIR appears only complete: it is built in a temporary folder beside it
(.MODEL_DIR.<pid>.<random>.tmp) and renamed into place once training and calibration are done; a
failure, Ctrl-C or kill leaves no MODEL_DIR, and with --overwrite an existing model stays as it was
until the new one is in place (--overwrite replaces only a model folder, one holding config.json).
An interrupted whole-field run keeps its resumable state (written each epoch) in .MODEL_DIR.resume/
beside MODEL_DIR; --resume continues from it (same options as the interrupted run) and it is removed
when a run finishes. --resume on a finished model leaves that model as it is.

Example:
  oceanda train --states states.nc --obs obs.nc --out model --kind field --obs-days 5"""

#: exit status of a model that learned next to nothing (without --allow-weak)
EXIT_WEAK = 3

EPILOG = """\
Several processes (DistributedDataParallel, gloo on CPU; the same model as one process, each batch split):
  python -m torch.distributed.run --standalone --nproc_per_node 2 -m oceanda train --states ... --out model
(only rank 0 writes; OCEANDA_DDP_TIMEOUT=seconds a rank waits for the others, default 600)"""


def add_arguments(parser) -> None:
    from oceanda.commands import add_units_argument, choices, number, one_line_errors, positive, positive_int, seed_int

    one_line_errors(parser)
    parser.epilog = EPILOG
    parser.add_argument("--states", required=True, nargs="+", metavar="STATES.nc", help="training states (NetCDF/zarr; several files are joined in time)")
    parser.add_argument("--obs", required=True, metavar="OBS.nc", help="observations: their patterns and errors")
    parser.add_argument("--out", required=True, metavar="MODEL_DIR", help="model folder (appears only when complete; see below)")
    parser.add_argument("--kind", choices=["window", "field"], default=None,
                        help="window: local/hybrid model (default for grids larger than a window); field: whole-field model (--mode global)")
    parser.add_argument("--state-vars", nargs="+", metavar="V", help="state variables to encode (default: all for field models, the observed ones for window models)")
    parser.add_argument("--obs-vars", nargs="+", metavar="V", help="observed variables (default: all in OBS.nc)")
    add_units_argument(parser)
    parser.add_argument("--obs-days", type=positive_int, default=None, metavar="N",
                        help="days of observations per sample (window: 1..N drawn; field: N days stacked; default: 1)")
    parser.add_argument("--window", type=positive_int, default=None, help="deprecated name of --obs-days")
    parser.add_argument("--similarity", choices=choices("similarity"), default=None, help="similarity (default: cosine)")
    parser.add_argument("--loss", choices=choices("loss"), default=None,
                        help="loss (default: clip, the two-sided conditional loss)")
    parser.add_argument("--embedding-dim", type=positive_int, default=None, help="embedding dimension (default: 128 field, 64 window)")
    parser.add_argument("--tau", type=number(lo=1e-6, hi=1e6), default=None, help="initial temperature (default: 0.07 field, 0.1 window)")
    parser.add_argument("--fixed-tau", action="store_true", help="keep the temperature fixed (default: learned for field models)")
    parser.add_argument("--epochs", type=positive_int, default=None, help="epochs (default: field 20 or enough for 200 optimiser steps; window: until --seconds)")
    parser.add_argument("--batch-size", type=number(integer=True, lo=2), default=None, help="batch size (default: 128, less on small data -- said when so)")
    parser.add_argument("--lr", type=number(lo=0.0, lo_open=True, hi=1.0), default=None, help="peak learning rate (default: 2e-3)")
    parser.add_argument("--seconds", type=positive, default=None, help="wall-time budget (window default: 150; field: none)")
    parser.add_argument("--seed", type=seed_int, default=None, help="random seed (default: 0)")
    parser.add_argument("--periodic", action="store_true", help="the grid is doubly periodic (default: km boxes yes, other grids no)")
    parser.add_argument("--not-periodic", action="store_true", help="the grid is not doubly periodic")
    parser.add_argument("--allow-weak", action="store_true", help="exit 0 even when the model is within 2x of chance")
    _window_arguments(parser)
    _pattern_arguments(parser)
    _field_arguments(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing MODEL_DIR (a model folder) once the new model is complete")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _window_arguments(parser) -> None:
    from oceanda.commands import nonnegative_int, number, positive_int

    g = parser.add_argument_group("window models (--kind window)")
    g.add_argument("--window-size", type=number(integer=True, lo=2), default=None, help="state window (cells; default 16, less on small grids)")
    g.add_argument("--window-stride", type=positive_int, default=None, help="analysis stride (cells; default size / 2)")
    g.add_argument("--halo", type=nonnegative_int, default=None, help="observation halo around a window (cells; default 8)")
    g.add_argument("--tune-states", nargs="+", metavar="TRUTH.nc", help="a tuning truth run (not in STATES) to calibrate on")
    g.add_argument("--tune-obs", metavar="OBS.nc", help="observations of --tune-states")
    g.add_argument("--calibrate", action="store_true", help="calibrate on held-out STATES (when no --tune-states)")


def _families(text: str) -> list[str] | str:
    """``--patterns``: ``all`` or a comma list of distinct families (checked against the literal CHOICES)."""
    import argparse

    from oceanda.commands import choices

    allowed = choices("patterns")
    if text.strip() == "all":
        return "all"
    names = [t.strip() for t in str(text).split(",")]
    if not all(n in allowed for n in names) or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"={text}; expected 'all' or a comma list of distinct families of "
                                         f"{','.join(allowed)}")
    return names


def _sigma_range(text: str) -> tuple[float, float]:
    """``--sigma-range LO,HI``: two finite numbers, 0 < LO <= HI."""
    import argparse
    import math

    from oceanda.commands import _as_number

    parts = str(text).split(",")
    lo, hi = (_as_number(p, False) for p in parts) if len(parts) == 2 else (math.nan, math.nan)
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
        raise argparse.ArgumentTypeError(f"={text}; expected LO,HI: two finite numbers with 0 < LO <= HI "
                                         "(fractions of each variable's std), e.g. 0.03,0.3")
    return lo, hi


def _pattern_arguments(parser) -> None:
    g = parser.add_argument_group("pattern models (--kind window --patterns): one model for any observation set")
    g.add_argument("--patterns", type=_families, default=None, metavar="FAMILIES",
                   help="train on a mixture of observation patterns instead of OBS.nc's own: a comma list of "
                        "tracks,clouds,points,swaths or all (= tracks,clouds,points); --obs still names the "
                        "observed variables (its data variables)")
    g.add_argument("--sigma-range", type=_sigma_range, default=None, metavar="LO,HI",
                   help="observation noise drawn log-uniform in [LO, HI] x each variable's std (default 0.03,0.3)")


def _field_arguments(parser) -> None:
    from oceanda.commands import choices, number, positive_int

    g = parser.add_argument_group("whole-field models (--kind field)")
    g.add_argument("--encoder", choices=choices("encoder"), default=None, help="encoder of both sides (default: cnn, masked CNN)")
    g.add_argument("--head", choices=["linear", "spatial"], default=None,
                   help="cnn head: linear (dense layer to the embedding) or spatial (the embedding is the final "
                        "coarse feature map, a sum of local agreements like a log-likelihood; --embedding-dim must "
                        "be a multiple of that map's cells, e.g. 1024 = 16 features x 8x8 with --input-pool 2 "
                        "--depth 2 on a 64x64 grid; on QG altimetry it doubles retrieval R@5)")
    g.add_argument("--depth", type=positive_int, default=None, help="cnn: strided stages, each halving the grid (default: 3, less on small grids)")
    g.add_argument("--width", type=positive_int, default=None, help="cnn: channels of the first stage (default: 32)")
    g.add_argument("--input-pool", type=positive_int, default=None, help="cnn: average p x p blocks first (default: 1)")
    g.add_argument("--val-fraction", type=number(lo=0.0, hi=1.0, lo_open=True, hi_open=True), default=None, help="last fraction of times used to validate (default: 0.2)")
    g.add_argument("--patience", type=positive_int, default=None, help="early stopping after N epochs without improvement")
    g.add_argument("--block", type=positive_int, default=None,
                   help="batches hold blocks of this many consecutive days sharing a shift (hard negatives; default: 1 = plain shuffle)")
    g.add_argument("--fixed-pairs", action="store_true", help="train on OBS.nc's own observations (times must match)")
    g.add_argument("--resume", action="store_true", help="continue an interrupted run from its state in .MODEL_DIR.resume/ beside MODEL_DIR (same options)")


#: API keywords -> the options they come from (errors that depend on the data name the option).
SPELLING = {"obs_days": "--obs-days", "embedding_dim": "--embedding-dim", "tau": "--tau", "epochs": "--epochs",
            "batch_size": "--batch-size", "lr": "--lr", "seed": "--seed", "seconds": "--seconds",
            "size": "--window-size", "stride": "--window-stride", "halo": "--halo", "depth": "--depth",
            "width": "--width", "input_pool": "--input-pool", "val_fraction": "--val-fraction",
            "patience": "--patience", "block": "--block", "max_seconds": "--seconds", "block_size": "--block",
            "patterns sigma_fraction": "--sigma-range", "patterns": "--patterns"}


def _settings(args) -> dict:
    """The API settings of the options given."""
    from oceanda.commands import given
    from oceanda.errors import ConfigurationError

    if args.periodic and args.not_periodic:
        raise ConfigurationError("--periodic and --not-periodic contradict each other; expected one")
    if args.patterns is not None and args.kind == "field":
        raise ConfigurationError("--patterns: pattern mixtures train window models; expected --kind window (or no --kind)")
    if args.sigma_range is not None and args.patterns is None:
        raise ConfigurationError("--sigma-range: the noise range of a pattern model; expected --patterns too")
    s = given(args, "kind", "state_vars", "obs_vars", "obs_days", "similarity", "loss", "embedding_dim", "tau", "epochs",
              "batch_size", "lr", "seed", "seconds", "encoder", "val_fraction", "patience", "block",
              size="window_size", stride="window_stride", halo="halo")
    cnn = given(args, "head", "depth", "width", "input_pool")
    if cnn:
        s["cnn"] = cnn
    if args.fixed_tau:
        s["learn_tau"] = False
    if args.fixed_pairs:
        s["fresh"] = False
    if args.resume:
        s["resume"] = True
    if args.periodic or args.not_periodic:
        s["periodic"] = bool(args.periodic)
    if args.calibrate:
        s["calibrate"] = True
    if args.patterns is not None:
        s["patterns"] = {"families": args.patterns, **({"sigma_fraction": args.sigma_range} if args.sigma_range else {})}
    return s


def run(args) -> int:
    import os
    import sys

    from oceanda import api
    from oceanda.commands import cli_spelling, units_option
    from oceanda.errors import ConfigurationError

    settings = _settings(args)
    if args.window is not None:
        print("oceanda train: warning: --window is deprecated (it meant days of observations); use --obs-days", file=sys.stderr)
        settings.setdefault("obs_days", args.window)
    if bool(args.tune_states) != bool(args.tune_obs):
        raise ConfigurationError("--tune-states and --tune-obs go together; expected both")
    inputs = [*args.states, args.obs, *(args.tune_states or []), args.tune_obs]
    api.check_outputs(inputs, [], folders=[args.out])  # MODEL_DIR is neither an input nor holds one
    units = units_option(args.units)
    with cli_spelling(**SPELLING):
        states = api.open_states(args.states, variables=args.state_vars, units=units)
        obs = api.open_obs(args.obs, like=states, variables=args.obs_vars, units=units)
        opened = [states, obs]
        if args.tune_states:
            settings["tune_states"] = api.open_states(args.tune_states, units=units).load()
            settings["tune_obs"] = api.open_obs(args.tune_obs, like=states, units=units).load()
            opened += [settings["tune_states"], settings["tune_obs"]]
        api.check_units(units, opened, inputs)
        model, res = api.train(
            states, obs, args.out, overwrite=args.overwrite, quiet=True if args.quiet else None,
            source={"states": [str(s) for s in args.states], "obs": str(args.obs), "command": api.command_line()},
            log=lambda msg: print(f"oceanda train: {msg}", file=sys.stderr), **settings,
        )
    if int(os.environ.get("WORLD_SIZE") or 1) > 1 and os.environ.get("RANK", "0") != "0":
        return EXIT_WEAK if res.health and res.health["weak"] and not args.allow_weak else 0  # torchrun: rank 0 reports
    kind = "window" if (model.config.get("extra") or {}).get("window") else "field"
    print(f"trained a {kind} model: {len(res.history)} epochs (best {res.best_epoch}); model in {args.out}")
    health = res.health
    print(res.health_summary())
    if health and health["weak"]:
        print(f"oceanda train: warning: the model is within 2x of chance ({health['criterion']}); check the pairing of "
              "states and observations, the observation variable and the training budget"
              + ("" if args.allow_weak else f" (exit code {EXIT_WEAK}; --allow-weak accepts it)"), file=sys.stderr)
        return 0 if args.allow_weak else EXIT_WEAK
    return 0
