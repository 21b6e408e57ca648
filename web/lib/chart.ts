// The geometry of the operators' charts (components/Chart.tsx): an SVG of W x H units.

export const W = 600;
export const H = 140;
export const PAD = 4;

/** A round ceiling for the y axis: 1, 2, 5, 10, 20, 50... */
export function niceMax(v: number): number {
  if (v <= 1) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

/** The SVG path of one series: M starts a run, L continues it; a null breaks it. */
export function linePath(times: number[], values: (number | null)[], from: number, to: number, max: number): string {
  const span = Math.max(1, to - from);
  let d = "";
  let open = false;
  values.forEach((v, i) => {
    if (v === null || v === undefined || times[i] === undefined) {
      open = false;
      return;
    }
    const x = PAD + ((times[i] - from) / span) * (W - 2 * PAD);
    const y = H - PAD - (v / max) * (H - 2 * PAD);
    d += `${open ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)} `;
    open = true;
  });
  return d.trim();
}
