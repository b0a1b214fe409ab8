"""evaluate: score the trained generator and log the numbers into the training's MLflow run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from PIL import Image

from alphagan import atomic
from alphagan.config import Params
from alphagan.errors import AlphaGanError
from alphagan.evaluation import VALIDATED_METRICS, evaluate_model
from alphagan.redaction import redact
from alphagan.training import load_generator, select_device
from pipelines._common import load_prepared, stage_main
from pipelines.train import train_outputs


def run(params: Params) -> None:
    from alphagan import tracking

    tracking.check_server()  # a team server that is down: one line before minutes of scoring
    trained = train_outputs(params)
    reports = Path(params.paths.reports) / "evaluate"
    reports.mkdir(parents=True, exist_ok=True)
    atomic.clean_leftovers(reports)
    train_images, val_images = load_prepared(params)
    try:
        run_info = json.loads(trained["run"].read_text())
    except FileNotFoundError as exc:
        raise AlphaGanError(f"{exc.filename} is missing; run the train stage first (dvc repro train)") from None
    decoder, encoder, config = load_generator(trained["checkpoint"])
    device = select_device(params.train.device)
    metrics, pictures = evaluate_model(
        decoder, encoder, config.latent_dim, train_images, val_images, params.evaluate.num_samples,
        params.evaluate.batch_size, params.seed, params.evaluate.inception_weights, params.evaluate.nearest_neighbours, device,
        draws=params.evaluate.draws, reference=params.evaluate.reference)
    for name, picture in pictures.items():  # atomic: a killed run never leaves a torn picture
        atomic.save_with(reports / f"{name}.png", lambda temporary, p=picture: Image.fromarray(p).save(temporary, format="PNG"))
    note, warnings = metrics.pop("eval/inception_note"), metrics.pop("eval/warnings")
    reference_note = metrics.pop("eval/reference_note")
    reference = "train" if metrics["eval/reference_train"] else "val"
    if reference == "train":
        print(f"evaluate: scored against the training set: {reference_note}", file=sys.stderr)
    for warning in filter(None, warnings.split("; ")):
        print(f"evaluate: warning: {warning}", file=sys.stderr)
    numbers = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in metrics.items()}
    # Flat names without the namespace: `dvc exp show` columns stay short.
    atomic.write_text(reports / "metrics.json", json.dumps(
        {**{k.removeprefix("eval/"): v for k, v in numbers.items()}, "validated_metrics": list(VALIDATED_METRICS),
         "reference": reference, "reference_note": reference_note,
         "warnings": warnings, "inception_note": note, "run_id": run_info["run_id"]}, indent=2))
    with tracking.lost_server_is_one_line():  # the server went away while scoring: one line
        log_evaluation(tracking, params, run_info["run_id"], reports, trained, numbers, pictures, note, warnings,
                       reference, reference_note)


def log_evaluation(tracking, params: Params, run_id: str, reports: Path, trained: dict[str, Path], numbers: dict,
                   pictures: dict, note: str, warnings: str, reference: str, reference_note: str) -> None:
    """The scores, pictures and description into the training's MLflow run; the champion alias."""
    tracking.use_experiment(params.train.experiment_name)
    tracking.log_metrics({k: float(v) for k, v in numbers.items()}, run_id=run_id)
    tracking.set_tags({"eval_inception_note": note, "eval_warnings": warnings, "eval_reference": reference,
                       "eval_reference_note": reference_note}, run_id=run_id)
    for name in pictures:
        tracking.log_artifact(reports / f"{name}.png", "evaluate", run_id=run_id)
    tracking.log_artifact(reports / "metrics.json", "evaluate", run_id=run_id)
    # The run page opens on its description: the train stage's final grids, then these.
    train_part = tracking.get_description(run_id).split("\n### Evaluation", 1)[0].rstrip()
    evaluation = tracking.description(
        run_id, "Evaluation", {"Val images over their reconstructions": "evaluate/reconstructions.png",
                               "Closest training face to each sample": "evaluate/nearest_neighbours.png",
                               "Distance to the nearest training image": "evaluate/memorisation.png"},
        [f"swd_ratio {numbers['eval/swd_ratio']:.3f} (real data: 1.0) against the {reference} images, memorisation ratio "
         f"{numbers['eval/memorisation_ratio']:.2f}, PSNR {numbers['eval/psnr']:.2f} dB; {numbers['eval/count']} images a side."])
    tracking.set_description(run_id, f"{train_part}\n\n{evaluation}" if train_part else evaluation)
    tracking.link_dvc_experiments(trained["metrics"])
    bands = {k[9:]: v for k, v in numbers.items() if k.startswith("eval/swd_") and k[9:].isdigit()}
    gap = (f", posterior samples swd_ratio {numbers['eval/posterior_swd_ratio']:.3f} (prior gap {numbers['eval/prior_gap']:.2f}x)"
           if "eval/prior_gap" in numbers else "")
    told_apart = (f", a classifier tells samples from training images {numbers['eval/c2st_accuracy']:.1%} of the time "
                  f"(real images: {numbers['eval/c2st_accuracy_floor']:.1%}; {numbers['eval/c2st_count']} a side)"
                  if "eval/c2st_accuracy" in numbers else "")
    print(f"evaluate: swd_ratio {numbers['eval/swd_ratio']:.3f} (real data: 1.0; bands {'/'.join(bands)} px: "
          f"{'/'.join(f'{v:.1f}' for v in bands.values())}) (fd_random {numbers['eval/fd_random']:.3f}, floor {numbers['eval/fd_random_floor']:.3f}; "
          f"{numbers['eval/count']} images a side, against {reference}), memorisation ratio {numbers['eval/memorisation_ratio']:.2f} "
          f"(copies {numbers['eval/copy_fraction']:.1%}), variety of backgrounds {numbers['eval/background_variety_ratio']:.2f} "
          f"and positions {numbers['eval/position_variety_ratio']:.2f} of the training set's, "
          f"PSNR {numbers['eval/psnr']:.2f} dB{gap}{told_apart}; {note}")
    print(champion_line(tracking, run_id, params.train.registered_model_name, numbers))


def champion_line(tracking, run_id: str, name: str, numbers: dict) -> str:
    """Tag the run's registered versions with the validated metrics, move ``@champion`` when
    they beat it (rule: :mod:`alphagan.champion`), and say what happened in one line."""
    from alphagan.champion import CHAMPION_ALIAS

    try:
        decision, version, held = tracking.update_champion(run_id, name, numbers, VALIDATED_METRICS)
    except tracking.mlflow.exceptions.MlflowException as exc:  # e.g. a store without a model registry
        return redact(f"evaluate: {CHAMPION_ALIAS} unchanged: the model registry refused: {str(exc).strip().splitlines()[0]}")
    if decision is None:
        return f"evaluate: {CHAMPION_ALIAS} unchanged: {version}"
    if decision.move:
        return f"evaluate: {CHAMPION_ALIAS} moved to {name} version {version}: {decision.reason}"
    return f"evaluate: {CHAMPION_ALIAS} stays {name} version {held} (not version {version}): {decision.reason}" \
        if held != version else f"evaluate: {CHAMPION_ALIAS} stays {name} version {held}: {decision.reason}"


def main(argv=None) -> int:
    return stage_main("evaluate", run, argv)


if __name__ == "__main__":
    sys.exit(main())
