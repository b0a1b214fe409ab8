"""`make bench`'s scripts run and print their tables (at small sizes: the numbers are not the point here)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

SMALL_RUNS = {
    "prepare.py": ["--count", "120", "--size", "32", "--rounds", "2"],
    "data_path.py": ["--count", "150", "--size", "32", "--rounds", "2"],
    "train.py": ["--size", "16", "--batch", "8", "--width", "8", "--steps", "2", "--rounds", "2", "--profile", "2", "--compile"],
    "scale.py": ["--size", "16", "--batch", "8", "--width", "8", "--nproc", "2", "--steps", "2", "--rounds", "2", "--device", "cpu"],
    "evaluate.py": ["--images", "20", "--size", "32", "--dim", "64", "--swd-images", "20", "--rounds", "2"],
    "memmap_read.py": ["--images", "300", "--sizes", "16,32", "--batch", "8", "--batches", "5", "--rounds", "2"],
}


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(SMALL_RUNS))
def test_benchmark_prints_its_table(script):
    done = subprocess.run([sys.executable, f"benchmarks/{script}", *SMALL_RUNS[script]], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("|")]
    assert len(rows) >= 3, done.stdout
    assert "Traceback" not in done.stderr
    assert "busy with other work before the run" in done.stdout  # every table says how quiet the machine was
    if script == "train.py":  # --profile: where each model's step time goes
        profiled = [line.strip() for line in done.stdout.splitlines() if " s over 2 steps; convolutions " in line]
        assert [line.split(":")[0] for line in profiled] == ["DCGAN", "VAE-GAN", "VAE-GAN compiled"], done.stdout
        bound = next(line for line in done.stdout.splitlines() if line.startswith("FLOP-bound ratio"))
        assert 0.0 < float(bound.split(": ")[1].split("x")[0]) < 1.0, bound  # the VAE-GAN step does more work
        # --compile: the third side has its own row, no FLOP count of its own, and a warm-up that holds the
        # compilation (seconds, against milliseconds for the eager steps at this size).
        table = {cells[0]: cells for cells in ([c.strip() for c in row.strip("|").split("|")] for row in rows)}
        compiled, eager = table["VAE-GAN compiled"], table["VAE-GAN"]
        assert compiled[3] == compiled[4] == "-" and eager[3] != "-", (compiled, eager)
        assert float(compiled[5]) > float(eager[5]) + 1.0, (compiled, eager)
        assert "torch.compile, compiled / eager VAE-GAN step (medians): " in done.stdout
    if script == "evaluate.py":  # the SWD's numpy sort against torch.sort: timed, and checked to agree
        assert "Sorted SWD projections, 256 directions x 1,280 patches" in done.stdout
        assert "the same values: True" in done.stdout
    assert " / " in rows[2] and "%" in rows[2]  # min / median / max (spread), never a bare number


@pytest.mark.slow
def test_data_path_benchmark_accounts_for_every_file_and_says_where_the_time_goes():
    done = subprocess.run([sys.executable, "benchmarks/data_path.py", *SMALL_RUNS["data_path.py"]], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    out = done.stdout
    # 150 good files + the five bad ones every scrape has, each rejected for its own reason.
    assert "validate accepted 150 of 155 files; rejected by reason: {'duplicate': 1, 'not_decodable': 3, 'too_small': 1}" in out
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ")}
    assert {"plain loop (1 process)", "fetch", "validate", "prepare"} <= set(rows)
    assert "MiB" in rows["validate"] and "MiB" in rows["prepare"]  # peak memory of the whole process tree
    phases = {line.split(":")[0].strip(): line for line in out.splitlines() if line.startswith("  ")}
    assert "scan: read, hash, header, decode" in phases["validate"] and "import great_expectations (beside the scan)" in phases["validate"]
    assert "decode + resize + write rows" in phases["prepare"] and "other (start-up, imports, writes)" in phases["prepare"]
    assert "prepare vs plain loop:" in out and "validate vs plain loop:" in out and "validate + prepare:" in out


def test_make_bench_runs_exactly_these_scripts():
    makefile = (REPO_ROOT / "Makefile").read_text()
    recipe = makefile[makefile.index("\nbench:"):].split("\n\n")[0]
    assert sorted(line.split("benchmarks/")[1].split()[0] for line in recipe.splitlines() if "benchmarks/" in line) == sorted(SMALL_RUNS)


@pytest.mark.slow
def test_few_shot_benchmark_prints_its_table_and_writes_both_grids(tmp_path):
    """benchmarks/few_shot.py end to end at a tiny length: the stages, both runs, the table and the pictures."""
    out = tmp_path / "few_shot.png"
    done = subprocess.run([sys.executable, "benchmarks/few_shot.py", "--count", "24", "--size", "16", "--kimg", "0.2",
                           "--draws", "2", "--samples", "40", "--out", str(out)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "validate: 24 files seen, 24 accepted, 0 rejected" in done.stdout
    assert "prepare: 24 train + 0 val images at 16 px" in done.stdout
    assert "instrument check: swd_ratio on the degradation ladder of these 24 images, 12 a side, 2 draws: passes" in done.stdout
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert rows[0].split("|")[2].strip() == "without DiffAugment" and rows[0].split("|")[3].strip() == "with DiffAugment"
    assert {row.split("|")[1].strip() for row in rows[1:]} >= {"swd_ratio (validated)", "memorisation ratio", "copy fraction",
                                                                "background variety", "position variety"}
    assert "draws of 12 images a side against one random half of the training set" in done.stdout
    assert "swd_ratio: DiffAugment" in done.stdout and "whole benchmark (render, stages, ladder, both runs, scoring):" in done.stdout
    from PIL import Image

    sheet = Image.open(out)
    assert sheet.size[0] > 2.5 * sheet.size[1]  # training images and both grids, side by side
    assert Image.open(tmp_path / "few_shot_nearest.png").size[0] > 0


def test_few_shot_images_only_writes_the_character_set(tmp_path):
    done = subprocess.run([sys.executable, "benchmarks/few_shot.py", "--images-only", str(tmp_path / "one"), "--count", "5"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == [f"character-{i:03d}.png" for i in range(5)]


def _load_benchmark(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", REPO_ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_latent_prior_mixture_draws_from_the_fitted_clusters():
    import numpy as np

    latent_prior = _load_benchmark("latent_prior")
    rng = np.random.default_rng(0)
    centres = np.array([[-6.0, 0.0, 0.0], [6.0, 0.0, 0.0]])
    codes = centres[rng.integers(2, size=2000)] + 0.5 * rng.standard_normal((2000, 3))
    sources = latent_prior.fitted_sources(codes, [2], count=4000, seed=0)
    gaussian, mixture = sources["fitted Gaussian"], sources["mixture of 2 (full)"]
    # One Gaussian covers the gap between the clusters (the "prior hole" of a VAE); the mixture does not.
    assert np.allclose(gaussian.mean(axis=0), codes.mean(axis=0), atol=0.3)
    assert np.allclose(np.cov(gaussian, rowvar=False), np.cov(codes, rowvar=False), atol=1.0)
    assert (np.abs(gaussian[:, 0]) < 3).mean() > 0.15
    assert (np.abs(mixture[:, 0]) < 3).mean() < 0.01
    assert 0.45 < (mixture[:, 0] > 0).mean() < 0.55
    assert not (np.diff(mixture[:, 0] > 0) == 0).all()  # shuffled: not grouped by component

    # Fewer codes than dimensions (a small training set): a singular covariance still samples,
    # and a mixture with more components than half the codes is skipped, not an error.
    few = rng.standard_normal((6, 16))
    small = latent_prior.fitted_sources(few, [2, 5], count=10, seed=0)
    assert set(small) == {"fitted Gaussian", "mixture of 2 (diag)"} and small["fitted Gaussian"].shape == (10, 16)


@pytest.mark.slow
def test_latent_prior_benchmark_prints_its_table_and_writes_the_grids(real_faces, tmp_path):
    import numpy as np
    import torch
    from PIL import Image

    from alphagan.config import parse_params
    from alphagan.training import train
    from tests.test_training import TINY_TRAIN

    prepared = tmp_path / "prepared"
    prepared.mkdir()
    np.save(prepared / "train.npy", real_faces[:200])
    np.save(prepared / "val.npy", real_faces[200:300])
    params = parse_params({"data": {"image_size": 32}, "train": {**TINY_TRAIN, "max_steps": 10, "checkpoint_every": 10}})
    torch.manual_seed(0)
    train(real_faces[:200], real_faces[200:300], params.train, 32, 0, tmp_path / "checkpoint.pt")
    out = tmp_path / "sheet.png"
    done = subprocess.run([sys.executable, "benchmarks/latent_prior.py", "--checkpoint", str(tmp_path / "checkpoint.pt"),
                           "--prepared", str(prepared), "--samples", "100", "--draws", "2", "--components", "2",
                           "--temperatures", "0.5", "--out", str(out)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    rows = {line.split("|")[1].strip(): line for line in done.stdout.splitlines() if line.startswith("| ")}
    assert set(rows) == {"latent codes from", "real images (floor)", "N(0, I) (the prior)", "temperature 0.5",
                         "fitted Gaussian", "mixture of 2 (full)", "posterior (ceiling)"}
    assert "swd_ratio (validated)" in rows["latent codes from"] and "c2st_accuracy" in rows["latent codes from"]
    floor_cells = rows["real images (floor)"].split("|")[2:-2]
    assert floor_cells[0].split()[0] == "1.0000"  # swd_ratio's floor is 1 by construction
    for name in ("N(0, I) (the prior)", "temperature 0.5", "posterior (ceiling)"):
        assert all("±" in cell for cell in rows[name].split("|")[2:-2])
    assert "draws of 100 images a side against the val split (100 images)" in done.stdout
    assert "c2st_accuracy: a classifier's held-out accuracy between the samples and 100 training images a side" in done.stdout
    for metric in ("swd_ratio", "c2st_accuracy", "fd_random", "precision_random", "recall_random"):
        assert f"{metric}: beyond both spreads better than N(0, I):" in done.stdout
    sheet = Image.open(out)
    # five grids side by side: prior, temperature 0.5, Gaussian, mixture, posterior
    assert 4.5 * sheet.size[1] < sheet.size[0] < 5.5 * sheet.size[1]


@pytest.mark.parametrize("wrong", ["1.0", "0", "-0.5", "0.8,abc"])
def test_latent_prior_refuses_a_temperature_outside_zero_to_one_before_any_work(wrong, tmp_path):
    done = subprocess.run([sys.executable, "benchmarks/latent_prior.py", "--checkpoint", str(tmp_path / "none.pt"),
                           "--temperatures", wrong], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--temperatures" in done.stderr and "missing" not in done.stderr, done.stderr


def test_train_benchmark_counts_every_flop_of_a_step_once():
    """Convolutions and matrix products are linear in the batch: a count that doubles exactly with
    it is a count of the step's passes, not of a fixed cost (model building, a warm-up)."""
    import argparse
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_benchmark", REPO_ROOT / "benchmarks" / "train.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    counts = {}
    for batch in (4, 8):
        benchmark.ARGS = argparse.Namespace(size=16, batch=batch, width=8)
        counts[batch] = {which: benchmark.step_flops(which, "cpu") for which in ("DCGAN", "VAE-GAN")}
    for which in ("DCGAN", "VAE-GAN"):
        assert counts[8][which] == 2 * counts[4][which] > 0, counts
    # The VAE-GAN runs an encoder, a decoder over 2B latents and its discriminator over 3B images.
    assert 1.5 < counts[8]["VAE-GAN"] / counts[8]["DCGAN"] < 2.5, counts


@pytest.mark.parametrize(("script", "wrong"), [("quality.py", "no-suffix"), ("discriminator_batches.py", "."),
                                             ("few_shot.py", "grid.jpg"), ("latent_prior.py", "a-folder.png/")])
def test_a_picture_path_that_is_not_a_png_is_refused_before_any_work(script, wrong, tmp_path):
    # quality.py once trained both models for 15 minutes, printed its table, then died with a
    # traceback on `--out reports/some-folder`: the picture was lost.
    (tmp_path / "a-folder.png").mkdir()
    out = str(tmp_path / wrong)
    done = subprocess.run([sys.executable, f"benchmarks/{script}", "--out", out], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"argument --out: {out!r} is not a .png file path" in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert [path.name for path in tmp_path.iterdir()] == ["a-folder.png"]  # nothing written
    assert not any((tmp_path / "a-folder.png").iterdir())


@pytest.mark.slow
def test_ema_horizon_benchmark_keeps_one_average_per_ramp_on_one_run(real_faces, write_params, tmp_path):
    """benchmarks/ema_horizon.py at a tiny length: its ramp-10 average is the run's own EMA
    (checked by the script, bit for bit), every ramp and the raw decoder get a scored row, the
    decays are those of the formula, and different horizons give different samples."""
    import numpy as np
    from PIL import Image

    from tests.test_training import TINY_TRAIN

    params = write_params({"data": {"image_size": 32}, "train": {**TINY_TRAIN, "max_steps": 12, "checkpoint_every": 100}})
    prepared = tmp_path / "data" / "prepared"
    prepared.mkdir(parents=True)
    np.save(prepared / "train.npy", real_faces[:200])
    np.save(prepared / "val.npy", real_faces[200:300])
    out = tmp_path / "ema.png"
    done = subprocess.run([sys.executable, "benchmarks/ema_horizon.py", "--params", str(params), "--ramps", "2,3",
                           "--samples", "100", "--out", str(out)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "the ramp-10 average is the run's own EMA decoder, bit for bit: True" in done.stdout
    rows = {cells[0]: cells for cells in ([c.strip() for c in line.strip("|").split("|")]
                                          for line in done.stdout.splitlines() if line.startswith("| "))}
    assert set(rows) == {"decoder", "ramp 2", "ramp 3", "ramp 10", "raw decoder", "real floor"}
    # 12 steps = 12 updates; the last is update n = 11: decay (1 + 11) / (r + 11), under the 0.999 cap.
    for ramp in (2, 3, 10):
        assert rows[f"ramp {ramp}"][1] == f"{12 / (ramp + 11):.5f}", rows[f"ramp {ramp}"]
    assert rows["raw decoder"][1] == "-" and rows["real floor"][3].startswith("1.0000")  # swd_ratio's floor is 1
    # Four decoders, four sets of samples (12 steps: the averages reach 12/13, 12/14 and 12/21 of their past).
    swd = {name: rows[name][3] for name in ("ramp 2", "ramp 3", "ramp 10", "raw decoder")}
    assert len(set(swd.values())) == 4, swd
    assert Image.open(out).size[0] > 3.5 * Image.open(out).size[1]  # the four grids side by side


def test_ema_horizon_refuses_a_ramp_that_never_averages():
    done = subprocess.run([sys.executable, "benchmarks/ema_horizon.py", "--ramps", "3,1"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "every ramp must be > 1" in done.stderr, done.stderr[-2000:]


@pytest.mark.parametrize("script", ["quality.py", "discriminator_batches.py", "ema_horizon.py"])
def test_a_benchmark_without_prepared_data_says_how_to_make_it(script, write_params, tmp_path):
    params = write_params()  # paths.prepared under tmp_path: nothing there yet
    (tmp_path / "data" / "prepared").mkdir(parents=True)
    (tmp_path / "data" / "prepared" / "train.npy").write_bytes(b"")  # half a prepare: val.npy is missing
    done = subprocess.run([sys.executable, f"benchmarks/{script}", "--params", str(params)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr[-2000:]
    name = script.removesuffix(".py")
    assert done.stderr.strip() == f"{name}: {tmp_path / 'data' / 'prepared' / 'val.npy'} is missing; run `dvc repro prepare` first"
