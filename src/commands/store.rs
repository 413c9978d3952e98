use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use noodle_store::{nar, AddOptions, GcOptions, Store, VerifyOptions};

use crate::cli::{AddArgs, Cli, StoreCommand};
use crate::commands::open;
use crate::output::{self, human_size, note, Bars};

pub fn run(cli: &Cli, command: &StoreCommand) -> anyhow::Result<ExitCode> {
    match command {
        StoreCommand::Add(args) => add(cli, args),
        StoreCommand::Dump { path } => {
            let physical = match open(cli, false) {
                Ok(store)
                    if path
                        .to_string_lossy()
                        .starts_with(store.store_dir().as_str()) =>
                {
                    let store_path = store.valid_path(&path.to_string_lossy())?;
                    let mut physical = store.physical(&store_path);
                    let logical = store.logical(&store_path);
                    if let Ok(rest) = path.strip_prefix(&logical) {
                        // Pushing "" would add a trailing '/', which a single-file path refuses.
                        if !rest.as_os_str().is_empty() {
                            physical.push(rest);
                        }
                    }
                    physical
                }
                _ => path.clone(),
            };
            let layout = nar::NarLayout::of(&physical)
                .with_context(|| format!("cannot dump '{}'", path.display()))?;
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            nar::dump(&layout, &mut out).context("cannot write the archive to stdout")?;
            Ok(ExitCode::SUCCESS)
        }
        StoreCommand::Restore { dir } => {
            let stats = nar::restore_to_dir(std::io::stdin().lock(), dir)
                .with_context(|| format!("cannot restore into '{}'", dir.display()))?;
            if cli.json {
                output::json(&serde_json::json!({
                    "dir": dir, "nar_size": stats.nar_size, "files": stats.files,
                    "directories": stats.directories, "symlinks": stats.symlinks,
                }))?;
            } else {
                note(
                    cli,
                    format!(
                        "restored {} files, {} directories, {} symlinks into {}",
                        stats.files,
                        stats.directories,
                        stats.symlinks,
                        dir.display()
                    ),
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        StoreCommand::PathInfo { paths } => {
            let store = open(cli, false)?;
            let mut infos = Vec::new();
            for text in paths {
                let path = store.valid_path(text)?;
                let info = store
                    .db()
                    .path_info(&store.logical(&path))?
                    .ok_or_else(|| noodle_store::StoreError::NotValid(text.clone()))?;
                infos.push(info);
            }
            if cli.json {
                output::json(&infos)?;
            } else {
                let mut out = std::io::stdout().lock();
                for (i, info) in infos.iter().enumerate() {
                    if i > 0 {
                        writeln!(out)?;
                    }
                    writeln!(out, "path:        {}", info.path)?;
                    writeln!(out, "nar hash:    {}", info.nar_hash)?;
                    writeln!(
                        out,
                        "nar size:    {} ({})",
                        info.nar_size,
                        human_size(info.nar_size)
                    )?;
                    writeln!(out, "registered:  {}", output::utc_time(info.registered_at))?;
                    if let Some(ca) = &info.ca {
                        writeln!(out, "content:     {ca}")?;
                    }
                    if info.references.is_empty() {
                        writeln!(out, "references:  (none)")?;
                    }
                    for (n, reference) in info.references.iter().enumerate() {
                        let label = if n == 0 { "references:" } else { "" };
                        writeln!(out, "{label:<12} {reference}")?;
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        StoreCommand::Closure { paths, referrers } => {
            let store = open(cli, false)?;
            let mut all = std::collections::BTreeSet::new();
            for text in paths {
                let path = store.valid_path(text)?;
                all.extend(store.db().closure(&store.logical(&path), *referrers)?);
            }
            print_paths(cli, all.iter())?;
            Ok(ExitCode::SUCCESS)
        }
        StoreCommand::Verify {
            check_contents,
            repair,
            paths,
        } => verify(cli, *check_contents, *repair, paths),
        StoreCommand::Gc { dry_run, max_freed } => {
            let mut store = open(cli, false)?;
            let report = store.gc(
                &GcOptions {
                    dry_run: *dry_run,
                    max_freed: *max_freed,
                },
                &Bars::new(cli),
            )?;
            if cli.json {
                output::json(&report)?;
            } else {
                print_paths(cli, report.deleted.iter())?;
                let verb = if *dry_run { "would delete" } else { "deleted" };
                note(cli, format!(
                    "{verb} {} paths ({}), {} unregistered leftovers, {} stale temporary directories, {} unused link-farm entries",
                    report.deleted.len(), human_size(report.freed_bytes), report.leftovers.len(), report.stale_temp, report.unused_links
                ));
            }
            Ok(ExitCode::SUCCESS)
        }
        StoreCommand::Optimise => {
            let mut store = open(cli, false)?;
            let report = store.optimise(&Bars::new(cli))?;
            if cli.json {
                output::json(&report)?;
            } else {
                note(
                    cli,
                    format!(
                        "linked {} files, saving {} ({} new link-farm entries)",
                        report.files_linked,
                        human_size(report.bytes_saved),
                        report.farm_entries
                    ),
                );
                for file in &report.skipped_damaged {
                    note(cli, format!("warning: skipped '{file}': its contents do not match the recorded hash (run `noodle store verify --check-contents`)"));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        StoreCommand::Delete { paths } => {
            let mut store = open(cli, false)?;
            let deleted = store.delete(paths)?;
            print_paths(cli, deleted.iter())?;
            Ok(ExitCode::SUCCESS)
        }
        StoreCommand::Roots => {
            let store = open(cli, false)?;
            let roots = store.find_roots()?;
            if cli.json {
                output::json(&roots)?;
            } else {
                let mut out = std::io::stdout().lock();
                for (link, path) in &roots {
                    writeln!(out, "{} -> {path}", link.display())?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_paths<'a>(cli: &Cli, paths: impl Iterator<Item = &'a String>) -> anyhow::Result<()> {
    if cli.json {
        return output::json(&paths.collect::<Vec<_>>());
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for path in paths {
        writeln!(out, "{path}")?;
    }
    out.flush()?;
    Ok(())
}

fn add(cli: &Cli, args: &AddArgs) -> anyhow::Result<ExitCode> {
    if args.paths.len() > 1 && (args.name.is_some() || args.gc_root.is_some()) {
        anyhow::bail!("--name and --gc-root apply to one path: add the trees one at a time");
    }
    let mut store: Store = open(cli, true)?;
    let bars = Bars::new(cli);
    let options = AddOptions {
        name: args.name.clone(),
        scan_references: args.scan_references,
        gc_root: args.gc_root.clone(),
        expect_hash: None,
    };
    let mut results = Vec::new();
    for source in &args.paths {
        let added = store
            .add_tree(source, &options, &bars)
            .with_context(|| format!("cannot add '{}' to the store", source.display()))?;
        if !cli.json {
            println!("{}", added.path);
            if cli.verbose {
                let what = if added.added {
                    "added"
                } else {
                    "already valid, nothing written:"
                };
                eprintln!(
                    "{what} {} ({}, {} references)",
                    added.path,
                    human_size(added.nar_size),
                    added.references.len()
                );
            }
        }
        results.push(added);
    }
    if cli.json {
        output::json(&results)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(
    cli: &Cli,
    check_contents: bool,
    repair: bool,
    paths: &[String],
) -> anyhow::Result<ExitCode> {
    let mut store = open(cli, false)?;
    let mut logical = Vec::new();
    for text in paths {
        logical.push(store.logical(&store.valid_path(text)?));
    }
    let options = VerifyOptions {
        check_contents,
        repair,
        paths: logical,
    };
    // Restoring from the substituters is only worth configuring them for with --repair.
    let substituter = match repair {
        true => {
            let settings = crate::commands::distribution::settings(cli)?;
            Some(crate::commands::distribution::substituter(&settings, None)?)
        }
        false => None,
    };
    let restore = substituter
        .as_ref()
        .filter(|s| !s.is_empty())
        .map(|s| s as &dyn noodle_store::Restore);
    let report = store.verify_restoring(&options, &Bars::new(cli), restore)?;
    if cli.json {
        output::json(&report)?;
    } else {
        let mut out = std::io::stdout().lock();
        for problem in &report.problems {
            let state = if problem.repaired { " (repaired)" } else { "" };
            writeln!(out, "{:?}: {}{state}", problem.kind, problem.path)?;
            for detail in &problem.details {
                writeln!(out, "    {detail}")?;
            }
        }
        let left = report.unrepaired();
        note(
            cli,
            format!(
                "checked {} paths{}: {} problems, {} left",
                report.checked,
                if check_contents {
                    " and their contents"
                } else {
                    ""
                },
                report.problems.len(),
                left
            ),
        );
        if left > 0 && !repair {
            note(
                cli,
                "run `noodle store verify --repair` to remove leftovers and fix metadata",
            );
        }
    }
    Ok(if report.unrepaired() > 0 {
        ExitCode::from(output::EXIT_PROBLEMS)
    } else {
        ExitCode::SUCCESS
    })
}
