// The plot along the document: per bin of tokens, the model's next-token loss and the memory's
// write strength, on two y axes (uPlot, vendored; loaded as a classic script before this module).

const LOSS = "#c0392b";
const STRENGTH = "#1f6fb2";
const HEIGHT = 280;

const number = (value) => (value == null ? "–" : value.toPrecision(3));

export class SurprisePlot {
  constructor(container) {
    this.container = container;
    this.binTokens = 64;
    this.chart = new globalThis.uPlot(this.options(), [[], [], []], container);
    new ResizeObserver(() => this.fit()).observe(container);
    this.clear(this.binTokens);
  }

  options() {
    return {
      width: this.width(),
      height: HEIGHT,
      scales: { x: { time: false } },
      cursor: { drag: { x: false, y: false } },
      series: [
        { label: "tokens", value: (_, start) => (start == null ? "–" : `${start}–${start + this.binTokens - 1}`) },
        { label: "loss (nats)", scale: "loss", stroke: LOSS, width: 1.5, value: (_, v) => number(v) },
        { label: "write strength", scale: "strength", stroke: STRENGTH, width: 1.5, value: (_, v) => number(v) },
      ],
      axes: [
        { label: "tokens into the document" },
        { scale: "loss", label: "loss (nats)", stroke: LOSS },
        { scale: "strength", side: 1, label: "write strength", stroke: STRENGTH, grid: { show: false } },
      ],
    };
  }

  width() {
    return Math.max(320, this.container.clientWidth);
  }

  fit() {
    if (this.width() !== this.chart.width) this.chart.setSize({ width: this.width(), height: HEIGHT });
  }

  /** An empty plot for a new document, binned by ``binTokens``. */
  clear(binTokens) {
    this.binTokens = binTokens;
    this.x = [];
    this.loss = [];
    this.strength = [];
    this.show();
  }

  /** The bins of one progress event: bin ``firstBin + i`` holds ``loss[i]`` and ``strength[i]``. */
  add(firstBin, loss = [], strength = []) {
    const count = Math.max(loss.length, strength.length);
    for (let i = 0; i < count; i++) {
      const bin = firstBin + i;
      while (this.x.length < bin) this.put(this.x.length, null, null); // a gap, should one ever come
      this.put(bin, loss[i] ?? null, strength[i] ?? null);
    }
    if (count) this.show();
  }

  put(bin, loss, strength) {
    this.x[bin] = bin * this.binTokens;
    this.loss[bin] = loss;
    this.strength[bin] = strength;
  }

  show() {
    this.chart.setData([this.x, this.loss, this.strength]);
    this.container.dataset.points = String(this.chart.data[0].length); // what the chart holds
  }
}
