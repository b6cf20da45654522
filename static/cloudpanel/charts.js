// Bar charts of money: each <canvas data-chart="ID"> draws the series in the JSON script #ID
// ({labels, series: [{label, data}]}, amounts as decimal strings), stacked when there are several.
(function () {
  "use strict";
  const COLOURS = ["#0d6efd", "#198754", "#fd7e14", "#6f42c1", "#20c997", "#dc3545", "#0dcaf0", "#ffc107",
                   "#6c757d", "#d63384"];
  document.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
    const data = JSON.parse(document.getElementById(canvas.dataset.chart).textContent);
    const currency = canvas.dataset.currency || "";
    const stacked = data.series.length > 1;
    new Chart(canvas, {
      type: "bar",
      data: {
        labels: data.labels,
        datasets: data.series.map(function (s, i) {
          return { label: s.label, data: s.data.map(Number), backgroundColor: COLOURS[i % COLOURS.length] };
        }),
      },
      options: {
        animation: false, maintainAspectRatio: false,
        scales: { x: { stacked: stacked }, y: { stacked: stacked, beginAtZero: true,
                  title: { display: Boolean(currency), text: currency } } },
        plugins: {
          legend: { display: stacked },
          tooltip: { callbacks: { label: function (c) {
            return (stacked ? c.dataset.label + ": " : "") + data.series[c.datasetIndex].data[c.dataIndex] + " " + currency;
          } } },
        },
      },
    });
  });
})();
