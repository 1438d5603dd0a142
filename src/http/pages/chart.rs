//! Charts drawn as SVG on the server (no JavaScript): a bar chart and a line chart of one series,
//! for usage history (kWh or m³ per period) and similar.
//!
//! ```ignore
//! use meterpay::http::pages::chart::{bar_chart, line_chart, Point};
//! let points = vec![Point::new("1月", qty1.value()), Point::new("2月", qty2.value())];
//! html! { (bar_chart(ctx.lang, "近六个月用电", "kWh", &points)) }
//! ```
//!
//! Values are `rust_decimal::Decimal` (quantities are never floats here, not even for drawing):
//! geometry is computed in decimals and written with one decimal place. Negative values are drawn
//! as zero (usage is never negative; a correction shows in the table, not the chart). The chart
//! is accessible: `role="img"` labelled by its `<title>`, a `<desc>` listing every value, and a
//! `<title>` per bar/point; it scales to its container (`viewBox`, width 100%).

use maud::{html, Markup};
use rust_decimal::Decimal;

use super::i18n::Lang;

/// One labelled value.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub label: String,
    pub value: Decimal,
}

impl Point {
    pub fn new(label: impl Into<String>, value: Decimal) -> Point {
        Point {
            label: label.into(),
            value,
        }
    }
}

const W: i64 = 320;
const H: i64 = 180;
const LEFT: i64 = 40;
const RIGHT: i64 = 8;
const TOP: i64 = 12;
const BOTTOM: i64 = 28;

fn d(n: i64) -> Decimal {
    Decimal::from(n)
}

fn fmt(v: Decimal) -> String {
    v.round_dp(1).normalize().to_string()
}

/// The smallest "nice" number (1, 2 or 5 × 10ⁿ) at or above `v`, for the axis top.
pub fn nice_ceiling(v: Decimal) -> Decimal {
    if v <= Decimal::ZERO {
        return Decimal::ONE;
    }
    let mut step = Decimal::new(1, 4); // 0.0001
    loop {
        for m in [1, 2, 5] {
            let candidate = step * d(m);
            if candidate >= v {
                return candidate.normalize();
            }
        }
        step *= d(10);
    }
}

struct Frame {
    max: Decimal,
    plot_w: Decimal,
    plot_h: Decimal,
}

impl Frame {
    fn new(points: &[Point]) -> Frame {
        let max = points.iter().map(|p| p.value).max().unwrap_or_default();
        Frame {
            max: nice_ceiling(max),
            plot_w: d(W - LEFT - RIGHT),
            plot_h: d(H - TOP - BOTTOM),
        }
    }

    fn y(&self, v: Decimal) -> Decimal {
        let v = v.max(Decimal::ZERO);
        d(TOP) + self.plot_h - self.plot_h * v / self.max
    }
}

fn describe(lang: Lang, title: &str, unit: &str, points: &[Point]) -> String {
    let sep = match lang {
        Lang::Zh => "；",
        Lang::En => "; ",
    };
    let items: Vec<String> = points
        .iter()
        .map(|p| format!("{}: {} {unit}", p.label, p.value.normalize()))
        .collect();
    format!(
        "{title}{}{}",
        if lang == Lang::Zh { "：" } else { ": " },
        items.join(sep)
    )
}

fn frame_markup(f: &Frame, unit: &str, points: &[Point], slot: Decimal) -> Markup {
    let base = d(H - BOTTOM);
    html! {
        // axis and gridlines at 0, half and top
        @for frac in [Decimal::ZERO, Decimal::new(5, 1), Decimal::ONE] {
            @let v = f.max * frac;
            @let y = f.y(v);
            line x1=(LEFT) x2=(W - RIGHT) y1=(fmt(y)) y2=(fmt(y)) class="chart-grid" {}
            text x=(LEFT - 4) y=(fmt(y + d(4))) text-anchor="end" class="chart-axis" { (v.normalize()) }
        }
        text x=(LEFT) y=(TOP - 2) class="chart-axis" { (unit) }
        @for (i, p) in points.iter().enumerate() {
            @let cx = d(LEFT) + slot * d(i as i64) + slot / d(2);
            text x=(fmt(cx)) y=(fmt(base + d(16))) text-anchor="middle" class="chart-axis" { (p.label) }
        }
    }
}

fn empty(lang: Lang, title: &str) -> Markup {
    html! {
        figure.chart {
            figcaption { (title) }
            p.chart-empty { (lang.t("chart.no_data")) }
        }
    }
}

/// A bar chart of `points`, titled `title`, values in `unit`.
pub fn bar_chart(lang: Lang, title: &str, unit: &str, points: &[Point]) -> Markup {
    if points.is_empty() {
        return empty(lang, title);
    }
    let f = Frame::new(points);
    let slot = f.plot_w / d(points.len() as i64);
    let bar_w = slot * Decimal::new(6, 1);
    let id = chart_id(title, points);
    html! {
        figure.chart {
            svg viewBox=(format!("0 0 {W} {H}")) role="img" aria-labelledby=(format!("{id}-t {id}-d")) xmlns="http://www.w3.org/2000/svg" {
                title id=(format!("{id}-t")) { (title) }
                desc id=(format!("{id}-d")) { (describe(lang, title, unit, points)) }
                (frame_markup(&f, unit, points, slot))
                @for (i, p) in points.iter().enumerate() {
                    @let x = d(LEFT) + slot * d(i as i64) + (slot - bar_w) / d(2);
                    @let y = f.y(p.value);
                    rect.chart-bar x=(fmt(x)) y=(fmt(y)) width=(fmt(bar_w)) height=(fmt(d(H - BOTTOM) - y)) {
                        title { (p.label) ": " (p.value.normalize()) " " (unit) }
                    }
                }
            }
            figcaption { (title) }
        }
    }
}

/// A line chart of `points` (one series), titled `title`, values in `unit`.
pub fn line_chart(lang: Lang, title: &str, unit: &str, points: &[Point]) -> Markup {
    if points.is_empty() {
        return empty(lang, title);
    }
    let f = Frame::new(points);
    let slot = f.plot_w / d(points.len() as i64);
    let coords: Vec<(Decimal, Decimal)> = points
        .iter()
        .enumerate()
        .map(|(i, p)| (d(LEFT) + slot * d(i as i64) + slot / d(2), f.y(p.value)))
        .collect();
    let path: Vec<String> = coords.iter().map(|(x, y)| format!("{},{}", fmt(*x), fmt(*y))).collect();
    let id = chart_id(title, points);
    html! {
        figure.chart {
            svg viewBox=(format!("0 0 {W} {H}")) role="img" aria-labelledby=(format!("{id}-t {id}-d")) xmlns="http://www.w3.org/2000/svg" {
                title id=(format!("{id}-t")) { (title) }
                desc id=(format!("{id}-d")) { (describe(lang, title, unit, points)) }
                (frame_markup(&f, unit, points, slot))
                polyline.chart-line points=(path.join(" ")) fill="none" {}
                @for ((x, y), p) in coords.iter().zip(points) {
                    circle.chart-point cx=(fmt(*x)) cy=(fmt(*y)) r="3" {
                        title { (p.label) ": " (p.value.normalize()) " " (unit) }
                    }
                }
            }
            figcaption { (title) }
        }
    }
}

/// A stable id for the chart's title/desc (several charts may share a page).
fn chart_id(title: &str, points: &[Point]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(title.as_bytes());
    for p in points {
        h.update(p.label.as_bytes());
        h.update(p.value.to_string().as_bytes());
    }
    format!("chart-{}", &hex::encode(h.finalize())[..10])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pts(values: &[&str]) -> Vec<Point> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| Point::new(format!("{}月", i + 1), v.parse().unwrap()))
            .collect()
    }

    fn attr_values(svg: &str, element: &str, attr: &str) -> Vec<Decimal> {
        svg.split(&format!("<{element} "))
            .skip(1)
            .map(|chunk| {
                let v = chunk
                    .split(&format!("{attr}=\""))
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap();
                v.parse().unwrap()
            })
            .collect()
    }

    #[test]
    fn axis_tops_are_nice_numbers_at_or_above_the_maximum() {
        assert_eq!(nice_ceiling("87".parse().unwrap()), d(100));
        assert_eq!(nice_ceiling("100".parse().unwrap()), d(100));
        assert_eq!(nice_ceiling("101".parse().unwrap()), d(200));
        assert_eq!(nice_ceiling("3.2".parse().unwrap()), d(5));
        assert_eq!(nice_ceiling("0".parse().unwrap()), d(1));
    }

    #[test]
    fn bar_heights_are_proportional_to_the_values() {
        let svg = bar_chart(Lang::Zh, "用电", "kWh", &pts(&["50", "100", "25", "0"])).into_string();
        let heights = attr_values(&svg, "rect", "height");
        assert_eq!(heights.len(), 4, "{svg}");
        // plot height 140 and the axis top 100: 50 → 70, 100 → 140, 25 → 35, 0 → 0.
        assert_eq!(heights, vec![d(70), d(140), d(35), d(0)]);
    }

    #[test]
    fn a_chart_is_labelled_and_describes_every_value_for_screen_readers() {
        let svg = bar_chart(Lang::En, "Electricity", "kWh", &pts(&["12.5", "30"])).into_string();
        assert!(svg.contains(r#"role="img""#));
        assert!(svg.contains("<title id=\"chart-"), "{svg}");
        assert!(svg.contains("Electricity: 1月: 12.5 kWh; 2月: 30 kWh"), "{svg}");
        let labelled = svg
            .split("aria-labelledby=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        for id in labelled.split(' ') {
            assert!(svg.contains(&format!("id=\"{id}\"")), "{id} exists");
        }
    }

    #[test]
    fn labels_are_escaped() {
        let svg = bar_chart(Lang::En, "<b>", "m³", &[Point::new("<x>", d(1))]).into_string();
        assert!(!svg.contains("<b>") && !svg.contains("<x>"), "{svg}");
        assert!(svg.contains("&lt;x&gt;"));
    }

    #[test]
    fn a_line_chart_has_one_point_per_value_rising_with_it() {
        let svg = line_chart(Lang::Zh, "用水", "m³", &pts(&["1", "4", "2"])).into_string();
        let ys = attr_values(&svg, "circle", "cy");
        assert_eq!(ys.len(), 3);
        assert!(ys[1] < ys[2] && ys[2] < ys[0], "higher values are drawn higher: {ys:?}");
        assert!(svg.contains("<polyline"));
    }

    #[test]
    fn negative_values_are_drawn_as_zero_and_no_data_says_so() {
        let svg = bar_chart(Lang::En, "t", "kWh", &pts(&["-5", "10"])).into_string();
        assert_eq!(attr_values(&svg, "rect", "height")[0], d(0));
        let empty = bar_chart(Lang::En, "t", "kWh", &[]).into_string();
        assert!(empty.contains("No data yet") && !empty.contains("<svg"));
    }
}
