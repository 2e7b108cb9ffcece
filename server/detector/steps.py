"""From per-window model outputs to calibrated per-step scores (NumPy only).

The server batches the windows of many requests (`WindowPlan` in, `WindowOutput`
out) and a `ScoreAssembler` turns each plan's window results into per-step
scores, released as soon as no later window covers them. A window's result
never depends on its batch, and nothing here needs torch.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from stad.core.detector_config import DetectorConfig
from stad.core.events import EventFilter
from stad.core.metrics import best_f1
from stad.core.types import BoolArray, FloatArray, IntArray

# Floor of the per-channel error scales, so a perfectly predicted channel does not divide by 0.
MIN_ERROR_SCALE = 1e-6
# Floor of the reference scale, in raw units, so that a perfectly predicted
# (e.g. constant) training series does not make every later score infinite.
MIN_REFERENCE = 1e-6
BULK_QUANTILE = 0.75  # the upper quantile `tail_extrapolation` extrapolates from
BOUND_MARGIN = 1e-5  # relative, above the highest training score the flag-rate bound leaves unflagged


@dataclass
class WindowPlan:
    """Windows of one series, ready for `Detector.score_windows`."""

    windows: npt.NDArray[np.float32]  # (N, L, C) scaled, NaN kept
    starts: IntArray  # (N,) first step of each window
    missing: BoolArray  # (T, C)
    out_of_range: BoolArray | None = None  # (T, C) values beyond the training range (drift)
    excess: FloatArray | None = None  # (T,) the furthest channel's excess beyond it, in training spans

    @property
    def n_steps(self) -> int:
        return int(self.missing.shape[0])

    def drift(self, steps: slice) -> BoolArray:
        """(n, C) out-of-range flags of the steps (all False when the plan has none)."""
        if self.out_of_range is None:
            return np.zeros(self.missing[steps].shape, dtype=bool)
        return self.out_of_range[steps]

    def drift_excess(self, steps: slice) -> FloatArray:
        """(n,) each step's largest excess beyond the training range, in training spans (0: none)."""
        if self.excess is None:
            return np.zeros(self.missing[steps].shape[0])
        return self.excess[steps]


@dataclass
class WindowOutput:
    """Per-window results of `Detector.score_windows`; slice with `take`, join with `concatenate`."""

    errors: npt.NDArray[np.float32]  # (N, L, C) combined errors (`StepScorer.combine`), 0 where missing
    expected: FloatArray  # (N, L, C) predictions in the data's own units
    probability: npt.NDArray[np.float32] | None = None  # (N, L) head output, if fine-tuned

    def __len__(self) -> int:
        return int(self.errors.shape[0])

    def take(self, index: slice | IntArray) -> WindowOutput:
        prob = None if self.probability is None else self.probability[index]
        return WindowOutput(self.errors[index], self.expected[index], prob)

    @classmethod
    def concatenate(cls, parts: Sequence[WindowOutput]) -> WindowOutput:
        if not parts:
            raise ValueError("nothing to concatenate")
        probs = [p.probability for p in parts]
        prob = None
        if all(p is not None for p in probs):
            prob = np.concatenate([p for p in probs if p is not None])
        return cls(
            np.concatenate([p.errors for p in parts]),
            np.concatenate([p.expected for p in parts]),
            prob,
        )


_STEP_ARRAYS = (
    "score",
    "raw_score",
    "is_anomaly",
    "severity",
    "contributions",
    "expected",
    "lower",
    "upper",
    "out_of_range_channels",
)


@dataclass
class ScoreOutput:
    score: FloatArray  # (T,) calibrated, higher = more anomalous, same scale for every model
    raw_score: FloatArray  # (T,) model units
    is_anomaly: BoolArray  # (T,) the event state of score >= threshold (core.events), or drift
    severity: FloatArray  # (T,) 0..100
    threshold: float  # on the score scale
    contributions: FloatArray  # (T, C) rows sum to 1 (0 where nothing observed)
    expected: FloatArray  # (T, C) in the data's own units
    channels: tuple[str, ...] = field(default_factory=tuple)
    start_step: int = 0  # the series step of row 0 (an assembler's chunks start later)
    # Set by `flag` (the assembler's last step); empty before it.
    lower: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))  # (T, C) expected - band
    upper: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))  # (T, C) expected + band
    out_of_range_channels: BoolArray = field(default_factory=lambda: np.zeros((0, 0), dtype=bool))  # (T, C)

    @property
    def stop_step(self) -> int:
        return self.start_step + int(self.score.shape[0])

    @property
    def out_of_range(self) -> BoolArray:
        """(T,) steps with at least one channel beyond the training range (drift)."""
        return np.asarray(self.out_of_range_channels.any(axis=1), dtype=bool)

    @classmethod
    def concatenate(cls, parts: Sequence[ScoreOutput]) -> ScoreOutput:
        """Join consecutive chunks of one series (as a `ScoreAssembler` releases them)."""
        if not parts:
            raise ValueError("nothing to concatenate")
        for before, after in itertools.pairwise(parts):
            if after.start_step != before.stop_step:
                raise ValueError(
                    f"chunk at step {after.start_step} does not follow one ending at {before.stop_step}"
                )
        first = parts[0]
        if len(parts) == 1:
            return first
        arrays = {name: np.concatenate([getattr(p, name) for p in parts]) for name in _STEP_ARRAYS}
        return cls(**arrays, threshold=first.threshold, channels=first.channels, start_step=first.start_step)


class StepMeans:
    """Per-step means of window results, accumulated batch by batch in plan order."""

    def __init__(self, plan: WindowPlan, window: int) -> None:
        self.plan = plan
        self.window = window
        self.sums: dict[str, FloatArray] = {}
        self.count = np.zeros(plan.n_steps)
        self.added = 0  # windows of the plan folded in so far

    def add(self, **arrays: npt.NDArray[Any] | None) -> None:
        """Fold in the next windows' arrays, each (n, L, ...); None entries are skipped."""
        present = [a for a in arrays.values() if a is not None]
        n = present[0].shape[0] if present else 0
        starts = self.plan.starts[self.added : self.added + n]
        if starts.shape[0] != n:
            raise ValueError(f"more window results than the plan's {self.plan.starts.shape[0]}")
        L = self.window
        for name, array in arrays.items():
            if array is None:
                continue
            total = self.sums.setdefault(name, np.zeros((self.plan.n_steps, *array.shape[2:])))
            for i, s in enumerate(starts):
                total[s : s + L] += array[i]
        for s in starts:
            self.count[s : s + L] += 1
        self.added += n

    @property
    def final_steps(self) -> int:
        """Steps no later window covers: their means will not change any more."""
        if self.added == self.plan.starts.shape[0]:
            return self.plan.n_steps
        return int(self.plan.starts[self.added])

    def mean_or_none(self, name: str, steps: slice = slice(None)) -> FloatArray | None:
        if name not in self.sums:
            return None
        total = self.sums[name][steps]
        count = np.maximum(self.count[steps], 1)
        mean: FloatArray = total / count.reshape(-1, *[1] * (total.ndim - 1))
        return mean

    def mean(self, name: str, steps: slice = slice(None)) -> FloatArray:
        mean = self.mean_or_none(name, steps)
        if mean is None:
            raise ValueError(f"no window results named {name!r}")
        return mean


class TrailingMean:
    """Means over a trailing window of `steps` steps (shorter at the start), fed piece
    by piece. Each full window is summed oldest first, so a step's mean depends only on
    the `steps` values it covers, float for float: not on the pieces, nor on where the
    series given to scoring started (the InfluxDB task and the chunking client rely on it)."""

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self._history = np.zeros(0)  # the last steps - 1 raw values

    def add(self, raw: FloatArray) -> FloatArray:
        """The trailing means of the next raw.shape[0] steps."""
        if self.steps <= 1:
            return raw.copy()
        joined = np.concatenate((self._history, raw))
        n, before = raw.shape[0], self._history.shape[0]
        count = np.minimum(np.arange(before + 1, before + n + 1), self.steps).astype(np.float64)
        total = np.zeros(n)
        for lag in range(self.steps - 1, -1, -1):  # oldest first: a fixed order per window
            stop = before + n - lag
            start = max(before - lag, 0)
            if stop > start:
                total[n - (stop - start) :] += joined[start:stop]
        out: FloatArray = total / count
        self._history = joined[max(0, joined.shape[0] - (self.steps - 1)) :]
        return out


def smooth_trailing(raw: FloatArray, steps: int) -> FloatArray:
    """Mean over a trailing window of `steps` steps (shorter at the start)."""
    return TrailingMean(steps).add(raw)


def reference_scale(normal_raw: FloatArray, quantile: float) -> float:
    """The `quantile` of held-out normal raw scores, at least its normal-tail extrapolation
    from their bulk (`tail_extrapolation`), floored at MIN_REFERENCE."""
    if normal_raw.size == 0:
        raise ValueError("no normal scores to calibrate on")
    empirical = float(np.quantile(normal_raw, quantile))
    return max(empirical, tail_extrapolation(normal_raw, quantile), MIN_REFERENCE)


def tail_extrapolation(normal_raw: FloatArray, quantile: float) -> float:
    """The `quantile` of a normal distribution through the median and the BULK_QUANTILE
    of the scores: median + (q_bulk - median) * z(quantile) / z(BULK_QUANTILE).

    A few hundred held-out steps hold few independent values once scores are averaged
    over a range, so their empirical 0.999 quantile is about their maximum and new normal
    data exceeds it; the bulk is estimated well from them. Heavier tails than normal
    keep the empirical quantile (the larger of the two is used).
    """
    if quantile <= BULK_QUANTILE:
        return float(np.quantile(normal_raw, quantile))
    median, bulk = np.quantile(normal_raw, [0.5, BULK_QUANTILE])
    ratio = statistics.NormalDist().inv_cdf(quantile) / statistics.NormalDist().inv_cdf(BULK_QUANTILE)
    return float(median + (bulk - median) * ratio)


def severity(score: FloatArray) -> FloatArray:
    """100 * (1 - 2**-score): 0..100, monotone in the calibrated score; 50 at score 1, 75 at 2."""
    out: FloatArray = 100.0 * (1.0 - np.exp2(-np.maximum(score, 0.0)))
    return out


def best_f1_threshold(score: FloatArray, labels: BoolArray) -> tuple[float, float]:
    """(threshold, F1) of the best point-wise F1 cut of `score >= threshold`.

    The threshold lies midway between the best cut's score and the next lower
    score, so it generalises a little past the data.
    """
    if score.shape != labels.shape:
        raise ValueError(f"score shape {score.shape} != labels shape {labels.shape}")
    if not labels.any():
        raise ValueError("labels contain no anomalies; cannot choose a best-F1 threshold")
    best = best_f1(score, labels)
    lower = score[score < best.threshold]
    threshold = 0.5 * (best.threshold + float(lower.max())) if lower.size else best.threshold
    return float(threshold), best.f1


def step_raw(
    missing: BoolArray, errors: FloatArray, probability: FloatArray | None, scored: BoolArray | None = None
) -> FloatArray:
    """Per-step raw score before smoothing: the mean error over the observed `scored`
    channels (all when None; 0 if none is observed), or the supervised head's anomaly
    probability when present."""
    counted = ~missing if scored is None else ~missing & scored
    n_obs = counted.sum(axis=1)
    if probability is None:
        step: FloatArray = np.where(counted, errors, 0.0).sum(axis=1) / np.maximum(n_obs, 1)
        return step
    return np.where(n_obs > 0, probability, 0.0)


def range_max(raw: FloatArray, span: int) -> FloatArray:
    """Each step's maximum over the centred range of `span` steps around it (cut at the ends).

    Range-shaped anomalies get range-shaped scores: every step of an anomalous range
    scores as high as the range's sharpest step within span / 2 of it.
    """
    before, after = span // 2, span - 1 - span // 2
    if span <= 1 or raw.size == 0:
        return raw.copy()
    padded = np.concatenate([np.full(before, -np.inf), raw, np.full(after, -np.inf)])
    out: FloatArray = np.lib.stride_tricks.sliding_window_view(padded, span).max(axis=1)
    return out


def range_mean(raw: FloatArray, span: int) -> FloatArray:
    """Each step's mean over the centred range of `span` steps around it (cut at the ends).

    Summed in a fixed order per step, so a step's mean depends only on the values it
    covers, float for float: not on where the array given starts (chunked scoring relies on it).
    """
    before, after = span // 2, span - 1 - span // 2
    if span <= 1 or raw.size == 0:
        return raw.copy()
    n = raw.shape[0]
    padded = np.concatenate([np.zeros(before), raw, np.zeros(after)])
    present = np.concatenate([np.zeros(before), np.ones(n), np.zeros(after)])
    total, count = np.zeros(n), np.zeros(n)
    for k in range(span):
        total += padded[k : k + n]
        count += present[k : k + n]
    out: FloatArray = total / count
    return out


@dataclass(frozen=True)
class StepScorer:
    """A fitted detector's scoring state: from window errors to calibrated step scores."""

    config: DetectorConfig
    channels: tuple[str, ...]
    error_scale: FloatArray  # (2, C): the temporal and whole-channel families' mean errors
    residual_scale: float  # calibration mean residual / calibration mean prediction error
    reference: float  # raw score that maps to score 1.0
    threshold: float  # on the score scale
    band: FloatArray | None = None  # (C,) half-width of the expected-value band, data units
    scored: BoolArray | None = None  # (C,) channels counted in the step score; None = all
    span: int = 1  # steps of the centred range each step's score is the maximum over
    mean_span: int = 1  # steps of the centred mean taken before that maximum

    @property
    def hold_back(self) -> int:
        """Steps after t that step t's score needs (the centred ranges' second halves)."""
        return self.span - 1 - self.span // 2 + self.mean_span - 1 - self.mean_span // 2

    @property
    def look_back(self) -> int:
        """Smoothed raw scores before t that step t's score needs (the centred ranges' first halves)."""
        return self.span // 2 + self.mean_span // 2

    def combine(
        self, temporal: npt.NDArray[Any], spatial: npt.NDArray[Any], residual: npt.NDArray[Any] | None
    ) -> FloatArray:
        """Each point's error from its families' squared errors (scaled units).

        With w = spatial_weight (0 for one channel) and r = residual_weight:
        e = (1 - w) * temporal / error_scale[0] + w * spatial / error_scale[1], then
        e = (1 - r) * e + r * residual / residual_scale (residual None: e alone).
        """
        scoring = self.config.scoring
        w = scoring.spatial_weight if len(self.channels) > 1 else 0.0
        combined: FloatArray = (1 - w) * temporal / self.error_scale[0] + (w * spatial / self.error_scale[1])
        r = scoring.residual_weight
        if residual is not None and r > 0:
            combined = (1 - r) * combined + r * residual / self.residual_scale
        return combined

    def step_scores(self, means: StepMeans, steps: slice, smoothing: TrailingMean) -> FloatArray:
        """Smoothed raw scores of a range of final steps; `smoothing` must have seen the steps before."""
        missing = means.plan.missing[steps]
        err = means.mean("errors", steps)
        return smoothing.add(step_raw(missing, err, means.mean_or_none("probability", steps), self.scored))

    def score_steps(
        self, means: StepMeans, steps: slice, own: FloatArray, ranged: FloatArray, threshold: float
    ) -> ScoreOutput:
        """Scores of a range of steps from their `own` raw scores (smoothed, then averaged
        over the centred `mean_span`) and the `ranged` ones (their maximum over the
        centred `span`).

        raw_score = own and score = ranged / reference, so that a labelled range scores
        as a range; a step is flagged by its own score (own / reference >= threshold, before
        the event filter), so flags do not spread half a range past an anomaly, and a step
        flagged so scores at least the threshold. A step's contributions are its scored channels' shares
        of its error.
        """
        missing = means.plan.missing[steps]
        err = means.mean("errors", steps)
        counted = ~missing if self.scored is None else ~missing & self.scored
        err[~counted] = 0.0
        score = ranged / self.reference
        totals = err.sum(axis=1, keepdims=True)
        uniform = counted / np.maximum(counted.sum(axis=1, keepdims=True), 1)
        contributions = np.where(totals > 0, err / np.where(totals > 0, totals, 1.0), uniform)
        return ScoreOutput(
            score=score,
            raw_score=own,
            is_anomaly=own / self.reference >= threshold,
            severity=severity(score),
            threshold=threshold,
            contributions=contributions,
            expected=means.mean("expected", steps),
            channels=self.channels,
            start_step=steps.start,
        )

    def flag(self, chunk: ScoreOutput, plan: WindowPlan, events: EventFilter) -> ScoreOutput:
        """The chunk with drift, events and the band; `events` must have seen the steps before.

        A step with a channel out of the training range scores at least
        threshold * (1 + log1p(excess)), its largest excess in training spans, and is
        flagged whatever the event filter says: drift is never normal, and the further
        out, the higher it scores. Other steps are flagged by the event state
        (`core.events`) of their own scores' flags (`score_steps`).
        """
        steps = slice(chunk.start_step, chunk.stop_step)
        out_of_range = plan.drift(steps)
        drifted = out_of_range.any(axis=1)
        floor = chunk.threshold * (1.0 + np.log1p(plan.drift_excess(steps)))
        score = np.where(drifted, np.maximum(chunk.score, floor), chunk.score)
        band = np.zeros(len(self.channels)) if self.band is None else self.band
        return dataclasses.replace(
            chunk,
            score=score,
            severity=severity(score),
            is_anomaly=events.add(chunk.is_anomaly | drifted) | drifted,
            lower=chunk.expected - band,
            upper=chunk.expected + band,
            out_of_range_channels=out_of_range,
        )

    def assembler(self, plan: WindowPlan, *, threshold: float | None = None) -> ScoreAssembler:
        """An incremental `assemble`: window results in, final per-step chunks out."""
        thr = self.threshold if threshold is None else float(threshold)
        if not np.isfinite(thr):
            raise ValueError(f"threshold must be finite, got {threshold}")
        return ScoreAssembler(self, plan, thr)

    def assemble(
        self, plan: WindowPlan, output: WindowOutput, *, threshold: float | None = None
    ) -> ScoreOutput:
        """Turn the window results of one plan into per-step scores."""
        assembler = self.assembler(plan, threshold=threshold)
        if len(output) != plan.starts.shape[0]:
            raise ValueError(f"output has {len(output)} windows, the plan {plan.starts.shape[0]}")
        result = assembler.add(output)
        assert result is not None  # every window is in, so every step is final
        return result


class ScoreAssembler:
    """Per-step scores of one plan, released in order as soon as they are final.

    Feed `add` the plan's window results in plan order, in pieces of any size. A
    step's smoothed raw score depends only on the windows starting at or before it
    (smoothing and the event filter look back only), so once the windows before k are
    in, the raw scores before starts[k] are final; its released score, the maximum
    over a centred range of `span` steps, also needs the `hold_back` raw scores after
    it. The last window releases the rest. The chunks concatenate to
    `StepScorer.assemble`'s result.
    """

    def __init__(self, scorer: StepScorer, plan: WindowPlan, threshold: float) -> None:
        self._scorer = scorer
        self._plan = plan
        self._threshold = threshold
        self._window = scorer.config.model.window
        self._means = StepMeans(plan, self._window)
        self._smoothing = TrailingMean(scorer.config.scoring.smoothing)
        self._events = EventFilter(scorer.config.scoring.min_duration, scorer.config.scoring.merge_gap)
        self._raw = np.zeros(plan.n_steps)  # smoothed raw scores, final up to _raw_final
        self._raw_final = 0
        self.released = 0  # steps released so far

    @property
    def done(self) -> bool:
        return self.released == self._plan.n_steps

    def add(self, output: WindowOutput) -> ScoreOutput | None:
        """Fold in the next windows' results; the newly final steps, or None if none."""
        shape = (len(output), self._window, self._plan.missing.shape[1])
        if output.errors.shape != shape or output.expected.shape != shape:
            raise ValueError(
                f"output errors {output.errors.shape} / expected {output.expected.shape} "
                f"are not windows of shape (N, {shape[1]}, {shape[2]})"
            )
        self._means.add(errors=output.errors, expected=output.expected, probability=output.probability)
        final = self._means.final_steps
        if final > self._raw_final:
            new = slice(self._raw_final, final)
            self._raw[new] = self._scorer.step_scores(self._means, new, self._smoothing)
            self._raw_final = final
        n = self._plan.n_steps
        stop = n if final == n else max(self.released, final - self._scorer.hold_back)
        if stop == self.released:
            return None
        scorer = self._scorer
        lo = max(0, self.released - scorer.look_back)
        hi = min(n, stop + scorer.hold_back)
        own = range_mean(self._raw[lo:hi], scorer.mean_span)
        ranged = range_max(own, scorer.span)[self.released - lo : stop - lo]
        own = own[self.released - lo : stop - lo]
        chunk = scorer.score_steps(self._means, slice(self.released, stop), own, ranged, self._threshold)
        self.released = stop
        return self._scorer.flag(chunk, self._plan, self._events)


def calibrate(
    config: DetectorConfig,
    channels: tuple[str, ...],
    means: StepMeans,
    usable: BoolArray,
    anomalous: BoolArray | None,
    *,
    scored: BoolArray | None = None,
    span: int = 1,
    mean_span: int = 1,
) -> tuple[StepScorer, dict[str, Any]]:
    """The scorer fitted on the family errors of a training series (`means` of
    "temporal", "spatial", "residual" and maybe "probability"), and the calibration record.

    Only the `usable` steps (held-out normal data) set the scales. error_scale is
    each family's per-channel mean error over them, at least that over all the normal
    training steps (1 without normalize_channel_errors); residual_scale gives the residuals the prediction
    errors' mean, so residual_weight is a plain mixing weight; reference is the
    threshold_quantile of their own raw scores (smoothed, then averaged over the centred
    `mean_span`: what flags go by), so score 1.0 means the same on every model. Only the
    `scored` channels count in a step's score. Without labels the threshold is
    threshold_factor, raised where needed so that at most max_train_flag_rate of the
    training steps are flagged (events included: `bounded_threshold`); with labels it is the best-F1
    threshold over the whole series.
    """
    scoring = config.scoring
    plan = means.plan
    temporal, spatial = means.mean("temporal"), means.mean("spatial")
    residual = means.mean("residual")
    error_scale = np.ones((2, len(channels)))
    if scoring.normalize_channel_errors:
        normal = np.ones_like(usable) if anomalous is None else ~anomalous
        for row, family in enumerate((temporal, spatial)):
            # The whole normal training series' mean error is a floor: a channel quiet on
            # the calibration steps (a flag that never switched there) must not blow its
            # later errors up a millionfold.
            error_scale[row] = np.maximum(
                np.maximum(
                    _channel_means(family, plan.missing, usable), _channel_means(family, plan.missing, normal)
                ),
                MIN_ERROR_SCALE,
            )
    scorer = StepScorer(
        config,
        channels,
        error_scale,
        residual_scale=1.0,
        reference=1.0,
        threshold=1.0,
        scored=scored,
        span=span,
        mean_span=mean_span,
    )
    observed = ~plan.missing & usable[:, None]
    prediction = scorer.combine(temporal, spatial, None)
    mean_pred = float(prediction[observed].mean()) if observed.any() else 1.0
    mean_res = float(residual[observed].mean()) if observed.any() else 1.0
    scorer = dataclasses.replace(
        scorer, residual_scale=max(mean_res, MIN_ERROR_SCALE) / max(mean_pred, MIN_ERROR_SCALE)
    )
    # Combining is linear, so combining per-step means equals scoring's order.
    err = scorer.combine(temporal, spatial, residual)
    err[plan.missing] = 0.0
    step = step_raw(plan.missing, err, means.mean_or_none("probability"), scored)
    own = range_mean(smooth_trailing(step, scoring.smoothing), mean_span)  # flags go by it (score_steps)
    reference = reference_scale(own[usable], scoring.threshold_quantile)
    score = own / reference
    record: dict[str, Any] = {
        "method": "quantile",
        "quantile": scoring.threshold_quantile,
        "reference": reference,
        "calibration_steps": int(usable.sum()),
    }
    if anomalous is not None and anomalous.any():
        threshold, f1 = best_f1_threshold(score, anomalous)
        record.update({"method": "best_f1", "best_f1": f1})
    else:
        bound = bounded_threshold(score, scoring.max_train_flag_rate, scoring.min_duration, scoring.merge_gap)
        threshold = max(float(scoring.threshold_factor), bound)
        record.update(
            max_train_flag_rate=scoring.max_train_flag_rate,
            raised_by_flag_rate_bound=bound > scoring.threshold_factor,
        )
    normal = np.ones_like(usable) if anomalous is None else ~anomalous
    events = EventFilter(scoring.min_duration, scoring.merge_gap).add(score >= threshold)
    record["train_flag_rate"] = float(events[normal].mean()) if normal.any() else 0.0
    return dataclasses.replace(scorer, reference=reference, threshold=threshold), record


def _channel_means(errors: FloatArray, missing: BoolArray, steps: BoolArray) -> FloatArray:
    """(C,) each channel's mean error over its observed `steps` (0 where none)."""
    observed = ~missing[steps]
    sums = np.where(observed, errors[steps], 0.0).sum(axis=0)
    means: FloatArray = sums / np.maximum(observed.sum(axis=0), 1)
    return means


def bounded_threshold(score: FloatArray, rate: float, min_duration: int = 1, merge_gap: int = 0) -> float:
    """The lowest threshold, just above one of `score`'s values, at which at most `rate` of
    the steps are flagged, counting the flags as scoring reports them: the event state
    (`core.events`, with `min_duration` and `merge_gap`) of score >= threshold. An open
    event holds flags for merge_gap steps after its last raw flag, so bounding the raw
    flags alone would not bound what a user sees."""
    if score.size == 0:
        return 0.0
    allowed = math.floor(rate * score.size)
    if allowed >= score.size:
        return float(score.min())

    def flagged(threshold: float) -> int:
        return int(EventFilter(min_duration, merge_gap).add(score >= threshold).sum())

    # Scoring sums float32 window errors where calibration sums float64 step means: a
    # relative margin keeps a training step tied at the cut below it either way.
    candidates = [float(np.nextafter(v * (1 + BOUND_MARGIN), np.inf)) for v in np.unique(score)]
    # The flag count never grows with the threshold (the event state is monotone in the
    # flags), and above the highest score it is 0: search for the lowest threshold that fits.
    low, high = 0, len(candidates) - 1
    while low < high:
        middle = (low + high) // 2
        if flagged(candidates[middle]) <= allowed:
            high = middle
        else:
            low = middle + 1
    return candidates[low]
