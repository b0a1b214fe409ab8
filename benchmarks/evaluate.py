"""Benchmark: feature extraction speed per backbone, the 2048-d Fréchet distance against
the scipy.linalg.sqrtm reference, and the SWD's sort of its projections against torch.sort,
in one run. Prints a table each.

The InceptionV3 row runs torch-fidelity's network with the real 2015 weights when they
are in the torch hub cache, else with random weights of the same shapes: the speed is
the same, the features are not (marked in the table).

    python benchmarks/evaluate.py [--images 200] [--size 64] [--dim 2048] [--swd-images 300]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.linalg
import torch

from alphagan.benchmarking import UNSTABLE, Rounds, interleaved, machine_line, ratio
from alphagan.evaluation import find_inception_weights
from alphagan.metrics.distances import _sorted_projections, _unit_directions, frechet_distance
from alphagan.metrics.features import RandomFeatures, extract


def inception_for_speed():
    """(model, label): the real weights if cached, else the same network randomly initialised."""
    from torch_fidelity import feature_extractor_inceptionv3 as fidelity

    path, _ = find_inception_weights("")
    if path:
        return fidelity.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=path), "InceptionV3 (2015 weights)"
    original_load, original_url = fidelity.FeatureExtractorInceptionV3.load_state_dict, fidelity.load_state_dict_from_url
    try:
        fidelity.load_state_dict_from_url = lambda *a, **k: {}
        fidelity.FeatureExtractorInceptionV3.load_state_dict = lambda self, state: None
        model = fidelity.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    finally:
        fidelity.FeatureExtractorInceptionV3.load_state_dict, fidelity.load_state_dict_from_url = original_load, original_url
    return model, "InceptionV3 (random weights, speed only)"


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--swd-images", type=int, default=300, help="images a side of one SWD comparison (evaluate's count)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (>= 2 for a ratio)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    images = np.random.default_rng(0).integers(0, 256, (args.images, args.size, args.size, 3), dtype=np.uint8)
    print(machine_line())
    inception, label = inception_for_speed()
    backbones = {"random conv net (512-d)": (RandomFeatures(), args.images), label: (inception, max(10, args.images // 10))}
    for model, _ in backbones.values():
        extract(model, images[:4], 4, device)  # warm-up

    def extraction(model, count):
        return lambda: count / timed(lambda: extract(model, images[:count], 50, device))[0]

    speeds = interleaved({name: extraction(model, count) for name, (model, count) in backbones.items()}, args.rounds)
    print(f"\nFeature extraction, {args.size} px inputs, {device}; {args.rounds} interleaved rounds:\n")
    print(f"| {'backbone':<42} | {'images':>6} | {'images/s min / median / max (spread)':>38} |")
    print(f"|{'-' * 44}|{'-' * 8}|{'-' * 40}|")
    for name, rounds in speeds.items():
        print(f"| {name:<42} | {backbones[name][1]:>6} | {rounds.summary(1):>38} |")

    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(args.dim, args.dim + 256)), rng.normal(size=(args.dim, args.dim + 256))
    s1, s2 = a @ a.T / args.dim, b @ b.T / args.dim
    mu1, mu2 = rng.normal(size=args.dim), rng.normal(size=args.dim)

    def reference():
        covmean = scipy.linalg.sqrtm(s1 @ s2)
        return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real))

    values: dict[str, object] = {}

    def per_second(name, fn):  # rates (calls per second), so higher is better like every other table
        def run() -> float:
            seconds, values[name] = timed(fn)
            return 1.0 / seconds
        return run

    implementations = {"alphagan (two symmetric eigh)": lambda: frechet_distance(mu1, s1, mu2, s2),
                       "scipy.linalg.sqrtm reference": reference}
    fd = interleaved({name: per_second(name, fn) for name, fn in implementations.items()}, args.rounds)
    print(f"\nFréchet distance at {args.dim}-d ({torch.get_num_threads()} threads); {args.rounds} interleaved rounds:\n")
    print(f"| {'implementation':<34} | {'seconds min / median / max (spread)':>38} | {'value':>14} |")
    print(f"|{'-' * 36}|{'-' * 40}|{'-' * 16}|")
    for name, rounds in fd.items():
        seconds = Rounds(name, tuple(1 / v for v in rounds.values))
        print(f"| {name:<34} | {seconds.summary(2):>38} | {values[name]:14.6f} |")
    ours, ref = values["alphagan (two symmetric eigh)"], values["scipy.linalg.sqrtm reference"]
    print(f"\nrelative difference {abs(ours - ref) / abs(ref):.2e}")
    speedup = ratio(fd["alphagan (two symmetric eigh)"], fd["scipy.linalg.sqrtm reference"])
    print(f"speed-up over scipy: {UNSTABLE if speedup is None else f'{speedup:.1f}x'}")

    # The SWD's finest band: 64 patches of 7x7x3 per image projected on 256 directions, each
    # direction's projections sorted (MultiscaleSWD's defaults, one side of one comparison).
    points = torch.from_numpy(rng.normal(size=(args.swd_images * 64, 147)).astype(np.float32))
    units = _unit_directions(147, 256, seed=0)
    sorts = {"alphagan (numpy sort on the CPU)": lambda: _sorted_projections(points, units),
             "torch.sort reference": lambda: torch.sort(units.T @ points.T, dim=1).values}
    for fn in sorts.values():
        fn()  # warm-up: the first call allocates
    swd = interleaved({name: per_second(name, fn) for name, fn in sorts.items()}, args.rounds)
    print(f"\nSorted SWD projections, 256 directions x {args.swd_images * 64:,} patches ({torch.get_num_threads()} threads); "
          f"{args.rounds} interleaved rounds:\n")
    print(f"| {'implementation':<34} | {'milliseconds min / median / max (spread)':>42} |")
    print(f"|{'-' * 36}|{'-' * 44}|")
    for name, rounds in swd.items():
        milliseconds = Rounds(name, tuple(1e3 / v for v in rounds.values))
        print(f"| {name:<34} | {milliseconds.summary(1):>42} |")
    same = torch.equal(values["alphagan (numpy sort on the CPU)"], values["torch.sort reference"])
    print(f"\nthe same values: {same}")
    speedup = ratio(swd["alphagan (numpy sort on the CPU)"], swd["torch.sort reference"])
    print(f"speed-up over torch.sort: {UNSTABLE if speedup is None else f'{speedup:.1f}x'}")

if __name__ == "__main__":
    main()
