/**
 * Charts on top of uPlot (the vendored `uPlot.iife.min.js` defines the
 * global `uPlot`): a small sparkline of rates and a time-series chart with
 * one line per group. Both follow their container's width.
 *
 * @module
 */

/** How many line colours there are, in order: `--c0` … `--c9` in dashboard.css. */
export const PALETTE_SIZE = 10;

/** The system's dark colour scheme, which dashboard.css follows; charts are redrawn as it changes. */
const DARK_SCHEME = globalThis.matchMedia("(prefers-color-scheme: dark)");

/**
 * The colours a chart draws with, read from dashboard.css's custom properties as the page's
 * scheme (light or dark) sets them now: lines in order, the rest summed, axis text, grid and the
 * partial shading.
 */
function chartColours() {
  const style = globalThis.getComputedStyle(globalThis.document.documentElement);
  const read = (name) => style.getPropertyValue(name).trim();
  return {
    lines: Array.from({ length: PALETTE_SIZE }, (_, i) => read(`--c${i}`)),
    rest: read("--cx"),
    axis: read("--axis"),
    grid: read("--grid"),
    partial: read("--partial-fill"),
  };
}

/** Calls `redraw` whenever the colour scheme changes; returns what stops it. */
function followScheme(redraw) {
  DARK_SCHEME.addEventListener("change", redraw);
  return () => DARK_SCHEME.removeEventListener("change", redraw);
}

function widthOf(element) {
  return Math.max(120, Math.floor(element.clientWidth));
}

/** Redraws `chart` at its container's width whenever that changes. */
function followWidth(element, chart) {
  const observer = new globalThis.ResizeObserver(() => {
    const width = widthOf(element);
    if (width !== chart.width) chart.setSize({ width, height: chart.height });
  });
  observer.observe(element);
  return observer;
}

/**
 * A sparkline of several series over time (no axes, no legend): `labels`
 * name the series, `update(data)` takes `[times in seconds, series…]`, `destroy()` removes it.
 */
export function sparkline(element, labels, { height = 56 } = {}) {
  let chart = null;
  let observer = null;
  /** Makes the chart, in the scheme's colours, holding `data`. */
  function build(data) {
    observer?.disconnect();
    chart?.destroy();
    const { lines } = chartColours();
    chart = new globalThis.uPlot(
      {
        width: widthOf(element),
        height,
        legend: { show: false },
        cursor: { show: false },
        select: { show: false },
        scales: {
          x: { time: true },
          // A little room below zero, so a line at rest stays visible.
          y: { range: (_u, _min, max) => [-0.05 * Math.max(1, max), 1.1 * Math.max(1, max)] },
        },
        axes: [{ show: false }, { show: false }],
        series: [
          {},
          ...labels.map((label, i) => ({
            label,
            stroke: lines[i % PALETTE_SIZE],
            width: 1.5,
            points: { show: false },
          })),
        ],
      },
      data,
      element,
    );
    observer = followWidth(element, chart);
  }
  build([[], ...labels.map(() => [])]);
  const unfollow = followScheme(() => build(chart.data));
  return {
    update(data) {
      chart.setData(data);
    },
    /** Removes the chart and stops following its container's width and the colour scheme. */
    destroy() {
      unfollow();
      observer.disconnect();
      chart.destroy();
    },
  };
}

/**
 * Lets the keyboard show and hide a line as a click on its legend entry does (uPlot listens to
 * clicks only): each entry's label is a toggle button, pressed while its line is shown. Each label
 * holds its whole text in its title too: the stylesheet cuts a long one to a line.
 */
function legendKeys(chart) {
  const rows = chart.root.querySelectorAll(".u-legend .u-series");
  rows.forEach((row, i) => {
    const label = row.querySelector(".u-label");
    // Row 0 is the window start, no line.
    if (i === 0 || !label) return;
    label.title = label.textContent;
    label.tabIndex = 0;
    label.setAttribute("role", "button");
    label.setAttribute("aria-pressed", String(chart.series[i].show));
    label.addEventListener("keydown", (event) => {
      if (event.key !== "Enter" && event.key !== " ") return;
      event.preventDefault();
      // Bubbles to the entry, whose click uPlot handles.
      label.click();
    });
  });
}

/** Keeps each legend toggle's `aria-pressed` as its line's shown state. */
function pressedFollowsShown(chart) {
  const labels = chart.root.querySelectorAll(".u-legend .u-series .u-label");
  chart.series.forEach((series, i) => {
    if (i > 0) labels[i]?.setAttribute("aria-pressed", String(series.show));
  });
}

/** The dash of the line of the rest summed, in its legend marker too. */
const REST_DASH = [6, 4];

/**
 * A time-series chart whose lines (one per group) may change:
 * `update({labels, data, partial, rest})` redraws it, rebuilding it when the set of
 * lines changed; the windows whose starts (seconds) `partial` lists are shaded behind the lines.
 * With `rest` the last line is the rest of the groups summed: dashed, in a colour (`--cx`) no
 * group's line takes, so it stays apart from a group whose label reads the same, and from the
 * 1st group's colour when 10 groups are drawn.
 */
export function groupChart(element, { height = 220, stepMs = 60_000, valueLabel = "value" } = {}) {
  // At least 12 windows wide, from the data itself: with a single point
  // uPlot would hand the range function a span of about 1000 days.
  const step = stepMs / 1000;
  function xRange(u) {
    const starts = u.data[0];
    const last = starts.length ? starts[starts.length - 1] : Date.now() / 1000;
    const first = starts.length ? starts[0] : last;
    return [Math.min(first, last - 11 * step) - step / 2, last + step / 2];
  }
  let chart = null;
  let observer = null;
  let shown = "";
  let partial = [];
  let colours = chartColours();

  /** Shades the partial windows, a window wide around their points, behind the lines. */
  function shadePartial(u) {
    const bands = [];
    if (partial.length > 0) {
      const { ctx, bbox } = u;
      ctx.save();
      ctx.fillStyle = colours.partial;
      for (const start of partial) {
        const left = Math.max(bbox.left, u.valToPos(start - step / 2, "x", true));
        const right = Math.min(bbox.left + bbox.width, u.valToPos(start + step / 2, "x", true));
        if (right <= left) continue;
        ctx.fillRect(left, bbox.top, right - left, bbox.height);
        bands.push([Math.round(left), Math.round(right)]);
      }
      ctx.restore();
    }
    // Where (canvas pixels) the shading is, for whoever inspects the page.
    element.dataset.partialBands = JSON.stringify(bands);
  }

  function build(labels, data, rest) {
    observer?.disconnect();
    chart?.destroy();
    colours = chartColours();
    const axis = {
      stroke: colours.axis,
      grid: { stroke: colours.grid },
      ticks: { stroke: colours.grid },
    };
    chart = new globalThis.uPlot(
      {
        width: widthOf(element),
        height,
        scales: { x: { time: true, range: xRange } },
        hooks: {
          // What the x axis spans (seconds), for whoever inspects the page.
          setScale: [(u, key) => {
            if (key === "x") {
              element.dataset.xRange = JSON.stringify([u.scales.x.min, u.scales.x.max]);
            }
          }],
          drawClear: [shadePartial],
          setSeries: [pressedFollowsShown],
        },
        axes: [axis, { ...axis, size: 60 }],
        legend: { markers: { dash: (u, i) => u.series[i].dash ? "dashed" : "solid" } },
        series: [
          { label: "window start" },
          ...labels.map((label, i) => {
            const isRest = rest && i === labels.length - 1;
            return {
              label,
              class: isRest ? "rest" : undefined,
              stroke: isRest ? colours.rest : colours.lines[i % PALETTE_SIZE],
              dash: isRest ? REST_DASH : undefined,
              width: 2,
              points: { size: 5 },
              value: (_u, value) => value === null || value === undefined ? "—" : String(value),
            };
          }),
        ],
      },
      data,
      element,
    );
    chart.root.setAttribute("aria-label", `${valueLabel} per window, one line per group`);
    legendKeys(chart);
    observer = followWidth(element, chart);
    shown = JSON.stringify([labels, rest]);
  }

  // A scheme change redraws the lines, axes and legend in its colours.
  const unfollow = followScheme(() => {
    if (!chart) return;
    const [labels, rest] = JSON.parse(shown);
    build(labels, chart.data, rest);
  });

  return {
    update({ labels, data, partial: starts = [], rest = false }) {
      partial = starts;
      if (!chart || JSON.stringify([labels, rest]) !== shown) build(labels, data, rest);
      else chart.setData(data);
    },
    /** Removes the chart and stops following its container's width and the colour scheme. */
    destroy() {
      unfollow();
      observer?.disconnect();
      chart?.destroy();
      chart = null;
    },
  };
}
