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
