// The live loss curve, drawn on a canvas: loss per step with nice axis ticks, redrawn as points arrive.

function niceStep(range: number, count: number): number {
  const raw = range / Math.max(1, count);
  const power = 10 ** Math.floor(Math.log10(raw));
  return ([1, 2, 5, 10].find((m) => m * power >= raw) ?? 10) * power;
}

export function drawLossChart(canvas: HTMLCanvasElement, losses: number[], totalSteps: number): void {
  const ctx = canvas.getContext('2d');
  if (!ctx) return;
  const { width, height } = canvas;
  const pad = { left: 52, right: 16, top: 14, bottom: 34 };
  ctx.clearRect(0, 0, width, height);
  ctx.fillStyle = '#fff';
  ctx.fillRect(0, 0, width, height);
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const maxStep = Math.max(totalSteps, losses.length, 1);
  let lo = Math.min(...losses);
  let hi = Math.max(...losses);
  if (!Number.isFinite(lo)) [lo, hi] = [0, 1];
  if (hi - lo < 1e-6) [lo, hi] = [lo - 0.5, hi + 0.5];
  const yStep = niceStep(hi - lo, 5);
  lo = Math.floor(lo / yStep) * yStep;
  hi = Math.ceil(hi / yStep) * yStep;
  const x = (step: number) => pad.left + (step / maxStep) * plotW;
  const y = (loss: number) => pad.top + (1 - (loss - lo) / (hi - lo)) * plotH;

  ctx.font = '12px system-ui, sans-serif';
  ctx.strokeStyle = '#e3e8ec';
  ctx.fillStyle = '#5a6570';
  ctx.lineWidth = 1;
  ctx.textAlign = 'right';
  ctx.textBaseline = 'middle';
  for (let v = lo; v <= hi + yStep / 2; v += yStep) {
    ctx.beginPath();
    ctx.moveTo(pad.left, y(v));
    ctx.lineTo(width - pad.right, y(v));
    ctx.stroke();
    ctx.fillText(v.toFixed(yStep < 0.1 ? 2 : 1), pad.left - 6, y(v));
  }
  ctx.textAlign = 'center';
  ctx.textBaseline = 'top';
  const xStep = niceStep(maxStep, 8);
  for (let s = 0; s <= maxStep; s += xStep) ctx.fillText(String(s), x(s), height - pad.bottom + 6);
  ctx.fillText('step', pad.left + plotW / 2, height - 14);
  ctx.save();
  ctx.translate(14, pad.top + plotH / 2);
  ctx.rotate(-Math.PI / 2);
  ctx.fillText('loss', 0, -6);
  ctx.restore();

  if (losses.length === 0) return;
  ctx.strokeStyle = '#2f7ed8';
  ctx.lineWidth = 2;
  ctx.beginPath();
  losses.forEach((loss, i) => (i === 0 ? ctx.moveTo(x(i + 1), y(loss)) : ctx.lineTo(x(i + 1), y(loss))));
  ctx.stroke();
  ctx.fillStyle = '#2f7ed8';
  for (const [i, loss] of losses.entries()) {
    ctx.beginPath();
    ctx.arc(x(i + 1), y(loss), 2.5, 0, 2 * Math.PI);
    ctx.fill();
  }
}
