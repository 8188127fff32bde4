// A chart of metrics per training step, drawn with uPlot (vendor/uplot-*/, MIT). It starts
// from the job's metrics as series (openft's GET /v1/fine_tuning/jobs/{id}/metrics: one
// answer however long the job, already downsampled keeping every extreme) and grows with
// the metrics events that the events stream brings after that. Long series are drawn
// downsampled the same way (each bucket's first, lowest, highest and last point), never
// kept downsampled beyond what the server sent.

import { h } from "./dom.js";

const MAX_POINTS = 2000; // per series, drawn
const REDRAW_MS = 250;
const COLOURS = ["#2457d6", "#e8590c", "#7048e8", "#0ca678"];

// Every bucket's first, lowest, highest and last point: the line covers the same pixels.
function m4(steps, values, buckets) {
  const size = Math.ceil(steps.length / buckets);
  const xs = [];
  const ys = [];
  for (let start = 0; start < steps.length; start += size) {
    const end = Math.min(steps.length, start + size);
    let lo = start;
    let hi = start;
    for (let i = start + 1; i < end; i++) {
      if (values[i] < values[lo]) lo = i;
      if (values[i] > values[hi]) hi = i;
    }
    for (const i of [...new Set([start, lo, hi, end - 1])].sort((a, b) => a - b)) {
      xs.push(steps[i]);
      ys.push(values[i]);
    }
  }
  return [xs, ys];
}

export class StepChart {
  // series: [{ key: "train_loss", label: "training loss", point?: bool }]
  constructor(title, series) {
    this.series = series;
    this.points = series.map(() => ({ steps: [], values: [] }));
    this.plot = null;
    this.timer = null;
    this.area = h("div", { class: "plot", role: "img", "aria-label": title });
    this.area.stepChart = this; // what the console's tests read back (`snapshot`)
    this.note = h("p", { class: "muted" }, "No metrics yet.");
    this.element = h("section", { class: "chart" }, h("h3", {}, title), this.area, this.note);
  }

  get keys() {
    return this.series.map((s) => s.key);
  }

  hasData() {
    return this.points.some((p) => p.steps.length > 0);
  }

  // The metrics endpoint's series ({ train_loss: { step: [...], value: [...] }, ... }).
  load(metrics) {
    this.series.forEach((s, i) => {
      const column = metrics[s.key];
      if (column) this.points[i] = { steps: column.step.slice(), values: column.value.slice() };
    });
    this.schedule();
  }

  // Add the metrics events' values, each step once per series (the events after those
  // the series were read to; steps at or before a series' last are not new).
  add(events) {
    let added = false;
    for (const event of events) {
      const data = event.data || {};
      const step = data.step;
      if (!Number.isInteger(step)) continue;
      this.series.forEach((s, i) => {
        const value = data[s.key];
        const p = this.points[i];
        if (typeof value !== "number" || (p.steps.length && step <= p.steps[p.steps.length - 1])) return;
        p.steps.push(step);
        p.values.push(value);
        added = true;
      });
    }
    if (added) this.schedule();
  }

  schedule() {
    if (this.timer === null) this.timer = setTimeout(() => this.draw(), this.plot ? REDRAW_MS : 0);
  }

  // { key: { step: [...], value: [...] } } of what the chart holds.
  snapshot() {
    return Object.fromEntries(this.series.map((s, i) =>
      [s.key, { step: this.points[i].steps.slice(), value: this.points[i].values.slice() }]));
  }

  // The data uPlot draws: the series on one axis of steps (null where one has no point).
  aligned() {
    const drawn = this.points.map((p) => (p.steps.length > MAX_POINTS
      ? m4(p.steps, p.values, MAX_POINTS / 4) : [p.steps, p.values]));
    const steps = [...new Set(drawn.flatMap(([xs]) => xs))].sort((a, b) => a - b);
    const at = new Map(steps.map((step, i) => [step, i]));
    const ys = drawn.map(([xs, values]) => {
      const y = new Array(steps.length).fill(null);
      xs.forEach((x, i) => { y[at.get(x)] = values[i]; });
      return y;
    });
    return [steps, ...ys];
  }

  // Draw now what has come (the replay caught up: no need to wait for the next redraw).
  flush() {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.draw();
    }
  }

  draw() {
    this.timer = null;
    if (!window.uPlot || !this.hasData()) return;
    this.note.hidden = true;
    const last = Math.max(...this.points.map((p) => (p.steps.length ? p.steps[p.steps.length - 1] : 0)));
    this.area.dataset.lastStep = String(last); // the newest step the chart holds
    const data = this.aligned();
    if (this.plot) {
      this.plot.setData(data);
      return;
    }
    const width = Math.max(320, this.area.clientWidth || 560);
    this.plot = new window.uPlot({
      width,
      height: 260,
      scales: { x: { time: false } },
      axes: [{ label: "step" }, {}],
      series: [
        { label: "step" },
        ...this.series.map((s, i) => ({
          label: s.label,
          stroke: COLOURS[i % COLOURS.length],
          width: 1.5,
          spanGaps: true,
          // A lone point (the last step's full validation) must show; a series of them
          // shows its points where uPlot finds room for them.
          points: s.point ? { show: true, size: 8, fill: COLOURS[i % COLOURS.length] } : {},
        })),
      ],
    }, data, this.area);
  }

  resize() {
    if (this.plot) this.plot.setSize({ width: Math.max(320, this.area.clientWidth), height: 260 });
  }
}
