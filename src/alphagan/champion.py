"""Which registered model version is the good one: the rule behind the ``champion`` alias.

After evaluate, the registered generator version of the evaluated run is a *candidate*;
the version holding the MLflow alias ``champion`` (if any) is the *champion*. Both are
described by a :class:`Standing` read from their version tags (written by
:func:`version_tags`), and :func:`decide` says whether the alias moves. Pure functions:
no MLflow here (``alphagan.tracking`` reads and writes the registry).

The rule, in order (the first that applies decides):

1. No champion (none yet, or its version was deleted: MLflow drops the alias with the
   version) -> the candidate takes the alias, whatever its numbers (something to sample
   from beats nothing; a small-sample win says so in the reason).
2. The candidate *is* the champion (evaluate ran again on the same run) -> it stays;
   its tags are refreshed with the new numbers.
3. The champion has no validated-metric tags (the alias was set by hand, or by code
   that predates these tags) -> it stays: a person chose it, numbers cannot overrule that.
4. Different data (``data_sha256`` of the two runs differ, or either is unknown) -> the
   champion stays: scores on different data, or different val splits, do not compare.
   Move the alias by hand when changing data on purpose (the README shows the one line).
   Likewise when one run was scored against its val split and the other against its
   training set (``eval/reference_train``, ``evaluate.reference``).
5. Small samples (``eval/small_sample``: fewer than ``MIN_RELIABLE_COUNT`` images a side):
   a small-sample candidate never displaces a reliable champion; a reliable candidate
   always displaces a small-sample champion (that champion's score was noise). Two small
   samples compare by numbers, as in rule 6, and the reason says they are noisy.
6. Numbers: the candidate must be no worse on every validated metric and strictly better
   on at least one (lower is better for all of ``VALIDATED_METRICS``). A tie keeps the
   champion: moving needs evidence. NaN counts as worst. The spreads over draws are
   shown in the reason but do not gate the move: a 1-sigma gate on 3 draws would keep
   stale champions for ever, and the spread is printed so a reader sees a close call.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

#: The MLflow alias of the good version (generator and its encoder of the same run).
CHAMPION_ALIAS = "champion"
#: Version tags are the evaluate metric names, namespaced like the run's metrics.
TAG_PREFIX = "eval/"
DATA_TAG = "data_sha256"


@dataclass(frozen=True)
class Standing:
    """A model version as the rule sees it."""

    version: str
    metrics: Mapping[str, float] = field(default_factory=dict)  # validated metric -> value (lower is better)
    spreads: Mapping[str, float] = field(default_factory=dict)  # validated metric -> std over draws
    small_sample: bool = False
    data_sha256: str = ""
    reference_train: bool | None = None  # scored against the training set (None: not recorded)


@dataclass(frozen=True)
class Decision:
    move: bool
    reason: str


def version_tags(metrics: Mapping[str, float], validated: Sequence[str], data_sha256: str) -> dict[str, str]:
    """The tags a candidate version gets: each validated metric with its floor and spreads,
    the sample count, the small-sample flag and the data hash. ``metrics`` uses evaluate's
    names (``eval/swd_ratio``, ...)."""
    names = [f"{m}{suffix}" for m in validated for suffix in ("", "_std", "_floor", "_floor_std")]
    tags = {f"{TAG_PREFIX}{name}": _text(metrics[f"{TAG_PREFIX}{name}"])
            for name in [*names, "count", "small_sample", "reference_train"] if f"{TAG_PREFIX}{name}" in metrics}
    tags[DATA_TAG] = data_sha256
    return tags


def standing_from_tags(version: str, tags: Mapping[str, str], validated: Sequence[str]) -> Standing:
    """Read a version's tags back (missing or unreadable numbers are simply absent)."""
    def number(key: str) -> float | None:
        try:
            return float(tags[key])
        except (KeyError, ValueError):
            return None

    metrics = {m: v for m in validated if (v := number(f"{TAG_PREFIX}{m}")) is not None}
    spreads = {m: v for m in validated if (v := number(f"{TAG_PREFIX}{m}_std")) is not None}
    reference_train = number(f"{TAG_PREFIX}reference_train")
    return Standing(version, metrics, spreads, bool(number(f"{TAG_PREFIX}small_sample")), tags.get(DATA_TAG, ""),
                    None if reference_train is None else bool(reference_train))


def decide(candidate: Standing, champion: Standing | None, validated: Sequence[str]) -> Decision:
    """Whether ``candidate`` takes the champion alias from ``champion`` (module docstring: the rule)."""
    if champion is None:
        note = " (a small sample: its score is noise; a reliable run will displace it)" if candidate.small_sample else ""
        return Decision(True, f"no champion yet{note}")
    if candidate.version == champion.version:
        return Decision(False, f"version {candidate.version} is already the champion (tags updated)")
    if not all(m in champion.metrics for m in validated):
        return Decision(False, f"champion version {champion.version} has no {'/'.join(validated)} tags "
                               "(set by hand?): it stays")
    if not candidate.data_sha256 or candidate.data_sha256 != champion.data_sha256:
        return Decision(False, f"champion version {champion.version} was trained on other data "
                               f"(data_sha256 {champion.data_sha256[:12] or 'unknown'} vs "
                               f"{candidate.data_sha256[:12] or 'unknown'}): scores do not compare")
    if None not in (candidate.reference_train, champion.reference_train) and candidate.reference_train != champion.reference_train:
        against = {True: "the training set", False: "the val split"}
        return Decision(False, f"champion version {champion.version} was scored against {against[champion.reference_train]}, "
                               f"this run against {against[candidate.reference_train]}: scores do not compare")
    scores = _compare_text(candidate, champion, validated)
    if candidate.small_sample and not champion.small_sample:
        return Decision(False, f"a small-sample score cannot displace champion version {champion.version} ({scores})")
    if champion.small_sample and not candidate.small_sample:
        return Decision(True, f"champion version {champion.version} had only a small-sample score ({scores})")
    noisy = "; both small samples: noisy" if candidate.small_sample else ""
    new = [_worst_if_nan(candidate.metrics.get(m)) for m in validated]
    old = [_worst_if_nan(champion.metrics[m]) for m in validated]
    if all(a <= b for a, b in zip(new, old)) and any(a < b for a, b in zip(new, old)):
        return Decision(True, f"beats version {champion.version}: {scores}{noisy}")
    verdict = "ties" if new == old else "does not beat"
    return Decision(False, f"{verdict} version {champion.version}: {scores}{noisy}")


def _worst_if_nan(value: float | None) -> float:
    return math.inf if value is None or math.isnan(value) else value


def _compare_text(candidate: Standing, champion: Standing, validated: Sequence[str]) -> str:
    def shown(standing: Standing, metric: str) -> str:
        value = standing.metrics.get(metric, math.nan)
        spread = standing.spreads.get(metric)
        return f"{value:.4g}" + (f" ±{spread:.2g}" if spread is not None else "")

    return ", ".join(f"{m} {shown(candidate, m)} vs {shown(champion, m)}" for m in validated)


def _text(value: float) -> str:
    number = float(value)
    return str(int(number)) if number.is_integer() else repr(number)
