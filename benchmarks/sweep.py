"""Exploration: train many settings side by side, score them all at equal counts.

Each entry of a JSON list trains in its own process (all at once: tiny 32 px models leave
a big GPU idle; on a CPU each process takes one thread, so a few entries a core keep
every core busy) for a fixed number of steps, in fp32 so that results carry over to the
CPU, then is scored with the same instruments as the evaluate stage against the val
split of ``data/prepared``. A ``"dcgan": true`` entry trains the DCGAN anchor instead.
Prints one row per entry and writes ``results.json`` and a contact sheet of the sample
grids to ``--out``. Steps, not seconds: on a GPU the CPU's cost ratio does not hold.

    python benchmarks/sweep.py benchmarks/sweeps/seeds.json [--out reports/sweep]
    python benchmarks/sweep.py --table reports/sweep/results.json    # print a saved run again

Entry: {"name": "a02", "steps": 4620, "seed": 0, "overrides": {"adversarial_weight": 0.2}}
(overrides are ``train.*`` params on top of params.yaml's).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

KEYS = ["swd_ratio", "swd_32", "swd_16", "swd_8", "c2st_accuracy", "fd_random", "kid_random", "precision_random", "recall_random"]


def run_entry(entry: dict, params_path: str, scratch: str, device_name: str) -> None:
    torch.set_num_threads(1)  # many processes share the host's cores
    from alphagan.config import load_params, parse_params
    from alphagan.dcgan import DcganConfig, train_dcgan
    from alphagan.evaluation import generate, image_grid, quality_scores
    from alphagan.training import load_generator, train

    base = load_params(params_path)
    prepared = Path(base.paths.prepared)
    train_images, val_images = np.load(prepared / "train.npy"), np.load(prepared / "val.npy")
    size, seed, steps = base.data.image_size, entry.get("seed", base.seed), entry["steps"]
    device = torch.device(device_name)
    start = time.perf_counter()
    if entry.get("dcgan"):
        model, _, _ = train_dcgan(train_images, DcganConfig(image_size=size, width=base.train.base_channels), seed, device,
                                  max_steps=steps)
        generator, latent_dim = model.generator.eval(), model.config.latent_dim
    else:
        raw = base.as_dict()
        raw["train"].update({"device": device.type, "precision": "fp32", "epochs": 10**6, "max_steps": steps,
                             "log_every": 10**6, "checkpoint_every": 10**6, **entry.get("overrides", {})})
        params = parse_params(raw)
        checkpoint = Path(scratch) / f"{entry['name']}.pt"
        train(train_images, val_images, params.train, size, seed, checkpoint)
        generator, _, config = load_generator(checkpoint)
        latent_dim = config.latent_dim
    seconds = time.perf_counter() - start
    fake = generate(generator, 1000, latent_dim, seed, 250, device)
    Image.fromarray(image_grid(fake[:64], 8)).save(Path(scratch) / f"{entry['name']}.png")
    scores = quality_scores(val_images, fake, train_images, seed=0, two_sample=True)
    (Path(scratch) / f"{entry['name']}.json").write_text(json.dumps({**entry, "train_seconds": round(seconds, 1), **scores}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="?")
    parser.add_argument("--table", help="print the table of a saved results.json and stop")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default="reports/sweep")
    args = parser.parse_args()
    if args.table:
        print_table(json.loads(Path(args.table).read_text()))
        return
    entries = json.loads(Path(args.configs).read_text())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        context = multiprocessing.get_context("spawn")
        processes = [context.Process(target=run_entry, args=(entry, args.params, scratch, args.device)) for entry in entries]
        for process in processes:
            process.start()
        for process in processes:
            process.join()
        rows = [json.loads((Path(scratch) / f"{e['name']}.json").read_text()) for e in entries
                if (Path(scratch) / f"{e['name']}.json").exists()]
        grids = [(e["name"], Image.open(Path(scratch) / f"{e['name']}.png")) for e in entries if (Path(scratch) / f"{e['name']}.png").exists()]
        width, height = grids[0][1].size
        sheet = Image.new("RGB", (4 * width, ((len(grids) + 3) // 4) * (height + 16)), "white")
        for index, (name, grid) in enumerate(grids):
            x, y = (index % 4) * width, (index // 4) * (height + 16)
            sheet.paste(grid, (x, y + 16))
            ImageDraw.Draw(sheet).text((x + 4, y + 2), name, fill="black")
        sheet.save(out / "sheet.png")
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    print_table(rows)


def band_ratio(row: dict) -> float:
    """swd_ratio; for runs saved before it was band by band (they have a plain ``swd``),
    the mean over bands of mean/floor (the per-draw version differs by a little)."""
    if "swd" not in row:
        return row["swd_ratio"]
    bands = [k for k in row if k.startswith("swd_") and k[4:].isdigit()]
    return sum(row[b] / row[b + "_floor"] for b in bands) / len(bands)


def print_table(rows: list[dict]) -> None:
    for row in rows:
        row["swd_ratio"] = band_ratio(row)
        row.setdefault("swd_ratio_floor", 1.0)
    print(f"\n{len(rows)} entries; mean of {rows[0]['draws']} draws of {rows[0]['count']} images a side\n")
    # train_seconds: each entry's own wall time, in the layout it ran in (processes per core).
    print(f"| {'entry':<22} | {'steps':>5} | {'seed':>4} | {'train s':>7} | " + " | ".join(f"{k:>9}" for k in KEYS) + " |")
    for row in rows:
        print(f"| {row['name']:<22} | {row['steps']:>5} | {row.get('seed', 0):>4} | {row.get('train_seconds', float('nan')):7.0f} | "
              + " | ".join(f"{row.get(k, float('nan')):9.4f}" for k in KEYS) + " |")
    print(f"| {'real floor':<22} | {'':>5} | {'':>4} | {'':>7} | "
          + " | ".join(f"{rows[0].get(k + '_floor', float('nan')):9.4f}" for k in KEYS) + " |")


if __name__ == "__main__":
    main()
