//! A log-log line chart with horizontal reference lines, written as SVG by hand.

use std::fmt::Write as _;

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

// The chart area spans LEFT..RIGHT × TOP..BOTTOM; the legend is right of it, as wide as its
// longest entry needs.
const HEIGHT: f64 = 600.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 700.0;
const TOP: f64 = 80.0;
const BOTTOM: f64 = HEIGHT - 70.0;
/// Legend: line sample, then text at this offset from the legend's left edge.
const LEGEND_TEXT: f64 = 36.0;
/// A generous average width of a character at font-size 12, to size the legend.
const CHAR_WIDTH: f64 = 7.5;
/// Text drawn over the chart gets a white outline of this width, so lines do not hide it.
const HALO: &str = r#"stroke="white" stroke-width="4" paint-order="stroke""#;

/// Colours of the series, in order (repeated beyond ten).
const COLOURS: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

/// Colours and dash patterns of the reference lines, in order (repeated).
const REFERENCE_STYLES: [(&str, &str); 3] = [
    ("#333333", "8 4"),
    ("#777777", "3 3"),
    ("#333333", "12 3 3 3"),
];

/// The decades `(lo, hi)` as exponents of 10 that hold `span` and every value of `values`
/// that is positive; `(0, 1)` when nothing is.
fn decades(span: (f64, f64), values: impl Iterator<Item = f64>) -> (i32, i32) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values
        .chain([span.0, span.1])
        .filter(|v| v.is_finite() && *v > 0.0)
    {
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

/// `10^decade` written short: `1`, `100`, `10k`, `1M`, `10G`.
fn decade_label(decade: i32) -> String {
    const UNITS: [(i32, &str); 4] = [(12, "T"), (9, "G"), (6, "M"), (3, "k")];
    if decade < 0 {
        return format!("1e{decade}");
    }
    for (exponent, unit) in UNITS {
        if decade >= exponent {
            return format!("{}{unit}", 10u64.pow((decade - exponent) as u32));
        }
    }
    10u64.pow(decade as u32).to_string()
}

/// `text` with the characters that are special in XML escaped.
fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// One logarithmic axis: `decades` mapped onto the pixels `from..to`.
struct Axis {
    decades: (i32, i32),
    from: f64,
    to: f64,
}

impl Axis {
    fn pixel(&self, value: f64) -> f64 {
        let (lo, hi) = (f64::from(self.decades.0), f64::from(self.decades.1));
        self.from + (value.log10() - lo) / (hi - lo) * (self.to - self.from)
    }

    /// `(value, is_decade)` of every grid line: 1, 2, …, 9 times each decade, and the last decade.
    fn grid(&self) -> impl Iterator<Item = (f64, bool)> {
        let (lo, hi) = self.decades;
        (lo..hi)
            .flat_map(|d| (1..10).map(move |m| (f64::from(m) * 10f64.powi(d), m == 1)))
            .chain([(10f64.powi(hi), true)])
    }
}

impl LogLogPlot {
    /// The chart as a standalone SVG document.
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
    /// let svg = plot.to_svg();
    /// assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    /// assert!(svg.contains("P-&gt;C"));
    /// ```
    pub fn to_svg(&self) -> String {
        let points = || self.series.iter().flat_map(|s| s.points.iter());
        let x = Axis {
            decades: decades(self.x_span, points().map(|p| p.0)),
            from: LEFT,
            to: RIGHT,
        };
        let y_values = points()
            .map(|p| p.1)
            .chain(self.references.iter().map(|r| r.value));
        let y = Axis {
            decades: decades((f64::NAN, f64::NAN), y_values),
            from: BOTTOM,
            to: TOP,
        };

        let longest = self
            .series
            .iter()
            .map(|s| s.name.chars().count())
            .chain(self.references.iter().map(|r| r.name.chars().count()))
            .max()
            .unwrap_or(0);
        let width = (RIGHT + 20.0 + LEGEND_TEXT + CHAR_WIDTH * longest as f64 + 20.0).round();

        let mut svg = String::new();
        let out = &mut svg;
        // `write!` into a `String` cannot fail.
        let _ = writeln!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{HEIGHT}" viewBox="0 0 {width} {HEIGHT}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(out, "<title>{}</title>", xml_escape(&self.title));
        let _ = writeln!(
            out,
            r#"<rect width="{width}" height="{HEIGHT}" fill="white"/>"#
        );
        let _ = writeln!(
            out,
            r#"<text x="{LEFT}" y="30" font-size="18" font-weight="bold">{}</text>"#,
            xml_escape(&self.title)
        );
        let _ = writeln!(
            out,
            r##"<text x="{LEFT}" y="52" fill="#555">{}</text>"##,
            xml_escape(&self.subtitle)
        );

        // Grid and tick labels.
        for (value, decade) in x.grid() {
            let px = x.pixel(value);
            let (stroke, width) = if decade { ("#ccc", 1.0) } else { ("#eee", 0.5) };
            let _ = writeln!(
                out,
                r#"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{BOTTOM}" stroke="{stroke}" stroke-width="{width}"/>"#
            );
            if decade {
                let _ = writeln!(
                    out,
                    r#"<text x="{px:.1}" y="{}" text-anchor="middle">{}</text>"#,
                    BOTTOM + 18.0,
                    decade_label(value.log10().round() as i32)
                );
            }
        }
        for (value, decade) in y.grid() {
            let py = y.pixel(value);
            let (stroke, width) = if decade { ("#ccc", 1.0) } else { ("#eee", 0.5) };
            let _ = writeln!(
                out,
                r#"<line x1="{LEFT}" y1="{py:.1}" x2="{RIGHT}" y2="{py:.1}" stroke="{stroke}" stroke-width="{width}"/>"#
            );
            if decade {
                let _ = writeln!(
                    out,
                    r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
                    LEFT - 8.0,
                    py + 4.0,
                    decade_label(value.log10().round() as i32)
                );
            }
        }
        let _ = writeln!(
            out,
            r##"<rect x="{LEFT}" y="{TOP}" width="{}" height="{}" fill="none" stroke="#333"/>"##,
            RIGHT - LEFT,
            BOTTOM - TOP
        );
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            (LEFT + RIGHT) / 2.0,
            HEIGHT - 25.0,
            xml_escape(&self.x_label)
        );
        let _ = writeln!(
            out,
            r#"<text transform="translate(24 {}) rotate(-90)" text-anchor="middle">{}</text>"#,
            (TOP + BOTTOM) / 2.0,
            xml_escape(&self.y_label)
        );

        // Reference lines, each labelled on the line.
        for (i, reference) in self.references.iter().enumerate() {
            if !(reference.value.is_finite() && reference.value > 0.0) {
                continue;
            }
            let (colour, dash) = REFERENCE_STYLES[i % REFERENCE_STYLES.len()];
            let py = y.pixel(reference.value);
            let _ = writeln!(
                out,
                r#"<line x1="{LEFT}" y1="{py:.1}" x2="{RIGHT}" y2="{py:.1}" stroke="{colour}" stroke-width="1.5" stroke-dasharray="{dash}"/>"#
            );
            // Alternate ends, so that the labels of two close references do not overlap.
            let (label_x, anchor) = if i % 2 == 0 {
                (RIGHT - 6.0, "end")
            } else {
                (LEFT + 6.0, "start")
            };
            let _ = writeln!(
                out,
                r#"<text x="{label_x}" y="{:.1}" text-anchor="{anchor}" fill="{colour}" {HALO}>{}</text>"#,
                py - 5.0,
                xml_escape(&reference.name)
            );
        }

        // Series: a polyline through the points, a marker on each.
        for (i, series) in self.series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let mut points: Vec<(f64, f64)> = series
                .points
                .iter()
                .copied()
                .filter(|&(px, py)| px.is_finite() && px > 0.0 && py.is_finite() && py > 0.0)
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            let path: Vec<String> = points
                .iter()
                .map(|&(px, py)| format!("{:.1},{:.1}", x.pixel(px), y.pixel(py)))
                .collect();
            let _ = writeln!(
                out,
                r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
                path.join(" ")
            );
            for &(px, py) in &points {
                let _ = writeln!(
                    out,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="4" fill="{colour}"><title>{}: {px} → {py:.0}</title></circle>"#,
                    x.pixel(px),
                    y.pixel(py),
                    xml_escape(&series.name)
                );
            }
        }

        // Legend, right of the chart: the series, then the references.
        let legend_x = RIGHT + 20.0;
        let mut legend_y = TOP + 10.0;
        for (i, series) in self.series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let _ = writeln!(
                out,
                r#"<line x1="{legend_x}" y1="{legend_y}" x2="{}" y2="{legend_y}" stroke="{colour}" stroke-width="2"/>"#,
                legend_x + 28.0
            );
            let _ = writeln!(
                out,
                r#"<circle cx="{}" cy="{legend_y}" r="4" fill="{colour}"/>"#,
                legend_x + 14.0
            );
            let _ = writeln!(
                out,
                r#"<text x="{}" y="{}">{}</text>"#,
                legend_x + LEGEND_TEXT,
                legend_y + 4.0,
                xml_escape(&series.name)
            );
            legend_y += 22.0;
        }
        for (i, reference) in self.references.iter().enumerate() {
            let (colour, dash) = REFERENCE_STYLES[i % REFERENCE_STYLES.len()];
            let _ = writeln!(
                out,
                r#"<line x1="{legend_x}" y1="{legend_y}" x2="{}" y2="{legend_y}" stroke="{colour}" stroke-width="1.5" stroke-dasharray="{dash}"/>"#,
                legend_x + 28.0
            );
            let _ = writeln!(
                out,
                r#"<text x="{}" y="{}">{}</text>"#,
                legend_x + LEGEND_TEXT,
                legend_y + 4.0,
                xml_escape(&reference.name)
            );
            legend_y += 22.0;
        }
        svg.push_str("</svg>\n");
        svg
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
    fn decade_labels_are_short() {
        let labels: Vec<_> = (0..11).map(decade_label).collect();
        assert_eq!(
            labels,
            [
                "1", "10", "100", "1k", "10k", "100k", "1M", "10M", "100M", "1G", "10G"
            ]
        );
    }

    #[test]
    fn axes_map_decades_linearly_onto_pixels() {
        let axis = Axis {
            decades: (0, 4),
            from: 100.0,
            to: 500.0,
        };
        assert_eq!(axis.pixel(1.0), 100.0);
        assert_eq!(axis.pixel(100.0), 300.0);
        assert_eq!(axis.pixel(10_000.0), 500.0);
        assert_eq!(axis.grid().count(), 4 * 9 + 1);
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
        let svg = plot.to_svg();
        assert!(svg.contains("<title>a &lt;b&gt; &amp; c</title>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        // Markers: two points of the first series (the zero is left out), one of the second,
        // and one per series in the legend.
        assert_eq!(svg.matches("<circle").count(), 2 + 1 + 2);
        // The reference on the chart and in the legend.
        assert_eq!(svg.matches("stroke-dasharray").count(), 2);
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }
}
