//! `key`, `copy`, `serve`, `bundle`, and the substituters other commands use.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::Context;
use noodle_cache::config::Settings;
use noodle_cache::source::FileCache;
use noodle_cache::substitute::{Offer, Substituter};
use noodle_store::Store;

use crate::cli::{BundleCommand, Cli, CopyArgs, KeyCommand};
use crate::commands::{open, root};
use crate::output::{self, human_size, note, Bars};

/// The settings for this store: its configuration file, then `--option`s.
pub fn settings(cli: &Cli) -> anyhow::Result<Settings> {
    let system = root(cli)? == Path::new("/");
    let file = Settings::default_file(system);
    Ok(Settings::load(&file, &cli.options)?)
}

/// The configured substituters (or just `from`), trusting the configured keys.
pub fn substituter(settings: &Settings, from: Option<&str>) -> anyhow::Result<Substituter> {
    let urls = match from {
        Some(url) => vec![url.to_owned()],
        None => settings.substituters.clone(),
    };
    Ok(Substituter::new(
        &urls,
        settings.trusted_keys()?,
        settings.require_sigs,
        settings.download_jobs,
        settings.connect_timeout,
    )?)
}

/// One line of `--json` output per event, as activations print them.
fn json_line(value: &serde_json::Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

fn valid_paths(store: &Store, paths: &[String]) -> anyhow::Result<Vec<String>> {
    paths
        .iter()
        .map(|p| Ok(store.logical(&store.valid_path(p)?)))
        .collect()
}

pub fn key(cli: &Cli, command: &KeyCommand) -> anyhow::Result<ExitCode> {
    let KeyCommand::Generate { name, dir } = command;
    let key = noodle_cache::keys::SecretKey::generate(name)?;
    let (secret, public) = key.write_pair(dir)?;
    let public_text = key.public().to_text();
    if cli.json {
        output::json(&serde_json::json!({
            "name": name, "secret_key_file": secret, "public_key_file": public,
            "public_key": public_text,
        }))?;
    } else {
        println!("{public_text}");
        note(
            cli,
            format!(
                "wrote {} (secret: list it in secret-key-files) and {}; give the line above to trusted-public-keys",
                secret.display(),
                public.display()
            ),
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn copy(cli: &Cli, args: &CopyArgs) -> anyhow::Result<ExitCode> {
    let settings = settings(cli)?;
    let started = Instant::now();
    let bars = Bars::new(cli);
    if let Some(to) = &args.to {
        let store = open(cli, false)?;
        let paths = valid_paths(&store, &args.paths)?;
        if to.starts_with("http://") || to.starts_with("https://") {
            anyhow::bail!("cannot push to {to}: pushing over HTTP is not supported; push into a directory (file:///srv/cache) that a web server serves, or let the other host fetch from this one with `noodle serve`");
        }
        let cache = FileCache::open(to)?;
        let keys = settings.secret_keys()?;
        if keys.is_empty() {
            note(cli, "warning: no secret-key-files are configured: the paths are pushed unsigned, and only hosts with require-sigs = false will accept them");
        }
        let on_pushed = |info: &noodle_cache::narinfo::NarInfo| {
            if cli.json {
                let _ = json_line(&serde_json::json!({
                    "event": "pushed", "path": info.store_path, "nar_size": info.nar_size,
                    "file_size": info.file_size, "url": info.url,
                }));
            }
        };
        let report = noodle_cache::push::push(&store, &cache, &paths, &keys, &bars, &on_pushed)
            .with_context(|| format!("cannot copy to {to}"))?;
        if cli.json {
            json_line(&serde_json::json!({"event": "result", "pushed": report}))?;
        } else {
            note(
                cli,
                format!(
                    "pushed {} paths ({} NAR, {} compressed) to {to} in {:.2} s; {} were there already",
                    report.pushed.len(),
                    human_size(report.nar_bytes),
                    human_size(report.file_bytes),
                    started.elapsed().as_secs_f64(),
                    report.already_there
                ),
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let from = args.from.as_deref().expect("clap requires --to or --from");
    let mut store = open(cli, true)?;
    let substituter = substituter(&settings, Some(from))?;
    let paths: Vec<String> = args
        .paths
        .iter()
        .map(|p| Ok(store.logical(&store.parse_path(p)?)))
        .collect::<anyhow::Result<_>>()?;
    let on_fetched = |offer: &Offer| {
        if cli.json {
            let _ = json_line(&serde_json::json!({
                "event": "fetched", "path": offer.info.store_path, "nar_size": offer.info.nar_size,
                "from": offer.cache, "signed_by": offer.signed_by,
            }));
        } else if cli.verbose {
            eprintln!("fetched {} from {}", offer.info.store_path, offer.cache);
        }
    };
    let report = substituter
        .fetch(&mut store, &paths, &bars, &on_fetched)
        .with_context(|| format!("cannot copy from {from}"))?;
    if cli.json {
        json_line(&serde_json::json!({"event": "result", "fetched": report}))?;
    } else {
        for path in &paths {
            println!("{path}");
        }
        note(
            cli,
            format!(
                "fetched {} paths ({} NAR, {} received) from {from} in {:.2} s",
                report.fetched.len(),
                human_size(report.nar_bytes),
                human_size(report.file_bytes),
                started.elapsed().as_secs_f64()
            ),
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn serve(cli: &Cli, listen: &str, threads: usize) -> anyhow::Result<ExitCode> {
    let settings = settings(cli)?;
    let root = root(cli)?;
    // Fail now, not at the first request, when there is no store.
    let store = Store::open(&root, None)?;
    let keys = settings.secret_keys()?;
    let names: Vec<String> = keys.iter().map(|k| k.name().to_owned()).collect();
    let server = noodle_cache::serve::Server::bind(
        &root,
        noodle_cache::serve::ServeOptions {
            listen: listen.to_owned(),
            keys,
            priority: 30,
            threads,
        },
    )?;
    let address = server.local_addr();
    if cli.json {
        json_line(&serde_json::json!({
            "event": "listening", "url": format!("http://{address}"),
            "store_dir": store.store_dir().as_str(), "signing_keys": names,
        }))?;
    } else {
        println!("http://{address}");
        let signing = match names.is_empty() {
            true => "unsigned: no secret-key-files configured".to_owned(),
            false => format!("signing with {}", names.join(", ")),
        };
        note(
            cli,
            format!(
                "serving {} at http://{address} ({signing}); peers: noodle copy --from http://{address} PATH",
                store.store_dir()
            ),
        );
    }
    let _ = std::io::stdout().flush();
    drop(store);
    // Runs until the process is killed: serving holds no state worth a clean shutdown.
    let stop = AtomicBool::new(false);
    let verbose = cli.verbose;
    server.run(&stop, &|line: &str| {
        if verbose {
            eprintln!("{line}");
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

pub fn bundle(cli: &Cli, command: &BundleCommand) -> anyhow::Result<ExitCode> {
    let settings = settings(cli)?;
    let bars = Bars::new(cli);
    let started = Instant::now();
    match command {
        BundleCommand::Export { paths, output } => {
            let store = open(cli, false)?;
            let paths = valid_paths(&store, paths)?;
            let keys = settings.secret_keys()?;
            if keys.is_empty() {
                note(cli, "warning: no secret-key-files are configured: the bundle is unsigned, and only hosts with require-sigs = false will import it");
            }
            let report = noodle_cache::bundle::export(&store, &paths, &keys, output, &bars)
                .with_context(|| format!("cannot export a bundle to '{}'", output.display()))?;
            if cli.json {
                output::json(&serde_json::json!({
                    "file": output, "paths": report.paths, "nar_bytes": report.nar_bytes,
                    "file_bytes": report.file_bytes,
                }))?;
            } else {
                note(
                    cli,
                    format!(
                        "wrote {}: {} paths, {} NAR in {} ({:.2} s)",
                        output.display(),
                        report.paths,
                        human_size(report.nar_bytes),
                        human_size(report.file_bytes),
                        started.elapsed().as_secs_f64()
                    ),
                );
            }
        }
        BundleCommand::Import { file } => {
            let mut store = open(cli, true)?;
            let trusted = settings.trusted_keys()?;
            let report = noodle_cache::bundle::import(
                &mut store,
                file,
                &trusted,
                settings.require_sigs,
                &bars,
            )
            .with_context(|| format!("cannot import '{}'", file.display()))?;
            if cli.json {
                output::json(&serde_json::json!({
                    "paths": report.paths, "already_valid": report.already_valid,
                    "signed_by": report.signed_by,
                }))?;
            } else {
                for path in &report.paths {
                    println!("{path}");
                }
                note(
                    cli,
                    format!(
                        "imported {} paths ({} valid already) in {:.2} s",
                        report.paths.len(),
                        report.already_valid,
                        started.elapsed().as_secs_f64()
                    ),
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
