//! `noodle`: the command line. Parse, call the library, print; nothing else lives here.

mod cli;
mod commands;
mod output;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match commands::run(&cli) {
        Ok(code) => code,
        Err(error) => {
            output::print_error(&cli, &error);
            output::exit_code_of(&error)
        }
    }
}
