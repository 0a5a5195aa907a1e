//! How series look: the Okabe–Ito colour-blind-safe palette, markers and dash patterns, and the
//! fixed style of each token group so that a group looks the same in every figure.
//!
//! Groups are told apart three ways at once (colour, dash, marker) so a figure still reads in
//! greyscale or for a reader with any common colour-vision deficiency.

/// An sRGB colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rgb(pub u8, pub u8, pub u8);

/// Okabe & Ito (2008), "Color Universal Design". Yellow (#F0E442) is left out: it is nearly
/// invisible on white.
pub const BLUE: Rgb = Rgb(0x00, 0x72, 0xB2);
pub const VERMILLION: Rgb = Rgb(0xD5, 0x5E, 0x00);
pub const BLUISH_GREEN: Rgb = Rgb(0x00, 0x9E, 0x73);
pub const REDDISH_PURPLE: Rgb = Rgb(0xCC, 0x79, 0xA7);
pub const ORANGE: Rgb = Rgb(0xE6, 0x9F, 0x00);
pub const SKY_BLUE: Rgb = Rgb(0x56, 0xB4, 0xE9);
pub const BLACK: Rgb = Rgb(0x00, 0x00, 0x00);
/// Reference lines and annotations: visible, but quieter than data.
pub const GREY: Rgb = Rgb(0x66, 0x66, 0x66);

const CYCLE: [Rgb; 7] = [BLUE, VERMILLION, BLUISH_GREEN, REDDISH_PURPLE, ORANGE, SKY_BLUE, BLACK];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dash {
    Solid,
    Dashed,
    Dotted,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Circle,
    Square,
    Triangle,
    Diamond,
    Cross,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Marker {
    pub shape: Shape,
    pub filled: bool,
}

/// Everything that distinguishes one series from another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Style {
    pub colour: Rgb,
    pub dash: Dash,
    pub marker: Marker,
}

const SHAPES: [Shape; 5] = [Shape::Circle, Shape::Square, Shape::Triangle, Shape::Diamond, Shape::Cross];

/// The i-th style for series that are peers (models, runs): colour and marker both cycle, with
/// coprime periods (7 and 5) so that no two of the first 35 series look alike.
pub fn nth(i: usize) -> Style {
    Style { colour: CYCLE[i % CYCLE.len()], dash: Dash::Solid, marker: Marker { shape: SHAPES[i % SHAPES.len()], filled: true } }
}

/// The style of a `condition/group` series. Colour and marker say which tokens (all, real,
/// `[MASK]`); the line says which input (masked: solid with filled markers, clean: dashed with
/// hollow markers), so the with/without-`[MASK]` pairs the paper compares share a colour.
pub fn token_group(condition: &str, group: &str) -> Style {
    let (colour, shape) = match group {
        "all" => (VERMILLION, Shape::Circle),
        "real" => (BLUE, Shape::Square),
        "mask" => (ORANGE, Shape::Triangle),
        _ => (BLACK, Shape::Cross),
    };
    match condition {
        "masked" => Style { colour, dash: Dash::Solid, marker: Marker { shape, filled: true } },
        "clean" => Style { colour, dash: Dash::Dashed, marker: Marker { shape, filled: false } },
        // MAE-LM fed `[MASK]` it never saw in pretraining: a separate, clearly different look.
        _ => Style { colour: REDDISH_PURPLE, dash: Dash::Dotted, marker: Marker { shape: Shape::Diamond, filled: true } },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_styles_are_distinct_for_many_series() {
        let styles: Vec<Style> = (0..35).map(nth).collect();
        for (i, a) in styles.iter().enumerate() {
            for b in &styles[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn paper_groups_all_look_different() {
        let groups = [("masked", "all"), ("masked", "real"), ("masked", "mask"), ("clean", "all"), ("clean", "real"), ("mask-fed", "mask")];
        let styles: Vec<Style> = groups.iter().map(|(c, g)| token_group(c, g)).collect();
        for (i, a) in styles.iter().enumerate() {
            for b in &styles[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
