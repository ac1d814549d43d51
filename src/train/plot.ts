// The loss curve as a standalone SVG (training loss, and eval loss where measured), and the preference stages'
// rewards (chosen, rejected, margin). Written by hand: the chart
// libraries for Node need a DOM or a native canvas, which a 60-line polyline does not justify.

/** What the chart reads of a trainer log entry (logger.ts's LogEntry has these fields). */
export interface LossPoint {
  current_steps: number;
  loss: number;
  eval_loss?: number;
}

const W = 640;
const H = 400;
const PAD = { left: 60, right: 20, top: 30, bottom: 45 };

function ticks(lo: number, hi: number, n: number): number[] {
  const step = (hi - lo) / n;
  return Array.from({ length: n + 1 }, (_, i) => lo + i * step);
}

function fmt(v: number): string {
  return Math.abs(v) >= 100 || Number.isInteger(v) ? v.toFixed(0) : v.toPrecision(3);
}

interface Series {
  label: string;
  color: string;
  points: (readonly [number, number])[];
}

/** Lines over steps with a legend; non-finite points are left out. */
function curveSvg(title: string, series: Series[]): string {
  series = series.map((s) => ({ ...s, points: s.points.filter(([, y]) => Number.isFinite(y)) })).filter((s) => s.points.length > 0);
  const all = series.flatMap((s) => s.points);
  const xMax = Math.max(1, ...all.map(([x]) => x));
  const yMin = Math.min(...all.map(([, y]) => y));
  const yMax = Math.max(...all.map(([, y]) => y));
  const yLo = yMin - (yMax - yMin) * 0.05;
  const yHi = yMax + (yMax - yMin) * 0.05 || yMax + 1;
  const px = (x: number) => PAD.left + (x / xMax) * (W - PAD.left - PAD.right);
  const py = (y: number) => H - PAD.bottom - ((y - yLo) / (yHi - yLo)) * (H - PAD.top - PAD.bottom);
  const line = (s: Series) => `<polyline fill="none" stroke="${s.color}" stroke-width="2" points="${s.points.map(([x, y]) => `${px(x).toFixed(1)},${py(y).toFixed(1)}`).join(' ')}"/>`;
  const legend = (s: Series, i: number) => `<text x="${W - PAD.right - 130}" y="${PAD.top + 12 + 16 * i}" fill="${s.color}">— ${s.label}</text>`;
  const yTicks = ticks(yLo, yHi, 5).map((v) => `<line x1="${PAD.left}" x2="${W - PAD.right}" y1="${py(v)}" y2="${py(v)}" stroke="#ddd"/><text x="${PAD.left - 6}" y="${py(v) + 4}" text-anchor="end">${fmt(v)}</text>`);
  const xTicks = ticks(0, xMax, 5).map((v) => `<text x="${px(v)}" y="${H - PAD.bottom + 18}" text-anchor="middle">${fmt(Math.round(v))}</text>`);
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="${W / 2}" y="18" text-anchor="middle" font-size="14">${title}</text>
${yTicks.join('\n')}
${xTicks.join('\n')}
<text x="${W / 2}" y="${H - 8}" text-anchor="middle">step</text>
${series.map(line).join('\n')}
${series.map(legend).join('\n')}
</svg>
`;
}

export function lossCurveSvg(entries: readonly LossPoint[]): string {
  const train = entries.map((e) => [e.current_steps, e.loss] as const);
  const evals = entries.filter((e) => e.eval_loss !== undefined).map((e) => [e.current_steps, e.eval_loss!] as const);
  return curveSvg('training loss', [{ label: 'train', color: '#1f77b4', points: train }, { label: 'eval', color: '#d62728', points: evals }]);
}

/** What the rewards chart reads of a preference stage's log entry. */
export interface RewardPoint {
  current_steps: number;
  'rewards/chosen'?: number;
  'rewards/rejected'?: number;
  'rewards/margins'?: number;
}

/** The preference stages' rewards: chosen, rejected and their margin per logging step. */
export function rewardsCurveSvg(entries: readonly RewardPoint[]): string {
  const of = (key: 'rewards/chosen' | 'rewards/rejected' | 'rewards/margins') => entries.filter((e) => e[key] !== undefined).map((e) => [e.current_steps, e[key]!] as const);
  return curveSvg('rewards', [
    { label: 'chosen', color: '#2ca02c', points: of('rewards/chosen') },
    { label: 'rejected', color: '#d62728', points: of('rewards/rejected') },
    { label: 'margin', color: '#1f77b4', points: of('rewards/margins') },
  ]);
}
