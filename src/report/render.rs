//! Draws a [`Chart`] with plotters into `NAME.png` and `NAME.svg`, both written atomically.
//!
//! Text goes through plotters' `ab_glyph` path with DejaVu Sans embedded in the binary (the
//! `dejavu` crate), so rendering needs no system fonts and gives the same pixels everywhere
//! (DESIGN §6). Layout: title (and subtitle) on top, a grid of panels, one legend on the right
//! shared by all panels — outside the plots, so it never covers a line.

use super::chart::{Band, Chart, Panel, Rule, Series};
use super::palette::{Dash, Marker, Rgb, Shape, GREY};
use anyhow::{anyhow, ensure, Context, Result};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{register_font, FontStyle};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The two files of one figure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FigureSet {
    pub png: PathBuf,
    pub svg: PathBuf,
}

const FONT: &str = "sans-serif";
const TITLE_PX: f64 = 24.0;
const SUBTITLE_PX: f64 = 16.0;
const PANEL_TITLE_PX: f64 = 18.0;
const AXIS_DESC_PX: f64 = 16.0;
const TICK_PX: f64 = 14.0;
const LEGEND_PX: f64 = 15.0;
const LEGEND_ROW: i32 = 26;
const LEGEND_SAMPLE: i32 = 44;
const MARKER_R: i32 = 5;
const EDGE: u32 = 12;
/// Long series (spectra) get markers only at about this many points, to stay legible.
const MAX_MARKERS: usize = 12;

type DrawResult<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// Registers DejaVu Sans under plotters' "sans-serif" family for every style drawn (normal for
/// text, bold for titles; oblique/italic too so no style can miss a font at run time).
pub fn ensure_fonts() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        [
            (FontStyle::Normal, dejavu::sans::regular()),
            (FontStyle::Bold, dejavu::sans::bold()),
            (FontStyle::Oblique, dejavu::sans::oblique()),
            (FontStyle::Italic, dejavu::sans::oblique()),
        ]
        .into_iter()
        .all(|(style, bytes)| register_font(FONT, style, bytes).is_ok())
    });
    ensure!(ok, "the embedded DejaVu Sans font could not be registered with plotters");
    Ok(())
}

fn font(px: f64) -> TextStyle<'static> {
    (FONT, px).into_font().into()
}

fn bold(px: f64) -> TextStyle<'static> {
    (FONT, px, FontStyle::Bold).into_font().into()
}

fn text_width(style: &TextStyle, text: &str) -> u32 {
    style.font.box_size(text).map(|(w, _)| w).unwrap_or(0)
}

fn colour(c: Rgb) -> RGBColor {
    RGBColor(c.0, c.1, c.2)
}

/// Pixel geometry of a chart, computed once and shared by both backends.
struct Layout {
    size: (u32, u32),
    header: u32,
    panels_width: u32,
    legend: Vec<LegendEntry>,
}

/// One legend row: a line sample (with a marker for data series) and its label.
struct LegendEntry {
    label: String,
    colour: Rgb,
    dash: Dash,
    marker: Option<Marker>,
}

impl Layout {
    fn of(chart: &Chart) -> Result<Layout> {
        ensure!(!chart.panels.is_empty(), "a chart needs at least one panel");
        let columns = chart.columns.clamp(1, chart.panels.len()) as u32;
        let rows = chart.panels.len().div_ceil(columns as usize) as u32;
        let series = chart.panels.iter().flat_map(|p| &p.series).map(|s| LegendEntry {
            label: s.label.clone(),
            colour: s.style.colour,
            dash: s.style.dash,
            marker: Some(s.style.marker),
        });
        let rules = chart.panels.iter().flat_map(|p| &p.rules).filter(|r| r.in_legend).map(|r| LegendEntry {
            label: r.label.clone(),
            colour: GREY,
            dash: Dash::Dashed,
            marker: None,
        });
        let mut legend: Vec<LegendEntry> = Vec::new();
        for entry in series.chain(rules) {
            if !legend.iter().any(|e| e.label == entry.label) {
                legend.push(entry);
            }
        }
        let legend_text = font(LEGEND_PX);
        let legend_width = legend.iter().map(|e| text_width(&legend_text, &e.label)).max().map_or(0, |w| w + LEGEND_SAMPLE as u32 + 34);
        let header = 14 + TITLE_PX as u32 + chart.subtitle.as_ref().map_or(0, |_| 6 + SUBTITLE_PX as u32) + 8;
        let panels_width = columns * chart.panel_size.0;
        let title_width = text_width(&bold(TITLE_PX), &chart.title).max(chart.subtitle.as_ref().map_or(0, |s| text_width(&font(SUBTITLE_PX), s))) + 2 * EDGE;
        let legend_height = header + 30 + legend.len() as u32 * LEGEND_ROW as u32;
        let width = (EDGE + panels_width + legend_width + EDGE).max(title_width);
        let height = (header + rows * chart.panel_size.1 + EDGE).max(legend_height);
        Ok(Layout { size: (width, height), header, panels_width, legend })
    }
}

/// Draws `chart` into `dir/NAME.png` and `dir/NAME.svg` (creating `dir`), each atomically.
pub fn render(chart: &Chart, dir: &Path, name: &str) -> Result<FigureSet> {
    ensure_fonts()?;
    let layout = Layout::of(chart)?;
    let (w, h) = layout.size;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let files = FigureSet { png: dir.join(format!("{name}.png")), svg: dir.join(format!("{name}.svg")) };

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
        draw(&root, chart, &layout).and_then(|()| root.present()).map_err(|e| anyhow!("drawing {name}.svg: {e}"))?;
    }
    let mut rgb = vec![255u8; w as usize * h as usize * 3];
    {
        let root = super::glyphs::PngBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        draw(&root, chart, &layout).and_then(|()| root.present()).map_err(|e| anyhow!("drawing {name}.png: {e}"))?;
    }
    let png = encode_png(&rgb, w, h)?;
    crate::fsutil::write_atomic(&files.svg, svg.as_bytes())?;
    crate::fsutil::write_atomic(&files.png, &png)?;
    Ok(files)
}

/// RGB8 pixels → PNG bytes. No timestamp or other metadata, so equal pixels give equal files.
fn encode_png(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().context("encoding PNG header")?;
    writer.write_image_data(rgb).context("encoding PNG pixels")?;
    writer.finish().context("finishing PNG")?;
    Ok(bytes)
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, chart: &Chart, layout: &Layout) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let (w, _) = layout.size;
    let centre = (w / 2) as i32;
    root.draw(&Text::new(chart.title.clone(), (centre, 14), bold(TITLE_PX).pos(Pos::new(HPos::Center, VPos::Top))))?;
    if let Some(subtitle) = &chart.subtitle {
        let style = font(SUBTITLE_PX).color(&RGBColor(0x44, 0x44, 0x44)).pos(Pos::new(HPos::Center, VPos::Top));
        root.draw(&Text::new(subtitle.clone(), (centre, 14 + TITLE_PX as i32 + 6), style))?;
    }
    let body = root.margin(layout.header, EDGE, EDGE, EDGE);
    let (plots, legend) = body.split_horizontally(layout.panels_width);
    let columns = chart.columns.clamp(1, chart.panels.len());
    let rows = chart.panels.len().div_ceil(columns);
    for (panel, cell) in chart.panels.iter().zip(plots.split_evenly((rows, columns))) {
        draw_panel(&cell, panel)?;
    }
    draw_legend(&legend, &layout.legend)
}

fn draw_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, panel: &Panel) -> DrawResult<DB> {
    let (x0, x1) = panel.x.drawn_range();
    let (y0, y1) = panel.y.drawn_range();
    let (width, height) = area.dim_in_pixel();
    let x_ticks = panel.x.ticks((width / 80).max(2) as usize);
    let y_ticks = panel.y.ticks((height / 60).max(2) as usize);
    let tick_style = font(TICK_PX);
    let y_tick_width = y_ticks.iter().map(|t| text_width(&tick_style, &panel.y.tick_label(*t))).max().unwrap_or(0);
    let x_fmt = |v: &f64| panel.x.tick_label(*v);
    let y_fmt = |v: &f64| panel.y.tick_label(*v);

    let mut cc = ChartBuilder::on(area)
        .caption(&panel.title, bold(PANEL_TITLE_PX))
        .margin_top(4)
        .margin_right(16)
        .margin_left(4)
        .margin_bottom(4)
        .x_label_area_size(TICK_PX as u32 + AXIS_DESC_PX as u32 + 22)
        .y_label_area_size(y_tick_width + AXIS_DESC_PX as u32 + 22)
        .build_cartesian_2d(Ticked { lo: x0, hi: x1, ticks: x_ticks }, Ticked { lo: y0, hi: y1, ticks: y_ticks })?;
    cc.configure_mesh()
        .x_desc(panel.x.label.as_str())
        .y_desc(panel.y.label.as_str())
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .label_style(tick_style)
        .axis_desc_style(font(AXIS_DESC_PX))
        .bold_line_style(RGBColor(0xE4, 0xE4, 0xE4))
        .axis_style(RGBColor(0x55, 0x55, 0x55))
        .draw()?;

    for band in &panel.bands {
        draw_band(&mut cc, panel, band)?;
    }
    for rule in &panel.rules {
        draw_rule(&mut cc, panel, rule)?;
    }
    for series in &panel.series {
        draw_series(&mut cc, panel, series)?;
    }
    // Rule labels last, on a white patch, so that no line runs through them.
    for rule in panel.rules.iter().filter(|r| !r.in_legend) {
        draw_rule_label(&mut cc, panel, rule)?;
    }
    Ok(())
}

/// A linear f64 axis whose ticks (and grid lines) are exactly the ones given: plotters' own
/// `WithKeyPoints` wrapper cannot be used with `configure_mesh` on f64 axes in 0.3.7.
struct Ticked {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
}

impl Ranged for Ticked {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let share = (v - self.lo) / (self.hi - self.lo);
        let pixels = (limit.1 - limit.0) as f64 * share;
        // Same rounding as plotters' own f64 axes, so lines and grid agree pixel for pixel.
        limit.0 + if pixels >= 0.0 { (pixels + 1e-3).floor() } else { (pixels - 1e-3).ceil() } as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            vec![]
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        self.lo..self.hi
    }
}

type Cartesian<'a, DB> = ChartContext<'a, DB, Cartesian2d<Ticked, Ticked>>;

fn drawn(panel: &Panel, (x, y): (f64, f64)) -> Option<(f64, f64)> {
    let p = (panel.x.to_drawn(x), panel.y.to_drawn(y));
    (p.0.is_finite() && p.1.is_finite()).then_some(p)
}

fn draw_band<DB: DrawingBackend>(cc: &mut Cartesian<DB>, panel: &Panel, band: &Band) -> DrawResult<DB> {
    let upper: Vec<(f64, f64)> = band.points.iter().filter_map(|&(x, _, hi)| drawn(panel, (x, hi))).collect();
    let lower: Vec<(f64, f64)> = band.points.iter().rev().filter_map(|&(x, lo, _)| drawn(panel, (x, lo))).collect();
    if upper.len() < 2 || lower.len() < 2 {
        return Ok(());
    }
    let outline: Vec<(f64, f64)> = upper.into_iter().chain(lower).collect();
    cc.draw_series(std::iter::once(Polygon::new(outline, colour(band.colour).mix(0.2).filled())))?;
    Ok(())
}

fn draw_rule<DB: DrawingBackend>(cc: &mut Cartesian<DB>, panel: &Panel, rule: &Rule) -> DrawResult<DB> {
    let y = panel.y.to_drawn(rule.y);
    let (x0, x1) = panel.x.drawn_range();
    if !y.is_finite() {
        return Ok(());
    }
    let style = ShapeStyle { color: colour(GREY).to_rgba(), filled: false, stroke_width: 2 };
    cc.draw_series(DashedLineSeries::new([(x0, y), (x1, y)], 10, 6, style))?;
    Ok(())
}

fn draw_rule_label<DB: DrawingBackend>(cc: &mut Cartesian<DB>, panel: &Panel, rule: &Rule) -> DrawResult<DB> {
    let y = panel.y.to_drawn(rule.y);
    if !y.is_finite() {
        return Ok(());
    }
    let grey = colour(GREY);
    let text = font(TICK_PX).color(&grey).pos(Pos::new(HPos::Right, VPos::Bottom));
    let (w, h) = text.font.box_size(&rule.label).map(|(w, h)| (w as i32, h as i32)).unwrap_or((0, 0));
    let patch = Rectangle::new([(-10 - w, -7 - h), (-3, -3)], WHITE.mix(0.85).filled());
    cc.plotting_area().draw(&(EmptyElement::at((panel.x.drawn_range().1, y)) + patch + Text::new(rule.label.clone(), (-6, -5), text)))?;
    Ok(())
}

fn draw_series<DB: DrawingBackend>(cc: &mut Cartesian<DB>, panel: &Panel, series: &Series) -> DrawResult<DB> {
    let style = line_style(series.style.colour);
    // Split at points a figure cannot show (NaN, ≤ 0 on a log axis) rather than join across them.
    let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
    for &p in &series.points {
        match drawn(panel, p) {
            Some(q) => runs.last_mut().expect("never empty").push(q),
            None if runs.last().is_some_and(|r| !r.is_empty()) => runs.push(Vec::new()),
            None => {}
        }
    }
    for run in runs.iter().filter(|r| r.len() >= 2) {
        match series.style.dash {
            Dash::Solid => cc.draw_series(LineSeries::new(run.iter().copied(), style))?,
            Dash::Dashed => cc.draw_series(DashedLineSeries::new(run.iter().copied(), 10, 6, style))?,
            Dash::Dotted => cc.draw_series(DashedLineSeries::new(run.iter().copied(), 3, 5, style))?,
        };
    }
    let points: Vec<(f64, f64)> = runs.into_iter().flatten().collect();
    for p in marked(&points, panel.x.drawn_range()) {
        draw_marker(cc.plotting_area(), p, series.style.marker, series.style.colour)?;
    }
    Ok(())
}

/// The points that get a marker: all of them for short series; for long ones (spectra) about
/// `MAX_MARKERS`, evenly spaced along the drawn x axis (so also on a log axis).
fn marked(points: &[(f64, f64)], (x0, x1): (f64, f64)) -> Vec<(f64, f64)> {
    if points.len() <= 2 * MAX_MARKERS {
        return points.to_vec();
    }
    let spacing = (x1 - x0) / MAX_MARKERS as f64;
    let mut next = f64::NEG_INFINITY;
    let mut kept = Vec::new();
    for &p in points {
        if p.0 >= next {
            kept.push(p);
            next = p.0 + spacing;
        }
    }
    kept
}

fn line_style(c: Rgb) -> ShapeStyle {
    ShapeStyle { color: colour(c).to_rgba(), filled: false, stroke_width: 2 }
}

/// Pixel outline of a marker around (0, 0).
fn outline(shape: Shape) -> Vec<(i32, i32)> {
    let r = MARKER_R;
    match shape {
        Shape::Square => vec![(-r + 1, -r + 1), (r - 1, -r + 1), (r - 1, r - 1), (-r + 1, r - 1)],
        Shape::Triangle => vec![(0, -r - 1), (r + 1, r - 1), (-r - 1, r - 1)],
        Shape::Diamond => vec![(0, -r - 1), (r + 1, 0), (0, r + 1), (-r - 1, 0)],
        Shape::Circle | Shape::Cross => vec![],
    }
}

fn draw_marker<DB: DrawingBackend, CT: CoordTranslate>(area: &DrawingArea<DB, CT>, at: CT::From, marker: Marker, c: Rgb) -> DrawResult<DB>
where
    CT::From: Clone,
{
    let c = colour(c);
    let r = MARKER_R;
    match (marker.shape, marker.filled) {
        (Shape::Circle, true) => area.draw(&(EmptyElement::at(at) + Circle::new((0, 0), r, c.filled()))),
        (Shape::Circle, false) => area.draw(&(EmptyElement::at(at) + Circle::new((0, 0), r, WHITE.filled()) + Circle::new((0, 0), r, c.stroke_width(2)))),
        (Shape::Cross, _) => area.draw(
            &(EmptyElement::at(at) + PathElement::new(vec![(-r, -r), (r, r)], c.stroke_width(2)) + PathElement::new(vec![(-r, r), (r, -r)], c.stroke_width(2))),
        ),
        (shape, true) => area.draw(&(EmptyElement::at(at) + Polygon::new(outline(shape), c.filled()))),
        (shape, false) => {
            let mut closed = outline(shape);
            closed.push(closed[0]);
            area.draw(&(EmptyElement::at(at) + Polygon::new(outline(shape), WHITE.filled()) + PathElement::new(closed, c.stroke_width(2))))
        }
    }
}

fn draw_legend<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, entries: &[LegendEntry]) -> DrawResult<DB> {
    let text = font(LEGEND_PX).pos(Pos::new(HPos::Left, VPos::Center));
    let x0 = 16;
    for (i, entry) in entries.iter().enumerate() {
        let y = 34 + i as i32 * LEGEND_ROW;
        let line = line_style(entry.colour);
        let (dash, gap) = match entry.dash {
            Dash::Solid => (LEGEND_SAMPLE, 0),
            Dash::Dashed => (10, 6),
            Dash::Dotted => (3, 5),
        };
        let mut x = x0;
        while x < x0 + LEGEND_SAMPLE {
            area.draw(&PathElement::new(vec![(x, y), ((x + dash).min(x0 + LEGEND_SAMPLE), y)], line))?;
            x += dash + gap;
        }
        if let Some(marker) = entry.marker {
            draw_marker(area, (x0 + LEGEND_SAMPLE / 2, y), marker, entry.colour)?;
        }
        area.draw(&Text::new(entry.label.clone(), (x0 + LEGEND_SAMPLE + 10, y), text.clone()))?;
    }
    Ok(())
}
