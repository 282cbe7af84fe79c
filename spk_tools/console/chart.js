// A small live chart on a canvas, newest major frame at the right edge, with a lane of
// health-event marks under the time axis. Two views of the same frames:
//   "cpu":  each partition's share of the CPU (instructions it ran / major frame length), stacked;
//           the band left above the stack is idle time.
//   "use":  each partition's use of its own windows (0..100 %), one line per partition.

/** Colour-blind-safe palette (Okabe and Ito), in configuration order. */
/** The fewest frames the chart spans, however few it knows. */
const MIN_SPAN = 60;

export const PALETTE = ["#0072b2", "#e69f00", "#009e73", "#cc79a7", "#d55e00", "#56b4e9", "#8c6d00", "#6a3d9a"];

export class ShareChart {
  /**
   * @param {HTMLCanvasElement} canvas where to draw; its CSS box decides the size
   * @param {(name: string) => string} colorOf a partition's colour
   * @param {number} capacity how many frames the chart shows
   */
  constructor(canvas, colorOf, capacity = 120) {
    this.canvas = canvas;
    this.colorOf = colorOf;
    this.capacity = capacity;
    this.mode = "cpu";
    /** @type {{frame: number, cpu: Map<string, number>, use: Map<string, number>}[]} */
    this.points = [];
    /** @type {{frame: number, partition: string}[]} */
    this.marks = [];
    /** partition names, in the order of the stack */
    this.names = [];
    this.pending = false;
    new ResizeObserver(() => this.schedule()).observe(canvas);
  }

  /** Forget every frame and mark (signing out). */
  clear() {
    this.points = [];
    this.marks = [];
    this.names = [];
    delete this.canvas.dataset.points;
    delete this.canvas.dataset.lastFrame;
    this.schedule();
  }

  setMode(mode) {
    this.mode = mode;
    this.schedule();
  }

  setNames(names) {
    this.names = [...names];
    this.schedule();
  }

  /** One major frame: ``cpu`` and ``use`` map a partition's name to a share, 0..1. */
  push(frame, cpu, use) {
    const last = this.points.at(-1);
    if (last && frame < last.frame) return; // never go back in time
    if (last && frame === last.frame) {
      last.cpu = cpu;
      last.use = use;
    } else {
      this.points.push({ frame, cpu, use });
    }
    for (const name of cpu.keys()) if (!this.names.includes(name)) this.names.push(name);
    if (this.points.length > this.capacity) this.points.splice(0, this.points.length - this.capacity);
    const first = this.points[0].frame;
    this.marks = this.marks.filter((m) => m.frame >= first);
    this.canvas.dataset.points = String(this.points.length);
    this.canvas.dataset.lastFrame = String(frame);
    this.schedule();
  }

  /**
   * Frames from the server's history (any order; frames the chart has keep their values), e.g. the
   * frames before the console connected, or those a dropped stream missed.
   */
  merge(frames) {
    const known = new Set(this.points.map((p) => p.frame));
    for (const f of frames) if (!known.has(f.frame)) this.points.push(f);
    this.points.sort((a, b) => a.frame - b.frame);
    for (const p of this.points) for (const name of p.cpu.keys()) if (!this.names.includes(name)) this.names.push(name);
    if (this.points.length > this.capacity) this.points.splice(0, this.points.length - this.capacity);
    if (!this.points.length) return;
    this.canvas.dataset.points = String(this.points.length);
    this.canvas.dataset.lastFrame = String(this.points.at(-1).frame);
    this.schedule();
  }

  /** A health event of ``partition`` in ``frame``: a tick under the axis. */
  mark(frame, partition) {
    this.marks.push({ frame, partition });
    if (this.marks.length > 4 * this.capacity) this.marks.shift();
    this.schedule();
  }

  /** Draw at the next animation frame, once however many updates came. */
  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.draw();
    });
  }

  draw() {
    const canvas = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (!width || !height) return;
    if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);

    const style = getComputedStyle(canvas);
    const fg = style.getPropertyValue("--muted").trim() || "#5b6573";
    const grid = style.getPropertyValue("--grid").trim() || "#e3e6eb";
    const left = 44;
    const right = 12;
    const top = 10;
    const lane = 14; // health marks
    const bottom = 20 + lane;
    const plotW = Math.max(10, width - left - right);
    const plotH = Math.max(10, height - top - bottom);
    // The frames shown: the ones known, at least MIN_SPAN, at most the capacity (the chart zooms out as it fills).
    const lastFrame = this.points.length ? this.points.at(-1).frame : MIN_SPAN - 1;
    const known = this.points.length ? lastFrame - this.points[0].frame + 1 : 0;
    const span = Math.min(this.capacity, Math.max(MIN_SPAN, known));
    const step = plotW / (span - 1);
    const xOf = (frame) => left + plotW - (lastFrame - frame) * step;
    const yOf = (share) => top + plotH * (1 - Math.min(1, Math.max(0, share)));

    ctx.font = `12px ${style.fontFamily}`;
    ctx.lineWidth = 1;
    ctx.textBaseline = "middle";
    ctx.textAlign = "right";
    for (const pct of [0, 25, 50, 75, 100]) {
      const y = Math.round(yOf(pct / 100)) + 0.5;
      ctx.strokeStyle = grid;
      ctx.beginPath();
      ctx.moveTo(left, y);
      ctx.lineTo(left + plotW, y);
      ctx.stroke();
      ctx.fillStyle = fg;
      ctx.fillText(`${pct}%`, left - 6, y);
    }
    // x labels: major frame numbers on a round step; they move left as frames pass
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    const every = niceStep((span * 64) / plotW);
    const firstShown = Math.max(0, lastFrame - span + 1);
    for (let f = Math.ceil(firstShown / every) * every; f <= lastFrame; f += every) {
      const x = Math.round(xOf(f)) + 0.5;
      ctx.strokeStyle = grid;
      ctx.beginPath();
      ctx.moveTo(x, top);
      ctx.lineTo(x, top + plotH);
      ctx.stroke();
      ctx.fillStyle = fg;
      ctx.fillText(String(f), x, top + plotH + lane + 3);
    }
    for (const m of this.marks) {
      const x = xOf(m.frame);
      if (x < left - 1) continue;
      ctx.fillStyle = this.colorOf(m.partition);
      ctx.fillRect(Math.round(x) - 1, top + plotH + 3, 3, lane - 5);
    }
    if (!this.points.length) {
      ctx.fillStyle = fg;
      ctx.textAlign = "center";
      ctx.textBaseline = "middle";
      ctx.fillText("waiting for the first major frame…", left + plotW / 2, top + plotH / 2);
      return;
    }
    ctx.save();
    ctx.beginPath();
    ctx.rect(left, top - 3, plotW + 3, plotH + 6);
    ctx.clip();
    if (this.mode === "cpu") this.drawStack(ctx, xOf, yOf);
    else this.drawLines(ctx, xOf, yOf);
    ctx.restore();
  }

  drawStack(ctx, xOf, yOf) {
    const below = this.points.map(() => 0);
    for (const name of this.names) {
      const above = this.points.map((p, i) => below[i] + (p.cpu.get(name) ?? 0));
      ctx.beginPath();
      this.points.forEach((p, i) => {
        const x = xOf(p.frame);
        if (i === 0) ctx.moveTo(x, yOf(above[i]));
        else ctx.lineTo(x, yOf(above[i]));
      });
      for (let i = this.points.length - 1; i >= 0; i--) ctx.lineTo(xOf(this.points[i].frame), yOf(below[i]));
      ctx.closePath();
      ctx.globalAlpha = 0.55;
      ctx.fillStyle = this.colorOf(name);
      ctx.fill();
      ctx.globalAlpha = 1;
      // the band's top edge, only where the band has a thickness (an empty band draws nothing)
      ctx.strokeStyle = this.colorOf(name);
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      this.points.forEach((p, i) => {
        const x = xOf(p.frame);
        const thick = (p.cpu.get(name) ?? 0) > 0;
        const prevThick = i > 0 && (this.points[i - 1].cpu.get(name) ?? 0) > 0;
        if (thick && prevThick) ctx.lineTo(x, yOf(above[i]));
        else ctx.moveTo(x, yOf(above[i]));
      });
      ctx.stroke();
      above.forEach((v, i) => {
        below[i] = v;
      });
    }
  }

  drawLines(ctx, xOf, yOf) {
    ctx.lineWidth = 2;
    ctx.lineJoin = "round";
    const lastFrame = this.points.at(-1).frame;
    for (const name of this.names) {
      ctx.strokeStyle = this.colorOf(name);
      ctx.beginPath();
      let drawing = false;
      for (const p of this.points) {
        const share = p.use.get(name);
        if (share === undefined || share === null) {
          drawing = false;
          continue;
        }
        if (drawing) ctx.lineTo(xOf(p.frame), yOf(share));
        else ctx.moveTo(xOf(p.frame), yOf(share));
        drawing = true;
      }
      ctx.stroke();
      const last = this.points.at(-1).use.get(name);
      if (last !== undefined && last !== null) {
        ctx.fillStyle = this.colorOf(name);
        ctx.beginPath();
        ctx.arc(xOf(lastFrame), yOf(last), 3, 0, 2 * Math.PI);
        ctx.fill();
      }
    }
  }
}

/** The smallest of 1, 2, 5, 10, 20, 25, 50, 100, ... that is at least ``raw``. */
function niceStep(raw) {
  let base = 1;
  for (;;) {
    for (const m of base >= 10 ? [1, 2, 2.5, 5] : [1, 2, 5]) if (base * m >= raw) return base * m;
    base *= 10;
  }
}
