//! The `repdef` binary: parse arguments, run, print the error chain once, exit non-zero on failure.

use clap::Parser;

fn main() {
    let cli = repdef::cli::Cli::parse();
    if let Err(error) = repdef::cli::run(cli) {
        let chain: Vec<String> = error.chain().map(ToString::to_string).collect();
        eprintln!("error: {}", chain.join(": "));
        std::process::exit(1);
    }
}
