// A small SVG line chart of samples over time: no library, scaled to its data, with
// the latest values in its label so that it reads without seeing the lines.

export interface Series {
  label: string;
  /** A CSS colour (a variable, so that it follows the theme). */
  color: string;
  values: (number | null)[];
}

const W = 600;
const H = 140;
const PAD = 4;

function path(values: (number | null)[], max: number, step: number): string {
  let d = "";
  values.forEach((v, i) => {
    if (v === null) return;
    const x = PAD + i * step;
    const y = H - PAD - (v / max) * (H - 2 * PAD);
    d += `${d && values[i - 1] !== null ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)} `;
  });
  return d.trim();
}

export default function Chart({ title, series, unit, testId }: { title: string; series: Series[]; unit?: string; testId?: string }) {
  const n = Math.max(1, ...series.map((s) => s.values.length));
  const max = Math.max(1, ...series.flatMap((s) => s.values.filter((v): v is number => v !== null)));
  const step = n > 1 ? (W - 2 * PAD) / (n - 1) : 0;
  const latest = series
    .map((s) => {
      const v = s.values[s.values.length - 1];
      return `${s.label} ${v === null || v === undefined ? "-" : `${Math.round(v * 10) / 10}${unit ?? ""}`}`;
    })
    .join(", ");
  return (
    <figure className="chart" data-testid={testId}>
      <figcaption>
        <strong>{title}</strong> <span className="muted small">now: {latest}; scale 0 to {Math.round(max * 10) / 10}{unit ?? ""}</span>
      </figcaption>
      <svg viewBox={`0 0 ${W} ${H}`} role="img" aria-label={`${title}, now: ${latest}`} preserveAspectRatio="none">
        <line x1={0} y1={H - PAD} x2={W} y2={H - PAD} className="axis" />
        {series.map((s) => (
          <path key={s.label} d={path(s.values, max, step)} stroke={s.color} fill="none" strokeWidth={2} vectorEffect="non-scaling-stroke" />
        ))}
      </svg>
      <ul className="legend">
        {series.map((s) => (
          <li key={s.label}>
            <span className="swatch" style={{ background: s.color }} aria-hidden="true" /> {s.label}
          </li>
        ))}
      </ul>
    </figure>
  );
}
