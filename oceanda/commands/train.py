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
    from oceanda.contrastive.losses import LOSSES
    from oceanda.contrastive.similarity import KINDS
    from oceanda.pairs import ENCODER_CHOICES

    parser.add_argument("--states", required=True, nargs="+", metavar="STATES.nc", help="training states (NetCDF/zarr; several files are joined in time)")
    parser.add_argument("--obs", required=True, metavar="OBS.nc", help="observations: their patterns and errors")
    parser.add_argument("--out", required=True, metavar="MODEL_DIR", help="checkpoint directory")
    parser.add_argument("--state-vars", nargs="+", metavar="V", help="state variables to encode (default: all)")
    parser.add_argument("--obs-vars", nargs="+", metavar="V", help="observed variables (default: all in OBS.nc)")
    parser.add_argument("--similarity", choices=KINDS, default="cosine", help="similarity (default: cosine)")
    parser.add_argument("--loss", choices=[l for l in LOSSES if not l.startswith("mmd") and l != "weighted"], default="clip",
                        help="loss (default: clip, the two-sided conditional loss)")
    parser.add_argument("--encoder", choices=ENCODER_CHOICES, default="cnn", help="encoder of both sides (default: cnn, masked CNN)")
    parser.add_argument("--embedding-dim", type=int, default=128, help="embedding dimension (default: 128)")
    parser.add_argument("--head", choices=["linear", "spatial"], default="linear",
                        help="cnn head: linear (dense layer to the embedding) or spatial (the embedding is the final "
                             "coarse feature map, a sum of local agreements like a log-likelihood; --embedding-dim must "
                             "be a multiple of that map's cells, e.g. 1024 = 16 features x 8x8 with --input-pool 2 "
                             "--depth 2 on a 64x64 grid; on QG altimetry it doubles retrieval R@5)")
    parser.add_argument("--depth", type=int, default=3, help="cnn: strided stages, each halving the grid (default: 3)")
    parser.add_argument("--width", type=int, default=32, help="cnn: channels of the first stage (default: 32)")
    parser.add_argument("--input-pool", type=int, default=1, help="cnn: average p x p blocks first (default: 1)")
    parser.add_argument("--tau", type=float, default=0.07, help="initial temperature (default: 0.07)")
    parser.add_argument("--fixed-tau", action="store_true", help="keep the temperature fixed (default: learned)")
    parser.add_argument("--window", type=int, default=1, help="days of observations per sample (default: 1)")
    parser.add_argument("--epochs", type=int, default=20, help="epochs (default: 20)")
    parser.add_argument("--batch-size", type=int, default=128, help="batch size (default: 128)")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default: 2e-3)")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="last fraction of times used to validate (default: 0.2)")
    parser.add_argument("--patience", type=int, default=None, help="early stopping after N epochs without improvement")
    parser.add_argument("--seconds", type=float, default=None, help="stop after the epoch that exceeds this wall time")
    parser.add_argument("--block", type=int, default=1,
                        help="batches hold blocks of this many consecutive days sharing a shift (hard negatives; default: 1 = plain shuffle)")
    parser.add_argument("--fixed-pairs", action="store_true", help="train on OBS.nc's own observations (times must match)")
    parser.add_argument("--not-periodic", action="store_true", help="the grid is not doubly periodic (no shifts, zero padding)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run in MODEL_DIR")
    parser.add_argument("--overwrite", action="store_true", help="replace a model in MODEL_DIR")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    import torch

    from oceanda import io
    from oceanda.pairs import train_field_model

    torch.manual_seed(args.seed)  # encoder initialisation (the CLI process owns the global RNG)
    states = io.open_states(args.states, variables=args.state_vars)
    obs = io.open_obs(args.obs, like=states, variables=args.obs_vars)
    model, res = train_field_model(
        states, obs, args.out, state_vars=args.state_vars, obs_vars=args.obs_vars, window=args.window,
        similarity=args.similarity, loss=args.loss, encoder=args.encoder, embedding_dim=args.embedding_dim,
        tau=args.tau, learn_tau=not args.fixed_tau, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        val_fraction=args.val_fraction, fresh=not args.fixed_pairs, periodic=not args.not_periodic, seed=args.seed,
        seconds=args.seconds, patience=args.patience, resume=args.resume, overwrite=args.overwrite, block=args.block,
        cnn={"head": args.head, "depth": args.depth, "width": args.width, "input_pool": args.input_pool},
        quiet=True if args.quiet else None,
        source={"states": [str(s) for s in args.states], "obs": str(args.obs), "command": io.command_line()},
    )
    last = res.history[-1] if res.history else {}
    msg = f"trained {len(res.history)} epochs (best {res.best_epoch})"
    if "val_r5_state_from_obs" in last:
        msg += f"; validation R@1 {last['val_r1_state_from_obs']:.3f}, R@5 {last['val_r5_state_from_obs']:.3f} (state from obs)"
    print(f"{msg}; model in {args.out}")
    return 0
