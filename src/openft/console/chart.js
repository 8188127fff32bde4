// A chart of metrics per training step, drawn with uPlot (vendor/uplot-*/, MIT) and fed
// metrics events as they come. Long runs are downsampled for drawing (bucket means), never
// for keeping: a job with 100,000 steps draws about MAX_POINTS points per series.

import { h } from "./dom.js";

const MAX_POINTS = 1500;
const REDRAW_MS = 250;
const COLOURS = ["#2457d6", "#e8590c", "#7048e8", "#0ca678"];

export class StepChart {
  // series: [{ key: "train_loss", label: "training loss", point?: bool }]
  constructor(title, series) {
    this.series = series;
    this.steps = [];
    this.values = series.map(() => []);
    this.plot = null;
    this.timer = null;
    this.area = h("div", { class: "plot", role: "img", "aria-label": title });
    this.note = h("p", { class: "muted" }, "No metrics yet.");
    this.element = h("section", { class: "chart" }, h("h3", {}, title), this.area, this.note);
  }

  // Add the metrics events' values (steps already seen are ignored: a resumed job
  // reports from its checkpoint on).
  add(events) {
    let added = false;
    for (const event of events) {
      const data = event.data || {};
      const step = data.step;
      if (typeof step !== "number" || !this.series.some((s) => typeof data[s.key] === "number")) {
        continue;
      }
      const last = this.steps.length - 1;
      if (last >= 0 && step < this.steps[last]) continue;
      if (last >= 0 && step === this.steps[last]) {
        // The last step's full-validation figures come in their own event.
        this.series.forEach((s, i) => { if (typeof data[s.key] === "number") this.values[i][last] = data[s.key]; });
      } else {
        this.steps.push(step);
        this.series.forEach((s, i) => this.values[i].push(typeof data[s.key] === "number" ? data[s.key] : null));
      }
      added = true;
    }
    if (added && this.timer === null) this.timer = setTimeout(() => this.draw(), this.plot ? REDRAW_MS : 0);
  }

  // The data uPlot draws: every point, or bucket means when there are too many.
  sampled() {
    const n = this.steps.length;
    if (n <= MAX_POINTS) return [this.steps, ...this.values];
    const size = Math.ceil(n / MAX_POINTS);
    const x = [];
    const ys = this.values.map(() => []);
    for (let start = 0; start < n; start += size) {
      const end = Math.min(n, start + size);
      x.push(this.steps[end - 1]);
      this.values.forEach((values, i) => {
        let sum = 0;
        let count = 0;
        for (let j = start; j < end; j++) if (values[j] !== null) { sum += values[j]; count++; }
        ys[i].push(count ? sum / count : null);
      });
    }
    return [x, ...ys];
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
    if (!window.uPlot || !this.steps.length) return;
    this.note.hidden = true;
    this.area.dataset.steps = String(this.steps.length); // how many steps the chart holds
    const data = this.sampled();
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
