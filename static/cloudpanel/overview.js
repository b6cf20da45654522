// The instances-by-state doughnut; redrawn when live updates refresh the section.
(function () {
  "use strict";
  const COLOURS = ["#0dcaf0", "#6c757d", "#198754", "#ffc107", "#fd7e14", "#dc3545", "#b02a37"];
  let chart = null;
  function draw() {
    const data = JSON.parse(document.getElementById("status-data").textContent);
    const canvas = document.getElementById("status-chart");
    if (chart) chart.destroy();
    chart = null;
    if (!canvas) return;
    chart = new Chart(canvas, {
      type: "doughnut",
      data: { labels: data.labels, datasets: [{ data: data.values, backgroundColor: COLOURS }] },
      options: { animation: false, maintainAspectRatio: false, plugins: { legend: { position: "right" } } },
    });
  }
  draw();
  document.addEventListener("panel:refreshed", draw);
})();
