//! One function per command: open the store, call the library, print.

pub mod activation;
mod build;
pub mod distribution;
mod profile;
mod store;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use noodle_store::Store;

use crate::cli::{Cli, Command};
use crate::output;

pub fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Init { store_dir } => {
            let root = root(cli)?;
            let store = Store::init(&root, Some(store_dir))
                .with_context(|| format!("cannot create a store under '{}'", root.display()))?;
            if cli.json {
                output::json(&serde_json::json!({
                    "root": root,
                    "store_dir": store.store_dir().as_str(),
                    "database": store.dirs().db_file(),
                }))?;
            } else {
                output::note(
                    cli,
                    format!(
                        "store ready: paths are named {}/…, files live under {}",
                        store.store_dir(),
                        store.dirs().store().display()
                    ),
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Store(command) => store::run(cli, command),
        Command::Build(args) => build::build(cli, args),
        Command::Lock {
            targets,
            update,
            locked,
        } => build::lock(cli, targets, update, *locked),
        Command::Log { path } => build::log(cli, path),
        Command::Channel { dir } => build::channel_command(cli, dir.as_ref()),
        Command::Install {
            targets,
            priority,
            activation,
        } => profile::install(cli, targets, *priority, activation),
        Command::Remove { names, activation } => profile::remove(cli, names, activation),
        Command::Update { args, activation } => profile::update(cli, args, activation),
        Command::List => profile::list(cli),
        Command::Activate(args) => activation::command(cli, args),
        Command::Status { follow } => activation::status(cli, *follow),
        Command::History { stats } => activation::history(cli, *stats),
        Command::Health => activation::health(cli),
        Command::Profile(command) => profile::run(cli, command),
        Command::Key(command) => distribution::key(cli, command),
        Command::Copy(args) => distribution::copy(cli, args),
        Command::Serve { listen, threads } => distribution::serve(cli, listen, *threads),
        Command::Bundle(command) => distribution::bundle(cli, command),
    }
}

/// The physical root: --root / NOODLE_ROOT, else `/` for root and a per-user directory otherwise.
pub fn root(cli: &Cli) -> anyhow::Result<PathBuf> {
    if let Some(root) = &cli.root {
        return std::path::absolute(root)
            .with_context(|| format!("cannot resolve --root '{}'", root.display()));
    }
    if nix::unistd::geteuid().is_root() {
        return Ok(PathBuf::from("/"));
    }
    if let Some(data) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(data).join("noodle"));
    }
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .context("neither XDG_DATA_HOME nor HOME is set: pass --root DIR")?;
    Ok(PathBuf::from(home).join(".local/share/noodle"))
}

/// Opens the store; with `create`, makes one first if there is none (adding needs no set-up).
pub fn open(cli: &Cli, create: bool) -> anyhow::Result<Store> {
    let root = root(cli)?;
    let store = if create {
        Store::init(&root, None)
    } else {
        Store::open(&root, None)
    };
    Ok(store?)
}
