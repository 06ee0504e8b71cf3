"""`oceanda train`: train a contrastive encoder pair on gridded states and observations."""

from __future__ import annotations

HELP = "train contrastive state/observation encoders (writes MODEL_DIR/model.safetensors + config.json)"
DESCRIPTION = """\
Train encoders of model states and of observations with a contrastive loss (Baptista, Stuart & Tran
2025): the model defines nu(state | obs) ∝ exp(s(g_state(x), g_obs(y)) / tau) mu_state(dx).

Pairs are drawn afresh every epoch (unless --fixed-pairs): the observation patterns of OBS.nc (its
operator, e.g. along-track altimetry, or its own masks) and its noise (<var>_error) applied to the
training states, with random periodic shifts on doubly periodic grids. --window W feeds the last W
days of observations, stacked as channels. The last --val-fraction of the times validates (never
trained on). MODEL_DIR receives model.safetensors, config.json and history.json; MODEL_DIR/resume
lets --resume continue an interrupted run to the same result.

Example:
  oceanda train --states states.nc --obs obs.nc --out model --window 5 --epochs 20"""


def add_arguments(parser) -> None:
    from oceanda import api

    parser.add_argument("--states", required=True, nargs="+", metavar="STATES.nc", help="training states (NetCDF/zarr; several files are joined in time)")
    parser.add_argument("--obs", required=True, metavar="OBS.nc", help="observations: their patterns and errors")
    parser.add_argument("--out", required=True, metavar="MODEL_DIR", help="checkpoint directory")
    parser.add_argument("--state-vars", nargs="+", metavar="V", help="state variables to encode (default: all)")
    parser.add_argument("--obs-vars", nargs="+", metavar="V", help="observed variables (default: all in OBS.nc)")
    parser.add_argument("--similarity", choices=api.choices("similarity"), default=None, help="similarity (default: cosine)")
    parser.add_argument("--loss", choices=api.choices("loss"), default=None,
                        help="loss (default: clip, the two-sided conditional loss)")
    parser.add_argument("--encoder", choices=api.choices("encoder"), default=None, help="encoder of both sides (default: cnn, masked CNN)")
    parser.add_argument("--embedding-dim", type=int, default=None, help="embedding dimension (default: 128)")
    parser.add_argument("--head", choices=["linear", "spatial"], default=None,
                        help="cnn head: linear (dense layer to the embedding) or spatial (the embedding is the final "
                             "coarse feature map, a sum of local agreements like a log-likelihood; --embedding-dim must "
                             "be a multiple of that map's cells, e.g. 1024 = 16 features x 8x8 with --input-pool 2 "
                             "--depth 2 on a 64x64 grid; on QG altimetry it doubles retrieval R@5)")
    parser.add_argument("--depth", type=int, default=None, help="cnn: strided stages, each halving the grid (default: 3)")
    parser.add_argument("--width", type=int, default=None, help="cnn: channels of the first stage (default: 32)")
    parser.add_argument("--input-pool", type=int, default=None, help="cnn: average p x p blocks first (default: 1)")
    parser.add_argument("--tau", type=float, default=None, help="initial temperature (default: 0.07)")
    parser.add_argument("--fixed-tau", action="store_true", help="keep the temperature fixed (default: learned)")
    parser.add_argument("--window", type=int, default=None, help="days of observations per sample (default: 1)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs (default: 20)")
    parser.add_argument("--batch-size", type=int, default=None, help="batch size (default: 128)")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (default: 2e-3)")
    parser.add_argument("--val-fraction", type=float, default=None, help="last fraction of times used to validate (default: 0.2)")
    parser.add_argument("--patience", type=int, default=None, help="early stopping after N epochs without improvement")
    parser.add_argument("--seconds", type=float, default=None, help="stop after the epoch that exceeds this wall time")
    parser.add_argument("--block", type=int, default=None,
                        help="batches hold blocks of this many consecutive days sharing a shift (hard negatives; default: 1 = plain shuffle)")
    parser.add_argument("--fixed-pairs", action="store_true", help="train on OBS.nc's own observations (times must match)")
    parser.add_argument("--not-periodic", action="store_true", help="the grid is not doubly periodic (no shifts, zero padding)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: 0)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run in MODEL_DIR")
    parser.add_argument("--overwrite", action="store_true", help="replace a model in MODEL_DIR")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    from oceanda import api
    from oceanda.commands import given

    states = api.open_states(args.states, variables=args.state_vars)
    obs = api.open_obs(args.obs, like=states, variables=args.obs_vars)
    settings = given(args, "state_vars", "obs_vars", "window", "similarity", "loss", "encoder", "embedding_dim", "tau",
                     "epochs", "batch_size", "lr", "val_fraction", "seed", "seconds", "patience", "block")
    cnn = given(args, "head", "depth", "width", "input_pool")
    model, res = api.train(
        states, obs, args.out, learn_tau=not args.fixed_tau, fresh=not args.fixed_pairs, periodic=not args.not_periodic,
        resume=args.resume, overwrite=args.overwrite, cnn=cnn or None, quiet=True if args.quiet else None,
        source={"states": [str(s) for s in args.states], "obs": str(args.obs), "command": api.command_line()},
        **settings,
    )
    last = res.history[-1] if res.history else {}
    msg = f"trained {len(res.history)} epochs (best {res.best_epoch})"
    if "val_r5_state_from_obs" in last:
        msg += f"; validation R@1 {last['val_r1_state_from_obs']:.3f}, R@5 {last['val_r5_state_from_obs']:.3f} (state from obs)"
    print(f"{msg}; model in {args.out}")
    return 0
