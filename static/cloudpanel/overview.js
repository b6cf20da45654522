// The instances-by-state doughnut; redrawn when live updates refresh the section.
(function () {
  "use strict";
  const COLOURS = { pending: "#0dcaf0", stopped: "#6c757d", running: "#198754", paused: "#ffc107",
                    suspended: "#fd7e14", crashed: "#dc3545", error: "#b02a37",
                    missing: "#6f42c1", unknown: "#212529" };
  let chart = null;
  function draw() {
    const data = JSON.parse(document.getElementById("status-data").textContent);
    const canvas = document.getElementById("status-chart");
    if (chart) chart.destroy();
    chart = null;
    if (!canvas) return;
    chart = new Chart(canvas, {
      type: "doughnut",
      data: { labels: data.labels, datasets: [{ data: data.values, backgroundColor: data.keys.map(function (k) { return COLOURS[k]; }) }] },
      options: { animation: false, maintainAspectRatio: false, plugins: { legend: { position: "right" } } },
    });
  }
  draw();
  document.addEventListener("panel:refreshed", draw);
})();
