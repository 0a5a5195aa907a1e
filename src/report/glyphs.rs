//! The PNG backend: plotters' `BitMapBackend` with text rasterised here, glyph by glyph, with
//! ab_glyph.
//!
//! Why: plotters 0.3.7's ab_glyph text path places each glyph at the pen position without its
//! left side bearing and truncates the pen to whole pixels, so letters after wide-bearing glyphs
//! drift apart ("m asked", "d_m odel"). Here each glyph is positioned at its exact sub-pixel pen
//! position and drawn with its own bounds. Anchoring, rotation and the text box width are the
//! same as plotters' (its `layout_box`), so everything plotters lays out around the text stays
//! where it was. Everything except text is passed to `BitMapBackend` unchanged.

use ab_glyph::{point, Font, FontRef, ScaleFont};
use plotters::prelude::BitMapBackend;
use plotters_backend::text_anchor::{HPos, VPos};
use plotters_backend::{BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingBackend, DrawingErrorKind, FontStyle};
use std::sync::OnceLock;

type Error = <BitMapBackend<'static> as DrawingBackend>::ErrorType;

pub struct PngBackend<'a> {
    inner: BitMapBackend<'a>,
}

impl<'a> PngBackend<'a> {
    /// Draws into an RGB8 buffer of `size.0 × size.1` pixels.
    pub fn with_buffer(buffer: &'a mut [u8], size: (u32, u32)) -> Self {
        PngBackend { inner: BitMapBackend::with_buffer(buffer, size) }
    }
}

fn face(style: FontStyle) -> &'static FontRef<'static> {
    static REGULAR: OnceLock<FontRef<'static>> = OnceLock::new();
    static BOLD: OnceLock<FontRef<'static>> = OnceLock::new();
    let (cell, bytes) = match style {
        FontStyle::Bold => (&BOLD, dejavu::sans::bold()),
        _ => (&REGULAR, dejavu::sans::regular()),
    };
    cell.get_or_init(|| FontRef::try_from_slice(bytes).expect("the embedded DejaVu Sans font parses"))
}

impl DrawingBackend for PngBackend<'_> {
    type ErrorType = Error;

    fn get_size(&self) -> (u32, u32) {
        self.inner.get_size()
    }

    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<Error>> {
        self.inner.ensure_prepared()
    }

    fn present(&mut self) -> Result<(), DrawingErrorKind<Error>> {
        self.inner.present()
    }

    fn draw_pixel(&mut self, point: BackendCoord, color: BackendColor) -> Result<(), DrawingErrorKind<Error>> {
        self.inner.draw_pixel(point, color)
    }

    fn draw_line<S: BackendStyle>(&mut self, from: BackendCoord, to: BackendCoord, style: &S) -> Result<(), DrawingErrorKind<Error>> {
        self.inner.draw_line(from, to, style)
    }

    fn draw_rect<S: BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Error>> {
        self.inner.draw_rect(upper_left, bottom_right, style, fill)
    }

    fn blit_bitmap(&mut self, pos: BackendCoord, size: (u32, u32), src: &[u8]) -> Result<(), DrawingErrorKind<Error>> {
        self.inner.blit_bitmap(pos, size, src)
    }

    fn draw_text<S: BackendTextStyle>(&mut self, text: &str, style: &S, pos: BackendCoord) -> Result<(), DrawingErrorKind<Error>> {
        let color = style.color();
        if color.alpha == 0.0 {
            return Ok(());
        }
        let ((min_x, min_y), (max_x, max_y)) = style.layout_box(text).map_err(|e| DrawingErrorKind::FontError(Box::new(e)))?;
        let (width, height) = (max_x - min_x, max_y - min_y);
        let dx = match style.anchor().h_pos {
            HPos::Left => 0,
            HPos::Right => -width,
            HPos::Center => -width / 2,
        };
        let dy = match style.anchor().v_pos {
            VPos::Top => 0,
            VPos::Center => -height / 2,
            VPos::Bottom => -height,
        };
        let font = face(style.style()).as_scaled(style.size() as f32);
        // Centre the capitals in plotters' text box (size/1.24 tall), so that centred labels
        // (ticks, legend) sit on their grid line or marker; descenders hang below.
        let cap_height = font.outline_glyph(font.scaled_glyph('H')).map_or(0.7 * font.scale().y, |g| -g.px_bounds().min.y);
        let baseline = (height as f32 + cap_height) / 2.0;
        let transform = style.transform();
        let (w, h) = self.get_size();
        let mut pen = 0.0f32;
        let mut previous = None;
        for c in text.chars() {
            let id = font.glyph_id(c);
            if let Some(prev) = previous {
                pen += font.kern(prev, id);
            }
            previous = Some(id);
            let glyph = id.with_scale_and_position(font.scale(), point(pen, baseline));
            pen += font.h_advance(id);
            let Some(outline) = font.outline_glyph(glyph) else { continue };
            let bounds = outline.px_bounds();
            let mut pixels = Vec::new();
            outline.draw(|x, y, coverage| pixels.push((bounds.min.x as i32 + x as i32, bounds.min.y as i32 + y as i32, coverage)));
            for (x, y, coverage) in pixels {
                let (tx, ty) = transform.transform(x + dx - min_x, y + dy - min_y);
                let (px, py) = (pos.0 + tx, pos.1 + ty);
                if coverage > 0.0 && px >= 0 && py >= 0 && (px as u32) < w && (py as u32) < h {
                    self.inner.draw_pixel((px, py), BackendColor { alpha: color.alpha * coverage.min(1.0) as f64, rgb: color.rgb })?;
                }
            }
        }
        Ok(())
    }
}
