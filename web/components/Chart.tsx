// A small SVG line chart of samples over time: no library, its x axis the sample times
// (a missing value breaks the line), its y axis from 0 to the largest value, the latest values in
// large type above it so that it reads at a glance, and its lines in theme colours.

import { H, PAD, W, linePath, niceMax } from "@/lib/chart";

export interface Series {
  label: string;
  /** A CSS colour (a variable, so that it follows the theme). */
  color: string;
  /** One value per sample time; null where there was none. */
  values: (number | null)[];
}

function fmt(v: number, unit: string): string {
  return `${Math.round(v * 10) / 10}${unit}`;
}

function clock(ms: number): string {
  return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

export default function Chart({
  title,
  series,
  times,
  from,
  to,
  unit = "",
  testId,
}: {
  title: string;
  series: Series[];
  /** Sample times, milliseconds since the epoch. */
  times: number[];
  /** The x axis' ends (ms). */
  from: number;
  to: number;
  unit?: string;
  testId?: string;
}) {
  const max = niceMax(Math.max(0, ...series.flatMap((s) => s.values.filter((v): v is number => v !== null))));
  const latest = series.map((s) => {
    const v = s.values[s.values.length - 1];
    return { label: s.label, color: s.color, text: v === null || v === undefined ? "-" : fmt(v, unit) };
  });
  const summary = latest.map((l) => `${l.label} ${l.text}`).join(", ");
  return (
    <figure className="chart" data-testid={testId}>
      <figcaption>
        <strong>{title}</strong>
        <span className="chart-now">
          {latest.map((l) => (
            <span key={l.label} className="chart-value">
              <span className="swatch" style={{ background: l.color }} aria-hidden="true" /> {l.label}{" "}
              <b>{l.text}</b>
            </span>
          ))}
        </span>
      </figcaption>
      <div className="chart-plot">
        <span className="chart-ymax" aria-hidden="true">
          {fmt(max, unit)}
        </span>
        <svg
          viewBox={`0 0 ${W} ${H}`}
          role="img"
          aria-label={`${title} from ${clock(from)} to ${clock(to)}, now: ${summary}; scale 0 to ${fmt(max, unit)}`}
          preserveAspectRatio="none"
        >
          <line x1={0} y1={PAD} x2={W} y2={PAD} className="grid" vectorEffect="non-scaling-stroke" />
          <line x1={0} y1={H / 2} x2={W} y2={H / 2} className="grid" vectorEffect="non-scaling-stroke" />
          <line x1={0} y1={H - PAD} x2={W} y2={H - PAD} className="axis" vectorEffect="non-scaling-stroke" />
          {series.map((s) => (
            <path
              key={s.label}
              d={linePath(times, s.values, from, to, max)}
              stroke={s.color}
              fill="none"
              strokeWidth={2}
              vectorEffect="non-scaling-stroke"
            />
          ))}
        </svg>
        <div className="chart-x" aria-hidden="true">
          <span>{clock(from)}</span>
          <span>{clock(to)}</span>
        </div>
      </div>
    </figure>
  );
}
