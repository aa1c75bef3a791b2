// The charts of report.html, drawn by BokehJS (inlined above this script) from the JSON in
// <script id="report-data">. Every figure is a root of one Bokeh document, so the timeline
// and the throughput chart share their time axis: zooming one zooms the other.
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("report-data").textContent);
  const plt = Bokeh.Plotting;
  const colours = data.colours;
  const roots = [];
  const elements = [];

  function place(fig, id) {
    const el = document.getElementById(id);
    if (el !== null) {
      roots.push(fig);
      elements.push(el);
    }
  }

  function figure(name, height, extra) {
    const fig = plt.figure(Object.assign({
      name: name,
      height: height,
      sizing_mode: "stretch_width",
      toolbar_location: "above",
      tools: "pan,wheel_zoom,box_zoom,reset,save",
    }, extra));
    fig.toolbar.logo = null;
    return fig;
  }

  function hover(renderer, tooltips, mode) {
    return new Bokeh.HoverTool({renderers: [renderer], tooltips: tooltips, mode: mode || "mouse"});
  }

  const tl = data.timeline;
  if (tl !== null) {
    const x = new Bokeh.Range1d({start: tl.start, end: tl.end, bounds: [tl.start, tl.end]});

    const tp = data.throughput;
    const tpFig = figure("throughput", 280, {x_range: x, y_axis_label: "records/s"});
    const tpSource = new Bokeh.ColumnDataSource({data: tp});
    const mbRange = new Bokeh.DataRange1d({start: 0});
    tpFig.extra_y_ranges = {mb: mbRange};
    // Before the MB/s axis exists: ``yaxis`` is every y axis of the figure.
    tpFig.yaxis.formatter = new Bokeh.NumeralTickFormatter({format: "0,0"});
    tpFig.add_layout(new Bokeh.LinearAxis({
      y_range_name: "mb",
      axis_label: "MB/s",
      formatter: new Bokeh.BasicTickFormatter(),
    }), "right");
    const recordsLine = tpFig.step({
      x: {field: "t"}, y: {field: "records"}, source: tpSource, mode: "after",
      line_width: 2, color: colours.done, legend_label: "records/s", name: "throughput-records",
    });
    const mbLine = tpFig.step({
      x: {field: "t"}, y: {field: "mb"}, source: tpSource, mode: "after", y_range_name: "mb",
      line_width: 2, color: colours.timeout, legend_label: "MB/s", name: "throughput-mb",
    });
    tpFig.y_range = new Bokeh.DataRange1d({start: 0, renderers: [recordsLine]});
    mbRange.renderers = [mbLine];
    tpFig.add_tools(hover(recordsLine, [
      ["seconds", "@t{0.00}"], ["records/s", "@records{0,0}"], ["MB/s", "@mb{0,0.0}"],
    ], "vline"));
    const tpLegend = tpFig.legend;
    tpLegend.orientation = "horizontal";
    tpFig.center = tpFig.center.filter(function (item) { return item !== tpLegend; });
    tpFig.add_layout(tpLegend, "above");
    place(tpFig, "chart-throughput");

    const bars = new Bokeh.ColumnDataSource({data: tl.bars});
    const tlFig = figure("timeline", 130 + 30 * tl.workers.length, {
      x_range: x,
      y_range: new Bokeh.FactorRange({factors: tl.workers.slice().reverse()}),
      x_axis_label: "seconds since the run started",
    });
    const barRenderer = tlFig.hbar({
      y: {field: "worker"}, left: {field: "start"}, right: {field: "end"}, height: 0.75,
      source: bars, fill_color: {field: "colour"}, line_color: {field: "colour"},
      hatch_pattern: {field: "pattern"}, hatch_color: "white", legend_field: "legend",
      name: "timeline-bars",
    });
    tlFig.add_tools(hover(barRenderer, [
      ["path", "@path"], ["range", "@range"], ["outcome", "@legend"], ["attempt", "@attempt"],
      ["tasks", "@tasks"], ["records", "@records{0,0}"], ["bytes read", "@bytes"],
      ["duration", "@duration"], ["worker", "@worker"], ["error", "@error"],
    ]));
    const legend = tlFig.legend;
    legend.orientation = "horizontal";
    legend.click_policy = "hide";
    tlFig.center = tlFig.center.filter(function (item) { return item !== legend; });
    tlFig.add_layout(legend, "above");  // beside the bars, never over them
    tlFig.ygrid.grid_line_color = null;
    place(tlFig, "chart-timeline");
  }

  const hist = data.durations;
  if (hist !== null) {
    const fig = figure("durations", 240, {x_axis_label: "seconds", y_axis_label: "tasks"});
    const r = fig.quad({
      left: {field: "left"}, right: {field: "right"}, top: {field: "count"}, bottom: 0,
      source: new Bokeh.ColumnDataSource({data: hist}), fill_color: colours.done,
      line_color: "white", name: "durations-bars",
    });
    fig.add_tools(hover(r, [["seconds", "@left{0.000}–@right{0.000}"], ["tasks", "@count"]]));
    fig.y_range = new Bokeh.DataRange1d({start: 0});
    fig.yaxis.ticker = new Bokeh.BasicTicker({min_interval: 1});  // counts: no half tasks
    fig.yaxis.formatter = new Bokeh.NumeralTickFormatter({format: "0,0"});
    place(fig, "chart-durations");
  }

  data.stats.forEach(function (stat, i) {
    const fig = figure("stat:" + stat.name, 60 + 22 * Math.max(stat.keys.length, 1), {
      y_range: new Bokeh.FactorRange({factors: stat.keys.slice().reverse()}),
      title: stat.title,
    });
    const r = fig.hbar({
      y: {field: "key"}, right: {field: "n"}, height: 0.7,
      source: new Bokeh.ColumnDataSource({data: {key: stat.keys, n: stat.counts}}),
      fill_color: colours.done, line_color: colours.done, name: "stat-bars:" + stat.name,
    });
    fig.add_tools(hover(r, [["key", "@key"], ["count", "@n{0,0}"]]));
    fig.x_range = new Bokeh.DataRange1d({start: 0});
    fig.xaxis.formatter = new Bokeh.NumeralTickFormatter({format: "0,0"});
    fig.ygrid.grid_line_color = null;
    place(fig, "chart-stat-" + i);
  });

  const hi = data.history;
  const historySource = new Bokeh.ColumnDataSource({data: hi});
  [
    ["history-duration", "duration", "seconds", "0,0.[00]"],
    ["history-records", "records", "records read", "0,0"],
  ]
    .forEach(function (chart) {
      const fig = figure(chart[0], 240, {
        x_range: new Bokeh.FactorRange({factors: hi.run}),
        y_axis_label: chart[2],
        title: chart[2] + " per run",
      });
      const r = fig.vbar({
        x: {field: "run"}, top: {field: chart[1]}, width: 0.8, source: historySource,
        fill_color: {field: "colour"}, line_color: {field: "colour"}, name: chart[0] + "-bars",
      });
      fig.add_tools(hover(r, [
        ["run", "@run"], ["status", "@status"], [chart[2], "@" + chart[1] + "{0,0.00}"],
      ]));
      fig.y_range = new Bokeh.DataRange1d({start: 0});
      fig.yaxis.formatter = new Bokeh.NumeralTickFormatter({format: chart[3]});
      if (hi.run.length > 20) {
        fig.xaxis.major_label_orientation = 0.8;
      }
      place(fig, "chart-" + chart[0]);
    });

  const doc = new Bokeh.Document();
  roots.forEach(function (fig) { doc.add_root(fig); });
  Bokeh.embed.add_document_standalone(doc, elements[0], elements);
})();
