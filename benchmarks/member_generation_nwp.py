"""What one flow step of the member generator costs per member on an NWP grid (CPU), for context.

One network evaluation (``MemberGeneratorCore.coefficients``: features, embedding, ``rounds`` of message passing and
member mixing, output) of the N128 config's architecture (latent 32, 2 rounds, 2 heads, observations off) on a
reduced or octahedral Gaussian grid with a 9-nearest-neighbour graph, ``--fields`` fields per point (the N128
config has 686: 5 variables x 137 levels + lnsp), ``--members`` members of one case. A flow of ``steps`` steps with
the stochastic Heun scheme costs ``2 steps`` such evaluations. Weights are random (the cost does not depend on them)::

    OMP_NUM_THREADS=1 python benchmarks/member_generation_nwp.py --grid N128 --fields 69 --members 2
    OMP_NUM_THREADS=1 python benchmarks/member_generation_nwp.py --grid N128 --fields 686 --members 1 --points 8884

``--points P`` keeps the first P points of the grid (the step is local, so its cost is linear in the points; this
keeps memory down at 686 fields: one member's input features are points x fields x 12 x 4 bytes).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from hybrid_eda.layers.graphs import sphere_graph  # noqa: E402
from hybrid_eda.models.member_generator_core import MemberGeneratorCore, MemberGeneratorSettings  # noqa: E402
from hybrid_eda.synthetic.grids import make_grid  # noqa: E402


def step_seconds(grid: str, fields: int, members: int, points: int | None, repeats: int) -> dict:
    """Median seconds of one network evaluation for ``members`` members (no autograd)."""
    g = make_grid(grid)
    lat, lon = g.latitudes, g.longitudes
    if points:
        lat, lon = lat[:points], lon[:points]
    graph = sphere_graph(lat, lon, k=9)
    torch.manual_seed(0)
    settings = MemberGeneratorSettings(latent=32, rounds=2, heads=2, steps=4)
    core = MemberGeneratorCore(n_variables=fields, graph=graph, settings=settings).eval()
    torch.nn.init.normal_(core.output.weight, std=0.01)
    n = lat.size
    gen = torch.Generator().manual_seed(1)
    backgrounds = torch.randn((1, members, n, fields), generator=gen)
    guides = torch.randn((1, 2, n, fields), generator=gen)
    with torch.no_grad():
        context = core.condition(backgrounds, guides, guides + 0.1 * torch.randn(guides.shape, generator=gen))
        start_anomaly = (backgrounds - context.centre) / context.spread
        replica = torch.zeros(members, dtype=torch.long)
        t = torch.tensor(0.25)
        times = []
        for _ in range(repeats + 1):
            start = time.perf_counter()
            core.coefficients(backgrounds, t, context, start_anomaly, replica, 1)
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times[1:])  # the first builds the cached smoothing operator
    return {
        "grid": grid,
        "points": int(n),
        "edges": int(graph.src.numel()),
        "fields": fields,
        "members": members,
        "parameters": sum(p.numel() for p in core.parameters()),
        "seconds_per_evaluation": seconds,
        "seconds_per_member_evaluation": seconds / members,
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grid", default="N128")
    p.add_argument("--fields", type=int, default=69)
    p.add_argument("--members", type=int, default=2)
    p.add_argument("--points", type=int, default=None, help="keep the first P points (default: the whole grid)")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    print(json.dumps(step_seconds(args.grid, args.fields, args.members, args.points, args.repeats), indent=1))


if __name__ == "__main__":
    main()
