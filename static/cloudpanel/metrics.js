// Resource charts of a host or an instance: #metrics names the chart API; each canvas[data-metric-chart] draws
// some of its columns. The hour range grows live from the status websocket's "metrics" events.
(function () {
  "use strict";
  const root = document.getElementById("metrics");
  if (!root || typeof Chart === "undefined") return;
  const BYTES = ["B", "KiB", "MiB", "GiB", "TiB"];
  const SERIES = {
    instance: {
      cpu: [["cpu", "CPU %", "#0d6efd"]],
      memory: [["memory_used", "used", "#198754"], ["memory_total", "total", "#6c757d"]],
      disk: [["disk_read", "read", "#0d6efd"], ["disk_write", "write", "#fd7e14"]],
      iops: [["disk_read_iops", "reads/s", "#0d6efd"], ["disk_write_iops", "writes/s", "#fd7e14"]],
      net: [["net_rx", "received", "#20c997"], ["net_tx", "sent", "#6f42c1"]],
    },
    host: {
      cpu: [["cpu", "CPU %", "#0d6efd"]],
      memory: [["memory_used", "used", "#198754"], ["memory_total", "total", "#6c757d"]],
      load: [["running", "running", "#0d6efd"], ["vcpus", "their vCPUs", "#6f42c1"], ["guest_cpu", "CPUs they use", "#fd7e14"]],
      pool: [["pool_used", "allocated", "#fd7e14"], ["pool_capacity", "capacity", "#6c757d"]],
    },
  };
  const UNITS = { cpu: "%", memory: "bytes", disk: "bytes/s", net: "bytes/s", pool: "bytes", iops: "", load: "" };
  const MINUTE = 60000, DAY = 86400000;
  const SPANS = { hour: [60 * MINUTE, 10 * MINUTE], day: [DAY, 4 * 60 * MINUTE], week: [7 * DAY, DAY],
                  month: [30 * DAY, 5 * DAY], year: [365 * DAY, 30 * DAY] };  // how far back, and a tick every
  const of = root.dataset.metricsOf;
  const id = Number(root.dataset.metricsId);
  const note = root.querySelector("[data-metrics-note]");
  const charts = {};
  let range = "hour";
  let loaded = 0;

  function human(value, unit) {
    if (value === null || value === undefined) return "—";
    if (unit === "%") return value.toFixed(1) + " %";
    if (unit.startsWith("bytes")) {
      let i = 0;
      while (Math.abs(value) >= 1024 && i < BYTES.length - 1) { value /= 1024; i++; }
      return value.toFixed(i ? 1 : 0) + " " + BYTES[i] + (unit.endsWith("/s") ? "/s" : "");
    }
    return Number.isInteger(value) ? String(value) : value.toFixed(2);
  }

  function when(ms) {
    const date = new Date(ms);
    if (range === "hour" || range === "day") return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    if (range === "week") return date.toLocaleDateString([], { weekday: "short", day: "numeric" }) + " " +
      date.toLocaleTimeString([], { hour: "2-digit" });
    return date.toLocaleDateString([], { month: "short", day: "numeric" });
  }

  root.querySelectorAll("canvas[data-metric-chart]").forEach(function (canvas) {
    const name = canvas.dataset.metricChart;
    const unit = UNITS[name];
    charts[name] = new Chart(canvas, {
      type: "line",
      data: { datasets: SERIES[of][name].map(function (s) {
        return { label: s[1], field: s[0], data: [], borderColor: s[2], backgroundColor: s[2], pointRadius: 0,
                 borderWidth: 1.5, spanGaps: false };
      }) },
      options: {
        animation: false, maintainAspectRatio: false, parsing: false, normalized: true,
        interaction: { mode: "index", intersect: false },
        scales: {
          x: { type: "linear", ticks: { maxTicksLimit: 8, callback: function (v) { return when(v); } } },
          y: { beginAtZero: true, suggestedMax: unit === "%" ? 100 : unit.startsWith("bytes") ? 1024 : 1,
               ticks: { maxTicksLimit: 5, callback: function (v) { return human(v, unit); } } },
        },
        plugins: {
          legend: { display: SERIES[of][name].length > 1, labels: { boxWidth: 10 } },
          tooltip: { callbacks: {
            title: function (items) { return items.length ? new Date(items[0].parsed.x).toLocaleString() : ""; },
            label: function (c) { return c.dataset.label + ": " + human(c.parsed.y, unit); },
          } },
        },
      },
    });
  });

  function span(chart) {  // the whole range on the axis, up to now, whatever was sampled
    const x = chart.options.scales.x;
    x.max = Date.now();
    x.min = x.max - SPANS[range][0];
    x.ticks.stepSize = SPANS[range][1];
  }

  function draw(data) {
    Object.values(charts).forEach(function (chart) {
      chart.data.datasets.forEach(function (set) {
        set.data = data.t.map(function (t, i) { return { x: t, y: data[set.field][i] }; });
      });
      span(chart);
      chart.update();
    });
    note.textContent = data.t.length ? (data.bucket ? "Averages over " + data.bucket / 60 + " minutes." :
      "Each sample, live.") : "No samples in this range yet: a host's and its running instances' use is read every few seconds while the host is online.";
  }

  async function load() {
    const mine = ++loaded;
    const response = await fetch(root.dataset.metricsUrl + "?range=" + range, { headers: { Accept: "application/json" } });
    if (mine !== loaded) return;
    if (!response.ok) { note.textContent = "The charts could not be loaded (" + response.status + ")."; return; }
    draw(await response.json());
  }

  root.querySelectorAll("[data-range]").forEach(function (button) {
    button.addEventListener("click", function () {
      range = button.dataset.range;
      root.querySelectorAll("[data-range]").forEach(function (b) {
        b.classList.toggle("active", b === button);
        b.setAttribute("aria-pressed", b === button ? "true" : "false");
      });
      load();
    });
  });

  document.addEventListener("panel:event", function (e) {
    const event = e.detail;
    if (event.type !== "metrics" || event.of !== of || event.id !== id || range !== "hour") return;
    const since = Date.now() - 3600 * 1000;
    Object.values(charts).forEach(function (chart) {
      chart.data.datasets.forEach(function (set) {
        set.data.push({ x: event.point.t, y: event.point[set.field] });
        while (set.data.length && set.data[0].x < since) set.data.shift();
      });
      span(chart);
      chart.update("none");
    });
    note.textContent = "Each sample, live.";
  });

  load();
})();
