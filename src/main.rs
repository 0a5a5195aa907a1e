//! The `repdef` binary: parse arguments, run, print the error chain once, exit 1 on a
//! regression found by `check` and 2 on any other failure.

use clap::Parser;

fn main() {
    repdef::panic_guard::install_quiet_hook();
    let cli = repdef::cli::Cli::parse();
    if let Err(error) = repdef::cli::run(cli) {
        // One line: candle errors may carry a multi-line backtrace after their message.
        let chain: Vec<String> = error.chain().map(|e| e.to_string().lines().next().unwrap_or_default().to_string()).collect();
        eprintln!("error: {}", chain.join(": "));
        std::process::exit(repdef::cli::exit_code(&error));
    }
}
