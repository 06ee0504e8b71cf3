"""Cost of the testbeds: QG model-days per member (batched), torus drifters, observation masks.

Usage: .venv/bin/python benchmarks/bench_qg.py [--days 10] [--members 1 8 64] [--device cpu]
Prints one line per configuration; numbers, not assertions.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--days", type=float, default=10.0)
    p.add_argument("--members", type=int, nargs="+", default=[1, 8, 64])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--torus-flows", type=int, default=256)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from oceanda.observe import AlongTrackAltimetry, GappyField
    from oceanda.testbeds.qg import QGModel, spun_up_state
    from oceanda.testbeds.torus import TorusFlow

    base = spun_up_state()
    for dtype in (torch.float32, torch.float64):
        model = QGModel(dtype=dtype, device=args.device, threads=args.threads)
        model.advance(base[:1], 1)  # warm-up
        for m in args.members:
            q = base[np.arange(m) % base.shape[0]]
            if args.device != "cpu":
                torch.cuda.synchronize()
            t = time.perf_counter()
            model.advance(q, args.days)
            if args.device != "cpu":
                torch.cuda.synchronize()
            e = time.perf_counter() - t
            print(f"qg 64x64 {str(dtype).split('.')[-1]:8s} {args.device} members={m:4d}: "
                  f"{e / args.days / m * 1e3:8.3f} ms per model-day per member  ({e:.2f} s for {args.days:g} days)")

    flow = TorusFlow(threads=args.threads)
    c = flow.sample_coefficients(args.torus_flows, np.random.default_rng(0))
    t = time.perf_counter()
    flow.drifters(c, dt=1e-4, T=0.01)
    e = time.perf_counter() - t
    print(f"torus drifters: {e / (args.torus_flows * 100) * 1e6:.2f} us per flow per RK4 step "
          f"({args.torus_flows} flows); the paper's 32k flows x 10^4 steps -> {e / (args.torus_flows * 100) * 32768 * 1e4 / 60:.0f} min")

    rng = np.random.default_rng(0)
    for op in (AlongTrackAltimetry(), GappyField()):
        t = time.perf_counter()
        op.sample_mask(2000, rng)
        print(f"{type(op).__name__}.sample_mask: {(time.perf_counter() - t) / 2000 * 1e6:.0f} us per 64x64 mask")


if __name__ == "__main__":
    main()
