//! A log-log line chart with horizontal reference lines, drawn as SVG by `plotters`.

use std::error::Error;
use std::io;

use plotters::element::DashedPathElement;
use plotters::prelude::*;

/// One line of the chart: a name and its points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend entry.
    pub name: String,
    /// `(x, y)` points; joined in order of `x`. Points that are not positive are left out, a log
    /// scale has no place for them.
    pub points: Vec<(f64, f64)>,
}

/// A horizontal dashed line across the chart, such as a baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    /// Label written on the line and in the legend.
    pub name: String,
    /// Height of the line, in units of the y axis.
    pub value: f64,
}

/// A chart with logarithmic x and y axes.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLogPlot {
    /// First line of the heading.
    pub title: String,
    /// Second line of the heading, smaller.
    pub subtitle: String,
    /// Caption of the x axis.
    pub x_label: String,
    /// Caption of the y axis.
    pub y_label: String,
    /// The x axis spans at least these values (widened to whole decades and to every point).
    pub x_span: (f64, f64),
    /// The lines, with markers on their points.
    pub series: Vec<Series>,
    /// The horizontal reference lines.
    pub references: Vec<Reference>,
}

/// Size of the chart, without the legend, which is right of it and as wide as its longest
/// entry needs.
const CHART: (u32, u32) = (760, 600);
/// A generous average width of a legend character, in pixels, to size the legend.
const CHAR_WIDTH: f64 = 7.5;
/// Legend: where its text starts, right of the line sample; the height of one entry.
const LEGEND_TEXT: i32 = 46;
const LEGEND_ROW: i32 = 22;

/// Colours of the series, in order (repeated beyond ten): the usual categorical palette.
const COLOURS: [RGBColor; 10] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x7f, 0x7f, 0x7f),
    RGBColor(0xbc, 0xbd, 0x22),
    RGBColor(0x17, 0xbe, 0xcf),
];

/// Colours and dash lengths of the reference lines, in order (repeated), so that two close
/// references can be told apart.
const REFERENCE_STYLES: [(RGBColor, u32); 3] = [
    (RGBColor(0x33, 0x33, 0x33), 8),
    (RGBColor(0x77, 0x77, 0x77), 3),
    (RGBColor(0x55, 0x55, 0x55), 14),
];

/// Whether `v` has a place on a log axis.
fn positive(v: f64) -> bool {
    v.is_finite() && v > 0.0
}

/// The decades `(lo, hi)` as exponents of 10 that hold `span` and every value of `values`
/// that is positive; `(0, 1)` when nothing is.
fn decades(span: (f64, f64), values: impl Iterator<Item = f64>) -> (i32, i32) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.chain([span.0, span.1]).filter(|v| positive(*v)) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if lo > hi {
        return (0, 1);
    }
    let lo = lo.log10().floor() as i32;
    let hi = (hi.log10().ceil() as i32).max(lo + 1);
    (lo, hi)
}

/// A tick value written short, to three significant digits: `1`, `20`, `500`, `2k`, `1.5M`,
/// `10G`; below 1 as it is (`0.5`).
fn short(value: f64) -> String {
    const UNITS: [(f64, &str); 4] = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")];
    let (scaled, unit) = UNITS
        .iter()
        .find(|(size, _)| value >= *size)
        .map_or((value, ""), |&(size, unit)| (value / size, unit));
    // `{}` of an f64 drops trailing zeros; rounding to 3 significant digits first keeps
    // 2000.0000001 from printing as `2.0000000001k`.
    let digits = 3 - (scaled.abs().max(1e-12).log10().floor() as i32 + 1);
    let scale = 10f64.powi(digits.max(0));
    format!("{}{unit}", (scaled * scale).round() / scale)
}

/// A series' points that have a place on the chart, in order of `x`.
fn plottable(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut points: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|&(x, y)| positive(x) && positive(y))
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    points
}

impl LogLogPlot {
    /// The chart as a standalone SVG document.
    ///
    /// # Errors
    ///
    /// What `plotters` reports while drawing (it draws into a string, so nothing is
    /// expected).
    ///
    /// # Examples
    ///
    /// ```
    /// use demandflow_benches::{LogLogPlot, Reference, Series};
    ///
    /// let plot = LogLogPlot {
    ///     title: "throughput".into(),
    ///     subtitle: "median of 9 runs".into(),
    ///     x_label: "max_demand".into(),
    ///     y_label: "events/s".into(),
    ///     x_span: (1.0, 10_000.0),
    ///     series: vec![Series { name: "P->C".into(), points: vec![(1.0, 2e5), (10.0, 2e6)] }],
    ///     references: vec![Reference { name: "crossbeam".into(), value: 5e8 }],
    /// };
    /// let svg = plot.to_svg().unwrap();
    /// assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    /// assert!(svg.contains("P-&gt;C") && svg.contains("crossbeam"));
    /// ```
    pub fn to_svg(&self) -> io::Result<String> {
        let mut svg = String::new();
        self.draw(&mut svg)
            .map_err(|err| io::Error::other(format!("drawing the plot: {err}")))?;
        Ok(svg)
    }

    fn draw(&self, svg: &mut String) -> Result<(), Box<dyn Error>> {
        let points = || self.series.iter().flat_map(|s| s.points.iter());
        let (x_lo, x_hi) = decades(self.x_span, points().map(|p| p.0));
        let y_values = points()
            .map(|p| p.1)
            .chain(self.references.iter().map(|r| r.value));
        let (y_lo, y_hi) = decades((f64::NAN, f64::NAN), y_values);
        let (x_lo, x_hi) = (10f64.powi(x_lo), 10f64.powi(x_hi));
        let (y_lo, y_hi) = (10f64.powi(y_lo), 10f64.powi(y_hi));

        let longest = self
            .series
            .iter()
            .map(|s| s.name.chars().count())
            .chain(self.references.iter().map(|r| r.name.chars().count()))
            .max()
            .unwrap_or(0);
        let legend_width = (f64::from(LEGEND_TEXT) + CHAR_WIDTH * longest as f64 + 30.0) as u32;
        let root =
            SVGBackend::with_string(svg, (CHART.0 + legend_width, CHART.1)).into_drawing_area();
        root.fill(&WHITE)?;
        let (chart_area, legend_area) = root.split_horizontally(CHART.0);
        let chart_area = chart_area
            .titled(
                &self.title,
                ("sans-serif", 20).into_font().style(FontStyle::Bold),
            )?
            .titled(
                &self.subtitle,
                ("sans-serif", 13)
                    .into_font()
                    .color(&RGBColor(0x55, 0x55, 0x55)),
            )?;

        let mut chart = ChartBuilder::on(&chart_area)
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d((x_lo..x_hi).log_scale(), (y_lo..y_hi).log_scale())?;
        chart
            .configure_mesh()
            .x_desc(self.x_label.as_str())
            .y_desc(self.y_label.as_str())
            .x_label_formatter(&|v| short(*v))
            .y_label_formatter(&|v| short(*v))
            .label_style(("sans-serif", 12))
            .axis_desc_style(("sans-serif", 13))
            .draw()?;

        // Reference lines first, so that the series are drawn over them; each labelled on the
        // line, at alternate ends so that the labels of two close references do not overlap.
        for (i, reference) in self.references.iter().enumerate() {
            if !positive(reference.value) {
                continue;
            }
            let (colour, dash) = REFERENCE_STYLES[i % REFERENCE_STYLES.len()];
            chart.draw_series(DashedLineSeries::new(
                [(x_lo, reference.value), (x_hi, reference.value)],
                dash,
                4,
                colour.stroke_width(2),
            ))?;
            let font = ("sans-serif", 12).into_font().color(&colour);
            let text = reference.name.clone();
            let (anchor, offset) = if i % 2 == 0 {
                (
                    x_hi,
                    (-(CHAR_WIDTH * text.chars().count() as f64) as i32 - 6, -16),
                )
            } else {
                (x_lo, (6, -16))
            };
            chart.draw_series(std::iter::once(
                EmptyElement::at((anchor, reference.value)) + Text::new(text, offset, font),
            ))?;
        }

        // Series: a line through the points, a marker on each.
        for (i, series) in self.series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let points = plottable(&series.points);
            chart.draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))?;
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, colour.filled())))?;
        }

        // Legend, right of the chart: the series, then the references.
        let font = ("sans-serif", 12).into_font();
        let mut y = 100;
        for (i, series) in self.series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            legend_area.draw(&PathElement::new(
                vec![(0, y), (28, y)],
                colour.stroke_width(2),
            ))?;
            legend_area.draw(&Circle::new((14, y), 4, colour.filled()))?;
            legend_area.draw(&Text::new(
                series.name.clone(),
                (LEGEND_TEXT, y - 7),
                font.clone(),
            ))?;
            y += LEGEND_ROW;
        }
        for (i, reference) in self.references.iter().enumerate() {
            let (colour, dash) = REFERENCE_STYLES[i % REFERENCE_STYLES.len()];
            legend_area.draw(&DashedPathElement::new(
                [(0, y), (28, y)],
                dash,
                4,
                colour.stroke_width(2),
            ))?;
            legend_area.draw(&Text::new(
                reference.name.clone(),
                (LEGEND_TEXT, y - 7),
                font.clone(),
            ))?;
            y += LEGEND_ROW;
        }
        root.present()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decades_hold_the_span_and_every_positive_value() {
        assert_eq!(decades((1.0, 10_000.0), [].into_iter()), (0, 4));
        assert_eq!(
            decades((1.0, 10_000.0), [3e4, 0.0, -1.0].into_iter()),
            (0, 5)
        );
        assert_eq!(
            decades((f64::NAN, f64::NAN), [2e8, 7e8].into_iter()),
            (8, 9)
        );
        assert_eq!(decades((f64::NAN, f64::NAN), [1e8].into_iter()), (8, 9));
        assert_eq!(decades((f64::NAN, f64::NAN), [].into_iter()), (0, 1));
    }

    #[test]
    fn tick_labels_are_short() {
        let labels: Vec<String> = [1.0, 20.0, 500.0, 2e3, 1.5e6, 1e10, 0.5, 2_000.000_000_1]
            .into_iter()
            .map(short)
            .collect();
        assert_eq!(labels, ["1", "20", "500", "2k", "1.5M", "10G", "0.5", "2k"]);
    }

    #[test]
    fn points_off_the_log_scale_are_left_out_and_the_rest_sorted() {
        let points = [
            (10.0, 1e6),
            (1.0, 1e5),
            (100.0, 0.0),
            (f64::NAN, 1.0),
            (5.0, -1.0),
        ];
        assert_eq!(plottable(&points), [(1.0, 1e5), (10.0, 1e6)]);
    }

    #[test]
    fn names_are_escaped_and_every_series_and_reference_is_drawn() {
        let plot = LogLogPlot {
            title: "a <b> & c".into(),
            subtitle: String::new(),
            x_label: "x".into(),
            y_label: "y".into(),
            x_span: (1.0, 10_000.0),
            series: vec![
                Series {
                    name: "P->C".into(),
                    points: vec![(10.0, 1e6), (1.0, 1e5), (100.0, 0.0)],
                },
                Series {
                    name: "P->2C broadcast".into(),
                    points: vec![(1.0, 2e5)],
                },
            ],
            references: vec![Reference {
                name: "crossbeam_batched_1000".into(),
                value: 5e8,
            }],
        };
        let svg = plot.to_svg().unwrap();
        assert!(svg.contains("a &lt;b&gt; &amp; c"), "{svg}");
        assert!(svg.contains("P-&gt;C") && svg.contains("P-&gt;2C broadcast"));
        // The reference's name on its line and in the legend.
        assert_eq!(svg.matches("crossbeam_batched_1000").count(), 2);
        // Markers: two points of the first series (the zero is left out), one of the second,
        // and one per series in the legend.
        assert_eq!(svg.matches("<circle").count(), 2 + 1 + 2);
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }
}
