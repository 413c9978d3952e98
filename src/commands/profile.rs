//! `noodle install/remove/update/list` and `noodle profile …`: find the profile, take its
//! lock, compute the new manifest, add the generation, activate it, print.

mod install;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use noodle_activate::Strategy;
use noodle_profiles::generation::{self, GenerationInfo};
use noodle_profiles::select::Selection;
use noodle_profiles::{diff, Manifest, Profile, ProfileError, ProfileLock};
use noodle_store::{sync, Store};

use crate::cli::{ActivationArgs, Cli, ProfileCommand};
use crate::commands::activation;
use crate::commands::open;
use crate::output::{self, human_size, note, utc_time};

pub use install::{install, remove, update};

/// The profile a command works on, and whether it lives outside the store's root.
pub struct Located {
    pub profile: Profile,
    external: bool,
}

fn user_name() -> String {
    let uid = nix::unistd::geteuid();
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| uid.to_string())
}

/// `$XDG_STATE_HOME/noodle`, else `~/.local/state/noodle`: where a user's own store keeps
/// their profile, when the store is their default one (no --root, not root).
fn user_state_dir(cli: &Cli) -> Option<PathBuf> {
    if cli.root.is_some() || nix::unistd::geteuid().is_root() {
        return None;
    }
    if let Some(state) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(state).join("noodle"));
    }
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(|home| PathBuf::from(home).join(".local/state/noodle"))
}

pub fn locate(cli: &Cli, store: &Store) -> anyhow::Result<Located> {
    let profiles = store.dirs().profiles();
    let state = user_state_dir(cli);
    let Some(given) = &cli.profile else {
        let (link, external) = match state {
            Some(state) => (state.join("profile"), true),
            None => (
                profiles.join("per-user").join(user_name()).join("profile"),
                false,
            ),
        };
        return Ok(Located {
            profile: Profile::new(link)?,
            external,
        });
    };
    let absolute = std::path::absolute(given)
        .with_context(|| format!("cannot resolve --profile '{}'", given.display()))?;
    let outside = || {
        anyhow::anyhow!(
            "profile '{}' is outside the store's root: profiles live under {} (the system profile is {}/system){}",
            given.display(),
            profiles.display(),
            profiles.display(),
            state.as_ref().map_or(String::new(), |s| format!(", or under {} for your own store", s.display()))
        )
    };
    if absolute.components().any(|c| c == Component::ParentDir) {
        return Err(outside());
    }
    let logical_profiles = Path::new("/noodle/var/profiles");
    let (link, external) = if absolute.starts_with(&profiles) {
        (absolute, false)
    } else if let Ok(rest) = absolute.strip_prefix(logical_profiles) {
        (profiles.join(rest), false)
    } else if state.as_ref().is_some_and(|s| absolute.starts_with(s)) {
        (absolute, true)
    } else {
        return Err(outside());
    };
    if link == profiles || link.parent() == Some(profiles.as_path()) && link.ends_with("per-user") {
        return Err(outside());
    }
    Ok(Located {
        profile: Profile::new(link)?,
        external,
    })
}

impl Located {
    /// Takes the profile's lock for a change: waits for (or, with `no_wait`, refuses) another
    /// writer, recovers an activation a crashed one left, and refuses while a generation is
    /// under test.
    pub fn lock(&self, cli: &Cli, store: &mut Store, no_wait: bool) -> anyhow::Result<ProfileLock> {
        let lock = self.lock_only(cli, store, no_wait)?;
        activation::recover_first(cli, store, &self.profile, &lock)?;
        activation::refuse_if_under_test(store, &self.profile, &lock)?;
        Ok(lock)
    }

    /// Only the lock (for `activate --recover`, `--commit`).
    pub fn lock_only(
        &self,
        cli: &Cli,
        store: &Store,
        no_wait: bool,
    ) -> anyhow::Result<ProfileLock> {
        if no_wait {
            return self
                .profile
                .try_lock()?
                .ok_or_else(|| activation::busy(store, &self.profile).into());
        }
        Ok(self.profile.lock(|| {
            note(
                cli,
                format!(
                    "waiting for another noodle that is changing profile {} (`noodle status` says what)",
                    self.profile.link().display()
                ),
            )
        })?)
    }

    /// A profile outside the root is named in `var/gcroots/profiles/`, so its generations
    /// are roots; done before its first generation exists.
    fn ensure_rooted(&self, store: &Store) -> anyhow::Result<()> {
        if !self.external {
            return Ok(());
        }
        let dir = store.external_profiles_dir();
        fs_err::create_dir_all(&dir)?;
        let text = self.profile.link().to_string_lossy();
        let name = text.trim_start_matches('/').replace('/', "!");
        let link = dir.join(name);
        if std::fs::read_link(&link).ok().as_deref() != Some(self.profile.link()) {
            sync::replace_symlink(self.profile.link(), &link)?;
        }
        Ok(())
    }
}

/// Adds `manifest` as a generation and activates it, or says nothing changed.
fn commit(
    cli: &Cli,
    store: &mut Store,
    located: &Located,
    lock: &ProfileLock,
    base: &Manifest,
    manifest: &Manifest,
    args: &ActivationArgs,
) -> anyhow::Result<ExitCode> {
    let profile = &located.profile;
    if args.strategy == Strategy::DryActivate {
        return activation::dry_activate(cli, args, base, manifest, "the new generation");
    }
    located.ensure_rooted(store)?;
    let Some(created) = generation::create(store, profile, lock, base, manifest)? else {
        let current = profile.current()?;
        if cli.json {
            // One line, like every activating command's last: build events may precede it.
            println!(
                "{}",
                serde_json::json!({
                    "event": "result",
                    "profile": profile.link(),
                    "generation": current,
                    "changed": false,
                })
            );
        } else {
            note(
                cli,
                format!(
                    "nothing to do: {} already holds exactly that{}",
                    profile.link().display(),
                    current.map_or(String::new(), |n| format!(" (generation {n})"))
                ),
            );
        }
        return Ok(ExitCode::SUCCESS);
    };
    note(
        cli,
        format!(
            "generation {} of {}: {}",
            created.number,
            profile.link().display(),
            if created.summary.is_empty() {
                "(no packages)"
            } else {
                &created.summary
            }
        ),
    );
    let outcome = activation::run(cli, store, profile, lock, created.number, args)?;
    let code = activation::print_outcome(
        cli,
        &outcome,
        serde_json::json!({
            "profile": profile.link(),
            "generation": created.number,
            "path": created.path,
            "changes": created.summary,
            "from": outcome.activation.from,
            "changed": true,
        }),
    )?;
    if outcome.activation.from.is_none() && profile.current()? == Some(created.number) && !cli.json
    {
        path_hint(cli, store, profile);
    }
    Ok(code)
}

/// Printed when a profile gets its first generation and its bin/ is not on PATH yet; for a
/// store whose files live under another root, that its programs cannot run from here instead.
fn path_hint(cli: &Cli, store: &Store, profile: &Profile) {
    let logical = store.store_dir().as_str();
    if store.dirs().root != Path::new("/") && !Path::new(logical).is_dir() {
        note(
            cli,
            format!(
                "note: its programs refer to {logical}/…, which this host does not have (this store's files live under {}); they run where the store is mounted at {logical}",
                store.dirs().root.display()
            ),
        );
        return;
    }
    let bin = profile.link().join("bin");
    let on_path =
        std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|p| p == bin));
    if !on_path {
        note(
            cli,
            format!(
                "to run what it holds, add its bin directory to your PATH:\n  export PATH=\"{}:$PATH\"",
                bin.display()
            ),
        );
    }
}

pub fn list(cli: &Cli) -> anyhow::Result<ExitCode> {
    let mut store = open(cli, true)?;
    let located = locate(cli, &store)?;
    activation::recover_if_abandoned(cli, &mut store, &located.profile)?;
    let (current, manifest) = generation::current_manifest(&store, &located.profile)?;
    if cli.json {
        output::json(&serde_json::json!({
            "profile": located.profile.link(),
            "generation": current,
            "packages": manifest.packages,
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    if current.is_none() {
        note(
            cli,
            format!(
                "{} is empty: `noodle install NAME` adds packages",
                located.profile.link().display()
            ),
        );
    }
    let width = |f: fn(&noodle_profiles::Package) -> usize| {
        manifest.packages.iter().map(f).max().unwrap_or(0)
    };
    let (name_width, version_width) = (width(|p| p.name.len()), width(|p| p.version.len()));
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for package in &manifest.packages {
        writeln!(
            out,
            "{:name_width$}  {:version_width$}  {}",
            package.name, package.version, package.path
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run(cli: &Cli, command: &ProfileCommand) -> anyhow::Result<ExitCode> {
    let mut store = open(cli, true)?;
    let located = locate(cli, &store)?;
    let profile = &located.profile;
    if matches!(
        command,
        ProfileCommand::Generations | ProfileCommand::Diff { .. }
    ) {
        activation::recover_if_abandoned(cli, &mut store, profile)?;
    }
    match command {
        ProfileCommand::Generations => generations(cli, &store, profile),
        ProfileCommand::Switch { number, activation } => {
            let lock = located.lock(cli, &mut store, activation.no_wait)?;
            profile.generation(*number)?;
            switch_to(cli, &mut store, profile, &lock, *number, activation)
        }
        ProfileCommand::Rollback { activation } => {
            let lock = located.lock(cli, &mut store, activation.no_wait)?;
            let current = profile
                .current()?
                .ok_or_else(|| ProfileError::Empty(profile.link().to_owned()))?;
            let previous = profile
                .numbers()?
                .into_iter()
                .filter(|n| *n < current)
                .max()
                .ok_or_else(|| ProfileError::NoPrevious {
                    profile: profile.link().to_owned(),
                    current,
                })?;
            switch_to(cli, &mut store, profile, &lock, previous, activation)
        }
        ProfileCommand::Diff { from, to } => diff_command(cli, &store, profile, *from, *to),
        ProfileCommand::DeleteGenerations { which, older_than } => {
            let selection = Selection::parse(which, older_than.as_deref())?;
            let lock = located.lock(cli, &mut store, false)?;
            let infos = generation::list(&store, profile)?;
            let chosen = selection.choose(&infos, noodle_profiles::records::now());
            if !chosen.is_empty() {
                generation::delete(&mut store, profile, &lock, &chosen)?;
            }
            let numbers: Vec<u64> = chosen.into_iter().collect();
            if cli.json {
                output::json(&serde_json::json!({
                    "profile": profile.link(),
                    "deleted": numbers,
                }))?;
            } else if numbers.is_empty() {
                note(cli, "nothing to delete");
            } else {
                let list: Vec<String> = numbers.iter().map(u64::to_string).collect();
                note(
                    cli,
                    format!(
                        "deleted generation{} {}; `noodle store gc` frees the paths only they used",
                        if numbers.len() > 1 { "s" } else { "" },
                        list.join(", ")
                    ),
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn switch_to(
    cli: &Cli,
    store: &mut Store,
    profile: &Profile,
    lock: &ProfileLock,
    number: u64,
    args: &ActivationArgs,
) -> anyhow::Result<ExitCode> {
    if args.strategy == Strategy::DryActivate {
        let (_, from) = generation::current_manifest(store, profile)?;
        let (_, to) = generation::open(store, profile, number)?;
        return activation::dry_activate(cli, args, &from, &to, &format!("generation {number}"));
    }
    let outcome = activation::run(cli, store, profile, lock, number, args)?;
    activation::print_outcome(
        cli,
        &outcome,
        serde_json::json!({ "profile": profile.link() }),
    )
}

fn generations(cli: &Cli, store: &Store, profile: &Profile) -> anyhow::Result<ExitCode> {
    let infos: Vec<GenerationInfo> = generation::list(store, profile)?;
    if cli.json {
        output::json(&infos)?;
        return Ok(ExitCode::SUCCESS);
    }
    if infos.is_empty() {
        note(
            cli,
            format!("{} has no generations yet", profile.link().display()),
        );
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for info in &infos {
        writeln!(
            out,
            "{:>5}  {}  {}{}",
            info.number,
            utc_time(info.created_at),
            if info.summary.is_empty() {
                "(no changes)"
            } else {
                &info.summary
            },
            if info.current { "   (current)" } else { "" }
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn diff_command(
    cli: &Cli,
    store: &Store,
    profile: &Profile,
    from: Option<u64>,
    to: Option<u64>,
) -> anyhow::Result<ExitCode> {
    let current = profile
        .current()?
        .ok_or_else(|| ProfileError::Empty(profile.link().to_owned()))?;
    let to = to.unwrap_or(current);
    let from = match from {
        Some(from) => from,
        None => profile
            .numbers()?
            .into_iter()
            .filter(|n| *n < to)
            .max()
            .ok_or_else(|| ProfileError::NoPrevious {
                profile: profile.link().to_owned(),
                current: to,
            })?,
    };
    let (a, a_manifest) = generation::open(store, profile, from)?;
    let (b, b_manifest) = generation::open(store, profile, to)?;
    let diff = diff::diff(store.db(), (&a.path, &a_manifest), (&b.path, &b_manifest))?;
    if cli.json {
        output::json(&serde_json::json!({ "from": from, "to": to, "diff": diff }))?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    writeln!(out, "generation {from} → {to}")?;
    let mut lines: BTreeMap<&str, String> = BTreeMap::new();
    for p in &diff.added {
        lines.insert(&p.name, format!("  + {} {}", p.name, p.version));
    }
    for p in &diff.removed {
        lines.insert(&p.name, format!("  - {} {}", p.name, p.version));
    }
    for (mark, changes) in [
        ("↑", &diff.upgraded),
        ("↓", &diff.downgraded),
        ("~", &diff.rebuilt),
    ] {
        for c in changes {
            let text = if c.from == c.to {
                format!("  {mark} {} {} (rebuilt: {})", c.name, c.to, c.to_path)
            } else {
                format!("  {mark} {} {} → {}", c.name, c.from, c.to)
            };
            lines.insert(&c.name, text);
        }
    }
    if lines.is_empty() {
        writeln!(out, "  (same packages)")?;
    }
    for line in lines.values() {
        writeln!(out, "{line}")?;
    }
    let delta = diff.closure_delta_bytes;
    writeln!(
        out,
        "closure: {} paths, {} → {} paths, {} ({}{})",
        diff.closure_before.paths,
        human_size(diff.closure_before.bytes),
        diff.closure_after.paths,
        human_size(diff.closure_after.bytes),
        if delta < 0 { "-" } else { "+" },
        human_size(delta.unsigned_abs())
    )?;
    Ok(ExitCode::SUCCESS)
}
