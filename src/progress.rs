//! Progress reporting for long jobs: an indicatif bar on a terminal, plain log lines otherwise
//! (indicatif prints nothing when stderr is not a terminal, e.g. in CI or a pipe). Bars of jobs
//! that run at the same time (`reproduce` trains its runs concurrently) stack on one terminal.

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::OnceLock;

/// Every bar of the process, so that concurrent ones share the terminal.
fn bars() -> &'static MultiProgress {
    static BARS: OnceLock<MultiProgress> = OnceLock::new();
    BARS.get_or_init(MultiProgress::new)
}

pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A bar over `total` units starting at `position`; `unit` names them ("steps", "tokens").
    pub fn new(total: u64, position: u64, unit: &str) -> Self {
        if !std::io::stderr().is_terminal() {
            return Progress { bar: None };
        }
        let bar = bars().add(ProgressBar::new(total).with_position(position));
        let template = format!("{{elapsed_precise}} [{{bar:30}}] {{pos}}/{{len}} {unit} (eta {{eta}}) {{msg}}");
        bar.set_style(ProgressStyle::with_template(&template).expect("valid template").progress_chars("=> "));
        Progress { bar: Some(bar) }
    }

    pub fn is_terminal(&self) -> bool {
        self.bar.is_some()
    }

    pub fn advance(&self, position: u64, message: String) {
        if let Some(bar) = &self.bar {
            bar.set_position(position);
            bar.set_message(message);
        }
    }

    /// A permanent log line (above the bar on a terminal, on stderr otherwise).
    pub fn log(&self, line: &str) {
        match &self.bar {
            Some(_) => bars().suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// A wall time as people read it: `8.2 s`, `14 min 03 s`, `2 h 05 min`.
pub fn describe_duration(duration: std::time::Duration) -> String {
    let seconds = duration.as_secs_f64();
    let whole = duration.as_secs();
    match whole {
        0..60 => format!("{seconds:.1} s"),
        60..3600 => format!("{} min {:02} s", whole / 60, whole % 60),
        _ => format!("{} h {:02} min", whole / 3600, whole % 3600 / 60),
    }
}

/// The wall time of each stage of a long job, for one closing line.
pub struct StageClock {
    started: std::time::Instant,
    lap_started: std::time::Instant,
    laps: Vec<(&'static str, std::time::Duration)>,
}

impl StageClock {
    pub fn start() -> Self {
        let now = std::time::Instant::now();
        StageClock { started: now, lap_started: now, laps: Vec::new() }
    }

    /// Ends the stage named `stage` (and starts the next).
    pub fn lap(&mut self, stage: &'static str) {
        let now = std::time::Instant::now();
        self.laps.push((stage, now - self.lap_started));
        self.lap_started = now;
    }

    /// `26 min 30 s (prepare 52.0 s, train 15 min 02 s, …)`: the total and every stage's share.
    pub fn summary(&self) -> String {
        let laps: Vec<String> = self.laps.iter().map(|(stage, took)| format!("{stage} {}", describe_duration(*took))).collect();
        format!("{} ({})", describe_duration(self.started.elapsed()), laps.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations_read_in_the_largest_sensible_units() {
        assert_eq!(describe_duration(Duration::from_millis(8_240)), "8.2 s");
        assert_eq!(describe_duration(Duration::from_secs(14 * 60 + 3)), "14 min 03 s");
        assert_eq!(describe_duration(Duration::from_secs(2 * 3600 + 5 * 60 + 59)), "2 h 05 min");
    }

    #[test]
    fn the_summary_names_every_stage_in_order() {
        let mut clock = StageClock::start();
        clock.lap("prepare");
        clock.lap("train");
        let summary = clock.summary();
        assert!(summary.ends_with("(prepare 0.0 s, train 0.0 s)"), "{summary}");
    }
}
