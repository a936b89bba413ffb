"""Predictive early warning: when will a measure cross its threshold, forecast from the run so far.

For each measure of each threshold, the scores the run's earlier checkpoints measured are fitted
against log10 effective compute with a saturating curve: a logistic in log-compute that rises
from the benchmark's floor (its chance score) to a ceiling,

    score(C) = floor + (ceiling - floor) * expit(slope * (log10 C - midpoint)),

by least squares, with a light pseudo-observation that the ceiling is 1 (`ceiling_weight`):
capability keeps rising unless the checkpoints show it levelling off. Measures that fire when
the score falls (`<=`, `<`) are fitted on 1 - score, from 0. The uncertainty comes from a
bootstrap over checkpoints: the curve is refitted on checkpoints drawn with replacement, each
score also redrawn within its recorded interval, and each refit gives the compute at which it
crosses the threshold (never, if it levels off below). The forecast reports the point fit's
crossing and the band's: the *earliest* crossing is where the band's upper edge crosses (the
lower quantile of the refits' crossings), the latest where its lower edge does.

The warning: when the earliest crossing comes before the next cadence step (the effective compute
at which the cadence would next run a comprehensive assessment: the last one's compute times the
policy's factor), the gate should not wait for the cadence. `policy.assessment.plan_assessment`
then escalates to a comprehensive assessment, and the evaluation records a forecast warning.

No forecast (said why, never an exception) with fewer than `min_checkpoints` checkpoints, when
every score is still within noise of the floor (a flat line says nothing about when it will
rise), when the threshold is at the floor or the ceiling, or when the fit fails.

The fit is a grid search over (slope, midpoint) with the ceiling solved exactly at each grid
point (the curve is linear in it), for the data and every bootstrap replicate at once (matrix
products), so it cannot fail to converge or stop in a local minimum; the point fit is then
polished with `scipy.optimize.least_squares`. Deterministic: a fixed seed, so a replayed
evaluation forecasts the same. No I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy.special import expit

from policy.schema import Cadence, Policy

ForecastStatus = Literal["forecast", "crossed", "no_forecast"]


@dataclass(frozen=True)
class ForecastSettings:
    """How the curve is fitted and how wide its band is.

    `band`: the central share of the bootstrap refits the band covers (0.8: the 10th to the 90th
    percentile; the earliest crossing is the 10th percentile of the refits' crossings).
    `max_slope`: the steepest rise the curve may take, per decade of compute (8: from 12% to 88% of
    the way up in half a decade). A rise steeper than checkpoints can resolve is caught when it is
    measured (early warning escalates), not forecast.
    `noise_sd`: the latest two scores must stand this many standard errors (of their mean) above the
    floor, and at least `noise_floor`, before there is a rise to extrapolate.
    `ceiling_weight`: the weight of a pseudo-observation that the curve levels off at 1 (a penalty
    `ceiling_weight * (1 - ceiling)**2` on the sum of squares): capability keeps rising unless the
    checkpoints show it levelling off. With three or four checkpoints the ceiling is otherwise
    anyone's guess, and a guess that it stops just short of the threshold is the unsafe one.
    """

    band: float = 0.8
    resamples: int = 300
    min_checkpoints: int = 3
    min_slope: float = 0.1
    max_slope: float = 8.0
    noise_floor: float = 0.03
    noise_sd: float = 2.5
    ceiling_weight: float = 0.001
    default_se: float = 0.02  # a score recorded without an interval
    horizon_decades: float = 6.0  # midpoints searched up to this far beyond the latest checkpoint
    seed: int = 0


DEFAULT_SETTINGS = ForecastSettings()


@dataclass(frozen=True)
class Observation:
    """One checkpoint's measured value of one (benchmark, metric)."""

    step: int
    effective_compute: float
    value: float
    ci_low: float | None = None
    ci_high: float | None = None


@dataclass(frozen=True)
class CurveForecast:
    """The fitted curve and where it crosses. Crossings are effective compute in FLOP; None where
    there is no forecast or the curve levels off before the threshold. The point fit: `slope` (per
    decade), `midpoint` (log10 FLOP) and `ceiling` (the score it levels off at)."""

    ok: bool
    reason: str
    checkpoints: int
    floor: float = 0.0
    ascending: bool = True
    slope: float | None = None
    midpoint: float | None = None
    ceiling: float | None = None
    crossing: float | None = None
    earliest: float | None = None
    latest: float | None = None
    band: float = DEFAULT_SETTINGS.band
    # Bootstrap refits, (slope, midpoint, ceiling) per row: what the band is drawn from.
    samples: np.ndarray = field(default_factory=lambda: np.empty((0, 3)), repr=False, compare=False)

    def predict(self, compute: Sequence[float] | np.ndarray) -> np.ndarray:
        """The point fit's score at each effective compute (FLOP)."""
        if self.slope is None or self.midpoint is None or self.ceiling is None:
            return np.full(len(compute), np.nan)
        params = np.array([[self.slope, self.midpoint, self.ceiling]])
        return self._score(np.log10(np.asarray(compute, dtype=float)), params)[0]

    def band_at(self, compute: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The band's (lower, upper) score at each effective compute (FLOP)."""
        x = np.log10(np.asarray(compute, dtype=float))
        if not len(self.samples):
            nan = np.full(len(x), np.nan)
            return nan, nan
        scores = self._score(x, self.samples)
        tail = (1.0 - self.band) / 2.0
        lo, hi = np.quantile(scores, [tail, 1.0 - tail], axis=0)
        point = self.predict(10.0**x)  # the refits are on a grid: the band always holds the point fit
        return np.fmin(lo, point), np.fmax(hi, point)

    def _score(self, x: np.ndarray, params: np.ndarray) -> np.ndarray:
        rise = params[:, 2:3] - self.floor
        z = self.floor + rise * expit(params[:, :1] * (x[None, :] - params[:, 1:2]))
        return np.asarray(z if self.ascending else 1.0 - z)


def _standard_error(obs: Observation, default: float) -> float:
    if obs.ci_low is None or obs.ci_high is None:
        return default
    width = float(obs.ci_high) - float(obs.ci_low)
    return width / (2 * 1.96) if math.isfinite(width) and width > 0 else default


def fit_crossing(observations: Sequence[Observation], threshold: float, *, floor: float = 0.0,
                 ascending: bool = True, settings: ForecastSettings = DEFAULT_SETTINGS) -> CurveForecast:
    """Fit the saturating curve to `observations` and forecast where it crosses `threshold`.
    `floor`: the score at no capability (a benchmark's chance score), for ascending measures;
    `ascending=False` for measures that fire when the score falls (fitted on 1 - score, from 0)."""
    pts = sorted((o for o in observations
                  if o.effective_compute > 0 and math.isfinite(o.effective_compute) and math.isfinite(o.value)),
                 key=lambda o: o.effective_compute)
    n = len(pts)
    base: dict[str, Any] = {"checkpoints": n, "ascending": ascending, "band": settings.band}
    distinct = len({o.effective_compute for o in pts})
    if distinct < settings.min_checkpoints:
        return CurveForecast(False, f"{distinct} checkpoint(s) with a score; a forecast needs "
                                    f"{settings.min_checkpoints}", **base)
    lo = min(max(float(floor) if ascending else 0.0, 0.0), 0.99)
    base["floor"] = lo
    t = float(threshold) if ascending else 1.0 - float(threshold)
    if t <= lo:
        return CurveForecast(False, f"threshold {threshold:g} is at or beyond the floor {lo:g}: any score crosses it",
                             **base)
    if t >= 1.0:
        return CurveForecast(False, f"threshold {threshold:g} is at the ceiling: a saturating curve never crosses it",
                             **base)
    x = np.log10([o.effective_compute for o in pts])
    z = np.array([o.value if ascending else 1.0 - o.value for o in pts], dtype=float)
    recent = pts[-2:]
    recent_se = math.sqrt(sum(_standard_error(o, settings.default_se) ** 2 for o in recent)) / len(recent)
    margin = max(settings.noise_floor, settings.noise_sd * recent_se)
    rise = float(z[-len(recent):].mean()) - lo
    if rise <= margin:
        return CurveForecast(False, f"the latest scores are within noise ({margin:.2f}) of the floor {lo:g}: no rise "
                                    "to extrapolate yet", **base)
    try:
        errors = np.array([_standard_error(o, settings.default_se) for o in pts])
        return _fit(x, z, errors, t, lo, settings, base)
    except (ValueError, FloatingPointError, np.linalg.LinAlgError) as exc:
        return CurveForecast(False, f"the fit failed: {type(exc).__name__}: {exc}", **base)


def _fit(x: np.ndarray, z: np.ndarray, se: np.ndarray, t: float, lo: float, s: ForecastSettings,
         base: dict[str, Any]) -> CurveForecast:
    """Least squares over a (slope, midpoint) grid; at each grid point the curve is linear in its
    rise (ceiling - floor), which is solved exactly (within [0, 1 - floor], with the ceiling's
    pseudo-observation). The data and every bootstrap replicate (weights over the same checkpoints,
    scores redrawn) are fitted at once by matrix products."""
    n = len(x)
    x_last = float(x[-1])
    u = x - x_last  # log10 compute relative to the latest checkpoint
    slopes = np.geomspace(s.min_slope, s.max_slope, 32)
    mids = np.arange(float(u[0]) - 2.0, s.horizon_decades + 1e-9, 0.05)
    grid = np.array(np.meshgrid(slopes, mids, indexing="ij")).reshape(2, -1).T  # (G, 2): slope, midpoint
    shape = expit(grid[:, :1] * (u[None, :] - grid[:, 1:2]))  # (G, n)
    zr = z - lo

    rng = np.random.default_rng(s.seed)
    draws = rng.integers(0, n, size=(s.resamples, n))
    counts = np.zeros((s.resamples, n))
    np.add.at(counts, (np.repeat(np.arange(s.resamples), n), draws.ravel()), 1.0)
    counts = counts[(counts > 0).sum(axis=1) >= 2]  # a replicate of one checkpoint fits any curve
    if not len(counts):
        raise ValueError("no bootstrap replicate holds two distinct checkpoints")
    # Each replicate also redraws every score within its own measurement error (the interval the
    # determination recorded): with a handful of checkpoints, resampling them alone understates how
    # little they pin down. Row 0: the data as observed.
    weights = np.vstack([np.ones(n), counts])
    values = np.vstack([zr, zr + se[None, :] * rng.standard_normal((len(counts), n))])
    sz = (weights * values) @ np.ascontiguousarray(shape.T)  # (R, G)
    ss = weights @ np.ascontiguousarray((shape * shape).T)
    top, lam = 1.0 - lo, s.ceiling_weight
    rise = np.clip((sz + lam * top) / np.maximum(ss + lam, 1e-300), 0.0, top)
    sse = (weights * values**2).sum(axis=1)[:, None] - 2.0 * rise * sz + rise**2 * ss + lam * (top - rise) ** 2
    best = np.argmin(sse, axis=1)
    fitted = np.column_stack([grid[best], rise[np.arange(len(best)), best] + lo])  # (R, 3): slope, mid, ceiling

    slope, mid, ceiling = _refine(u, z, lo, fitted[0], (float(mids[0]), float(mids[-1])), s)
    picks = fitted[1:]
    cross_b = _crossing(picks, t, lo)
    tail = (1.0 - s.band) / 2.0
    early, late = np.quantile(cross_b, [tail, 1.0 - tail], method="inverted_cdf")
    point = float(_crossing(np.array([[slope, mid, ceiling]]), t, lo)[0])
    # The refits sit on the grid, the point fit off it: the band always holds the point forecast.
    early, late = min(float(early), point), max(float(late), point)
    samples = picks.copy()
    samples[:, 1] += x_last
    return CurveForecast(
        True, f"logistic in log10 compute from {lo:g} over {n} checkpoints, {len(picks)} bootstrap refits",
        slope=slope, midpoint=mid + x_last, ceiling=ceiling, crossing=_flop(x_last + point),
        earliest=_flop(x_last + float(early)), latest=_flop(x_last + float(late)), samples=samples, **base)


def _crossing(params: np.ndarray, t: float, lo: float) -> np.ndarray:
    """log10 compute (relative) where each (slope, midpoint, ceiling) curve reaches t; inf where it
    levels off below t."""
    share = (t - lo) / np.maximum(params[:, 2] - lo, 1e-12)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = params[:, 1] + np.log(share / (1.0 - share)) / params[:, 0]
    return np.where(share < 1.0, out, np.inf)


def _refine(u: np.ndarray, z: np.ndarray, lo: float, start: np.ndarray, mid_bounds: tuple[float, float],
            s: ForecastSettings) -> tuple[float, float, float]:
    """Polish the grid's best (slope, midpoint, ceiling) by bounded least squares; the grid's point if
    the optimiser does not improve on it."""
    from scipy.optimize import least_squares

    root = math.sqrt(s.ceiling_weight)

    def residual(p: np.ndarray) -> np.ndarray:
        return np.append(z - (lo + (p[2] - lo) * expit(p[0] * (u - p[1]))), root * (1.0 - p[2]))

    def jacobian(p: np.ndarray) -> np.ndarray:
        e = expit(p[0] * (u - p[1]))
        d = (p[2] - lo) * e * (1.0 - e)
        return np.vstack([np.column_stack([-d * (u - p[1]), d * p[0], -e]), [0.0, 0.0, -root]])

    lower = np.array([s.min_slope, mid_bounds[0], lo])
    upper = np.array([s.max_slope, mid_bounds[1], 1.0])
    x0 = np.clip(start, lower, upper)
    try:
        res = least_squares(residual, x0, jac=jacobian, bounds=(lower, upper))
    except (ValueError, np.linalg.LinAlgError):
        return float(x0[0]), float(x0[1]), float(x0[2])
    if res.success and float(np.sum(residual(res.x) ** 2)) <= float(np.sum(residual(x0) ** 2)):
        return float(res.x[0]), float(res.x[1]), float(res.x[2])
    return float(x0[0]), float(x0[1]), float(x0[2])


def _flop(log10_compute: float) -> float | None:
    """10 ** x, or None where the curve never gets there (or so far off that a float cannot say)."""
    return 10.0**log10_compute if log10_compute < 300 else None


# -- measures of a policy, from a run's determinations --------------------------------------------


def measure_history(determinations: Iterable[Mapping[str, Any]], *, below_compute: float | None = None
                    ) -> dict[tuple[str, str], list[Observation]]:
    """(benchmark, metric) → the values the run's determinations measured, by checkpoint in step
    order (from each payload's `benchmarks` summaries, else its recorded `scores`). A step decided
    more than once counts once, as last recorded; payloads without a step or a positive compute are
    skipped; `below_compute`: only checkpoints with less effective compute (the earlier ones)."""
    by_step: dict[int, Mapping[str, Any]] = {}
    for payload in determinations:
        ck = payload.get("checkpoint") or {}
        step, compute = ck.get("step"), ck.get("effective_compute")
        if not isinstance(step, int) or not isinstance(compute, int | float) or not compute > 0:
            continue
        if below_compute is not None and compute >= below_compute:
            continue
        by_step[step] = payload
    out: dict[tuple[str, str], list[Observation]] = {}
    for step in sorted(by_step):
        payload = by_step[step]
        compute = float(payload["checkpoint"]["effective_compute"])
        seen: set[tuple[str, str]] = set()
        for summary in payload.get("benchmarks") or ():
            mean = summary.get("mean")
            if not isinstance(mean, int | float):
                continue
            key = (str(summary.get("benchmark")), str(summary.get("metric", "mean")))
            out.setdefault(key, []).append(Observation(step, compute, float(mean), summary.get("ci_low"),
                                                       summary.get("ci_high")))
            seen.add(key)
        scores = payload.get("scores") or {}
        for metric in ("mean", "best_of_k"):
            values = scores.get(metric) if isinstance(scores, Mapping) else None
            for bid, value in (values or {}).items():
                if (bid, metric) not in seen and isinstance(value, int | float):
                    out.setdefault((bid, metric), []).append(Observation(step, compute, float(value)))
    return out


_FIRES = {">=": lambda v, t: v >= t, ">": lambda v, t: v > t, "<=": lambda v, t: v <= t, "<": lambda v, t: v < t}


@dataclass(frozen=True)
class MeasureForecast:
    """One measure of one threshold: its history and its forecast crossing."""

    threshold_id: str
    benchmark: str
    metric: str
    comparison: str
    threshold: float
    gating: bool
    steps: tuple[int, ...]
    latest_value: float | None
    latest_compute: float | None
    curve: CurveForecast

    @property
    def measured_crossed(self) -> bool:
        """The latest checkpoint already measured the crossing: nothing left to forecast."""
        fires = _FIRES.get(self.comparison, _FIRES[">="])
        return self.latest_value is not None and bool(fires(self.latest_value, self.threshold))

    @property
    def status(self) -> ForecastStatus:
        if self.measured_crossed:
            return "crossed"
        return "forecast" if self.curve.ok else "no_forecast"

    @property
    def measure(self) -> str:
        return f"{self.threshold_id}:{self.benchmark}.{self.metric}"

    def warns(self, next_comprehensive: float | None) -> bool:
        """Whether the band's earliest crossing comes at or before `next_comprehensive` (FLOP), for a
        gating threshold not yet measured as crossed."""
        return (self.gating and next_comprehensive is not None and self.status == "forecast"
                and self.curve.earliest is not None and self.curve.earliest <= next_comprehensive)

    def describe(self) -> str:
        if self.status == "crossed":
            return f"measured {self.latest_value:.3f} {self.comparison} {self.threshold:g} at step {self.steps[-1]}"
        if not self.curve.ok:
            return f"no forecast: {self.curve.reason}"
        return (f"crosses {self.comparison} {self.threshold:g} at {_fmt(self.curve.crossing)} FLOP "
                f"(band {_fmt(self.curve.earliest)} – {_fmt(self.curve.latest)}, {self.curve.band:.0%}), "
                f"from {self.curve.checkpoints} checkpoints")

    def message(self, next_comprehensive: float) -> str:
        """The warning, one line."""
        return (f"forecast warning: {self.measure} may cross {self.comparison} {self.threshold:g} from "
                f"{_fmt(self.curve.earliest)} FLOP (upper band; point forecast {_fmt(self.curve.crossing)}), before "
                f"the next comprehensive assessment at {_fmt(next_comprehensive)} FLOP; latest "
                f"{self.latest_value:.3f} at {_fmt(self.latest_compute)} FLOP, {self.curve.checkpoints} checkpoints")

    def to_dict(self) -> dict[str, Any]:
        c = self.curve
        return {"threshold_id": self.threshold_id, "benchmark": self.benchmark, "metric": self.metric,
                "comparison": self.comparison, "threshold": self.threshold, "gating": self.gating,
                "status": self.status, "steps": list(self.steps), "checkpoints": c.checkpoints,
                "latest_value": self.latest_value, "latest_compute": self.latest_compute,
                "crossing": c.crossing, "earliest": c.earliest, "latest": c.latest, "band": c.band,
                "slope_per_decade": c.slope, "midpoint_log10_flop": c.midpoint, "floor": c.floor,
                "reason": c.reason}

    def warning_payload(self, *, run_id: str, step: int | None, next_comprehensive: float) -> dict[str, Any]:
        """What a forecast warning records: the run, the measure, the threshold, the forecast crossing
        with its band, the next comprehensive step it beats, and the checkpoints it was fitted on."""
        c = self.curve
        return {"run_id": run_id, "step": step, "threshold_id": self.threshold_id, "benchmark": self.benchmark,
                "metric": self.metric, "comparison": self.comparison, "threshold": self.threshold,
                "crossing": c.crossing, "earliest": c.earliest, "latest": c.latest, "band": c.band,
                "next_comprehensive": next_comprehensive, "steps": list(self.steps),
                "checkpoints": c.checkpoints, "message": self.message(next_comprehensive)}


def _fmt(flop: float | None) -> str:
    return "never" if flop is None else f"{flop:.2e}"


def forecast_measures(policy: Policy, determinations: Iterable[Mapping[str, Any]], *,
                      below_compute: float | None = None, settings: ForecastSettings = DEFAULT_SETTINGS
                      ) -> list[MeasureForecast]:
    """A forecast for every measure of every threshold of `policy`, from the run's determination
    payloads (`below_compute`: from the checkpoints with less effective compute only)."""
    history = measure_history(determinations, below_compute=below_compute)
    domains = {d.id: d.status for d in policy.domains}
    fits: dict[tuple[str, str, float, bool], CurveForecast] = {}
    out = []
    for t in policy.thresholds:
        for m in t.measures:
            obs = history.get((m.benchmark, m.metric), [])
            ascending = m.comparison in (">=", ">")
            key = (m.benchmark, m.metric, float(m.threshold), ascending)
            if key not in fits:
                fits[key] = fit_crossing(obs, float(m.threshold), floor=float(policy.benchmark(m.benchmark).chance_score),
                                         ascending=ascending, settings=settings)
            out.append(MeasureForecast(
                threshold_id=t.id, benchmark=m.benchmark, metric=m.metric, comparison=m.comparison,
                threshold=float(m.threshold), gating=domains.get(t.domain) == "tracked",
                steps=tuple(o.step for o in obs), latest_value=obs[-1].value if obs else None,
                latest_compute=obs[-1].effective_compute if obs else None, curve=fits[key]))
    return out


def next_comprehensive_compute(cadence: Cadence, last_comprehensive_compute: float | None) -> float | None:
    """The effective compute at which the cadence next runs a comprehensive assessment (its compute
    rule; the time rule is not forecast). None without a usable last comprehensive: the next
    assessment is comprehensive anyway."""
    if last_comprehensive_compute is None or not last_comprehensive_compute > 0:
        return None
    return float(last_comprehensive_compute) * cadence.comprehensive_compute_factor


def warnings(forecasts: Iterable[MeasureForecast], next_comprehensive: float | None) -> list[MeasureForecast]:
    """The forecasts whose earliest crossing comes before the next comprehensive assessment."""
    return [f for f in forecasts if f.warns(next_comprehensive)]


def last_comprehensive_compute(determinations: Iterable[Mapping[str, Any]]) -> float | None:
    """The effective compute of the run's latest comprehensive determination (by step), if any."""
    best: tuple[int, float] | None = None
    for payload in determinations:
        ck = payload.get("checkpoint") or {}
        if payload.get("assessment") != "comprehensive" or not isinstance(ck.get("step"), int):
            continue
        if best is None or ck["step"] >= best[0]:
            best = (ck["step"], float(ck.get("effective_compute") or 0.0))
    return None if best is None else best[1]
