//! The ramp as an SVG (`--plot`): p99 pacer lateness and CPU per packet against calls, one line
//! per system, drawn with plotters' SVG backend.

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::ramp::{MAX_P99, Step};

/// Size of the whole picture in pixels: two panels stacked.
const SIZE: (u32, u32) = (860, 760);
/// Colours of the systems, in `series` order (ringcast first).
const COLORS: [RGBColor; 3] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
];
const FONT: &str = "sans-serif";

/// The SVG text of the ramp of every `(system, steps)` in `series`. Steps whose value is not a
/// number (a step that could not connect its calls) are left out of that panel.
pub(crate) fn plot(series: &[(&str, &[Step])]) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let root = root
            .titled(
                "load ramp: streaming Opus calls through sfu-mock",
                (FONT, 20),
            )
            .map_err(|e| e.to_string())?;
        let (top, bottom) = root.split_vertically(SIZE.1 / 2 - 20);
        let target_ms = MAX_P99.as_secs_f64() * 1e3;
        panel(
            &top,
            series,
            "p99 pacer lateness",
            "p99 lateness (ms)",
            |s| s.p99_ms,
            Some((target_ms, "target: p99 < 2 ms")),
        )?;
        panel(
            &bottom,
            series,
            "CPU time of the load process per packet sent",
            "CPU per packet (ns)",
            |s| s.cpu_ns_per_packet,
            None,
        )?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// One chart: `value` of every step against its calls, a line and dots per system, an optional
/// dashed target line, axes with labels, and a legend.
fn panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    series: &[(&str, &[Step])],
    title: &str,
    y_label: &str,
    value: fn(&Step) -> f64,
    target: Option<(f64, &str)>,
) -> Result<(), String> {
    let max_calls = series
        .iter()
        .flat_map(|(_, steps)| steps.iter().map(|s| s.calls))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let max_value = series
        .iter()
        .flat_map(|(_, steps)| steps.iter().map(value))
        .filter(|v| v.is_finite())
        .fold(target.map_or(0.0, |(t, _)| t), f64::max);
    // Headroom above the highest point; a flat zero series still gets a visible range.
    let y_max = if max_value > 0.0 {
        max_value * 1.15
    } else {
        1.0
    };

    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 16))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..max_calls * 1.05, 0.0..y_max)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("concurrent calls")
        .y_desc(y_label)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| {
            if y_max >= 100.0 {
                format!("{y:.0}")
            } else {
                format!("{y:.1}")
            }
        })
        .axis_desc_style((FONT, 14))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(|e| e.to_string())?;

    for (i, (name, steps)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points: Vec<(f64, f64)> = steps
            .iter()
            .map(|s| (s.calls as f64, value(s)))
            .filter(|(_, v)| v.is_finite())
            .collect();
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(2))
            });
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(|e| e.to_string())?;
    }
    if let Some((target, label)) = target {
        let style = BLACK.mix(0.6).stroke_width(1);
        chart
            .draw_series(DashedLineSeries::new(
                [(0.0, target), (max_calls * 1.05, target)],
                6,
                4,
                style,
            ))
            .map_err(|e| e.to_string())?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font((FONT, 13))
        .draw()
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(calls: usize, p99_ms: f64, cpu: f64) -> Step {
        Step {
            calls,
            connected: calls,
            packets_sent: 1,
            packets_counted: 1,
            lost: 0,
            p50_ms: p99_ms / 2.0,
            p99_ms,
            max_ms: p99_ms,
            cpu_ns_per_packet: cpu,
            rss_kb_per_call: 1.0,
            heap_kb_per_call: 1.0,
            allocs_per_packet: 0.0,
            causes_p99_ms: None,
        }
    }

    #[test]
    fn the_svg_has_axes_labels_and_a_legend() {
        let ours = [step(20, 0.3, 2500.0), step(50, 0.4, 2100.0)];
        let theirs = [step(20, 0.9, 9000.0), step(50, f64::NAN, f64::NAN)];
        let svg = plot(&[("ringcast", &ours), ("tokio_per_call", &theirs)]).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80]);
        for text in [
            "concurrent calls",
            "p99 lateness (ms)",
            "CPU per packet (ns)",
            "ringcast",
            "tokio_per_call",
            "target: p99 &lt; 2 ms",
        ] {
            assert!(svg.contains(text), "no {text:?} in the SVG");
        }
        assert!(!svg.contains("NaN"), "a step without numbers is left out");
    }

    #[test]
    fn an_empty_ramp_still_draws() {
        let svg = plot(&[("ringcast", &[])]).unwrap();
        assert!(svg.contains("concurrent calls"));
    }
}
