"""The overview's chart, drawn on the server: events per hour (bars) and success rate (line).

    chart = volume_chart(store.hourly_volume(24))
    # the template draws chart.bars, chart.rate_points... as plain SVG elements

No JavaScript and no chart library: the geometry is computed here and the template writes
`<rect>`, `<polyline>` and `<text>` elements (autoescaped like every other value).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from billbridge.store.records import HourlyVolume

WIDTH = 720  # SVG user units; the SVG scales to its container
HEIGHT = 240
LEFT, RIGHT, TOP, BOTTOM = 60, 70, 16, 34  # margins for the axes' labels


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str  # for a <title>: "14:00 UTC: 12 events, 98% succeeded"


@dataclass(frozen=True)
class Tick:
    position: float  # x for the time axis, y for the value axes
    label: str


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    failed: bool  # some delivery of that hour failed


@dataclass(frozen=True)
class HourRow:
    """One hour, for the table version of the chart."""

    hour: str
    events: int
    succeeded: int
    failed: int
    other: int
    rate: str


@dataclass(frozen=True)
class VolumeChart:
    width: int
    height: int
    plot_left: float
    plot_right: float
    plot_top: float
    plot_bottom: float
    bars: list[Bar]
    rate_lines: list[str]  # polyline "x,y x,y" strings; a gap where an hour had no outcome
    rate_points: list[Point]
    count_ticks: list[Tick]
    rate_ticks: list[Tick]
    time_ticks: list[Tick]
    rows: list[HourRow]
    total_events: int
    succeeded: int
    failed: int
    summary: str  # one sentence for screen readers


def success_rate(succeeded: int, failed: int) -> float | None:
    """Succeeded / (succeeded + failed), or None when nothing finished."""
    finished = succeeded + failed
    return None if finished == 0 else succeeded / finished


def _nice_max(value: int) -> int:
    """The smallest 1-2-5 step ceiling >= value (at least 4, for 4 even grid steps)."""
    if value <= 4:
        return 4
    magnitude = 1
    while True:
        for step in (1, 2, 5):
            ceiling = step * magnitude * 4
            if ceiling >= value:
                return ceiling
        magnitude *= 10


def _hour_label(start: float) -> str:
    return datetime.fromtimestamp(start, UTC).strftime("%H:%M")


def volume_chart(volume: list[HourlyVolume]) -> VolumeChart:
    """Geometry for `volume` (oldest hour first)."""
    plot_left, plot_right = float(LEFT), float(WIDTH - RIGHT)
    plot_top, plot_bottom = float(TOP), float(HEIGHT - BOTTOM)
    plot_height = plot_bottom - plot_top
    slot = (plot_right - plot_left) / max(1, len(volume))
    top_count = _nice_max(max((hour.events for hour in volume), default=0))

    bars: list[Bar] = []
    points: list[Point] = []
    lines: list[str] = []
    current: list[str] = []
    rows: list[HourRow] = []
    for index, hour in enumerate(volume):
        x = plot_left + index * slot
        rate = success_rate(hour.succeeded, hour.failed)
        rate_text = "—" if rate is None else f"{rate:.0%}"
        label = f"{_hour_label(hour.hour_start)} UTC: {hour.events} events"
        if rate is not None:
            label += f", {rate_text} of finished deliveries succeeded"
        height = plot_height * hour.events / top_count
        bars.append(Bar(x + slot * 0.15, plot_bottom - height, slot * 0.7, height, label))
        rows.append(
            HourRow(
                hour=f"{_hour_label(hour.hour_start)} UTC",
                events=hour.events,
                succeeded=hour.succeeded,
                failed=hour.failed,
                other=hour.other,
                rate=rate_text,
            )
        )
        if rate is None:
            if current:
                lines.append(" ".join(current))
                current = []
            continue
        center = x + slot / 2
        y = plot_bottom - plot_height * rate
        points.append(Point(round(center, 1), round(y, 1), hour.failed > 0))
        current.append(f"{center:.1f},{y:.1f}")
    if current:
        lines.append(" ".join(current))

    count_ticks = [
        Tick(plot_bottom - plot_height * step / 4, str(top_count * step // 4)) for step in range(5)
    ]
    rate_ticks = [Tick(plot_bottom - plot_height * step / 4, f"{step * 25}%") for step in range(5)]
    every = max(1, len(volume) // 6)
    time_ticks = [
        Tick(plot_left + index * slot + slot / 2, _hour_label(hour.hour_start))
        for index, hour in enumerate(volume)
        if index % every == 0
    ]
    total = sum(hour.events for hour in volume)
    succeeded = sum(hour.succeeded for hour in volume)
    failed = sum(hour.failed for hour in volume)
    overall = success_rate(succeeded, failed)
    summary = f"{total} events in the last {len(volume)} hours"
    summary += (
        "; no delivery finished yet."
        if overall is None
        else f"; {overall:.1%} of {succeeded + failed} finished deliveries succeeded."
    )
    return VolumeChart(
        width=WIDTH,
        height=HEIGHT,
        plot_left=plot_left,
        plot_right=plot_right,
        plot_top=plot_top,
        plot_bottom=plot_bottom,
        bars=bars,
        rate_lines=lines,
        rate_points=points,
        count_ticks=count_ticks,
        rate_ticks=rate_ticks,
        time_ticks=time_ticks,
        rows=rows,
        total_events=total,
        succeeded=succeeded,
        failed=failed,
        summary=summary,
    )
