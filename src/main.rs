//! `noodle`: the command line. Parse, call the library, print; nothing else lives here.

mod cli;
mod commands;
mod output;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // The sandbox helper must start as a fresh, single-threaded process: before anything else.
    if std::env::args_os().nth(1).as_deref()
        == Some(std::ffi::OsStr::new(noodle_builder::sandbox::HELPER_ARG))
    {
        noodle_builder::sandbox::helper_main()
    }
    if std::env::args_os().nth(1).as_deref()
        == Some(std::ffi::OsStr::new(commands::activation::WORKER_ARG))
    {
        let args: Vec<String> = std::env::args_os()
            .skip(2)
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        return commands::activation::worker_main(&args);
    }
    let cli = cli::Cli::parse();
    match commands::run(&cli) {
        Ok(code) => code,
        Err(error) => {
            output::print_error(&cli, &error);
            output::exit_code_of(&error)
        }
    }
}
