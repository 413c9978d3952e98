//! The command-line grammar.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use noodle_activate::options::{parse_duration, Strategy};

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  failure (the message says what went wrong and what to do)
  2  usage error (unknown option, missing argument)
  3  `store verify` found problems it did not repair
  4  the store database stayed locked by another process (see NOODLE_DB_TIMEOUT)
  5  refused: the path is still referenced, rooted or in use; or deleting the current generation
  6  `build --check` found that a rebuild differs (not reproducible)
  7  activation reverted: a validation gate, an activation script or a required health check
     failed, and the previous generation is active (and healthy) again
  8  activation FAILED: it was reverted, and the previous generation is not healthy either
  9  another activation of the profile is in flight (with --no-wait)
 10  `noodle health`: a required health check is red
 11  a path from a cache or bundle was refused: unsigned, signed by no trusted key, a bad
     signature, or contents that do not match what was signed; nothing was registered

Environment:
  NOODLE_ROOT        physical root of the store (as --root)
  NOODLE_STORE_DIR   logical store directory for `init` (as --store-dir)
  NOODLE_DB_TIMEOUT  seconds to wait for a database locked by another process (default 60)
  NOODLE_CHANNEL     the channel (a directory holding pkgs/) to build from (as --channel)
  NOODLE_PROFILE     the profile to work on (as --profile)
  NOODLE_WINDOW      default health window of activations (as --window), e.g. 30s or 5m
  NOODLE_CONFIG      the configuration file to read instead of the default one
  NOODLE_FAILPOINT   crash testing: abort at a named failure point, e.g. add:after-rename

Configuration (TOML; `--option NAME=VALUE` overrides any setting for one command):
  /etc/noodle/noodle.toml           for the system store (root /)
  ~/.config/noodle/noodle.toml      for a user's own store ($XDG_CONFIG_HOME/noodle/noodle.toml)
  substituters = [\"http://cache.lan:8080\", \"file:///srv/cache\"]   asked in this order
  trusted-public-keys = [\"cache.lan-1:BASE64\"]   only paths they signed are accepted
  secret-key-files = [\"/etc/noodle/cache.lan-1.sec\"]   `copy --to`, `serve`, `bundle export` sign
  require-sigs = true, connect-timeout = 5 (seconds), download-jobs = 8

Files (under the root R):
  R/noodle/store/<hash>-<name>    read-only store paths
  R/noodle/var/db/store.sqlite    the database
  R/noodle/var/gcroots/           symlinks that keep paths alive (as do var/profiles/)
  R/noodle/var/log/               build logs (zstd), shown by `noodle log`; activations/<id>.log
                                  holds what a detached activation printed on stderr
  R/noodle/var/profiles/system    the system profile -> system-<N>-link -> its generation
  R/noodle/var/profiles/per-user/<user>/profile   a user's profile in a shared store
  ~/.local/state/noodle/profile   a user's profile in their own store (~/.local/share/noodle)
  <channel>/pkgs/<name>/<version>.toml   recipes
  <channel>/noodle.lock           exact versions, source pins, plan hashes and output paths";

/// noodle: an immutable-generations package store for Linux.
///
/// Everything lives in a read-only, hash-addressed store; the database records every valid path
/// and its references. Store paths are printed on stdout one per line (and nothing else goes
/// there); progress and messages go to stderr.
#[derive(Debug, Parser)]
#[command(name = "noodle", version, after_long_help = EXIT_CODES, after_help = "Run `noodle --help` for exit codes, environment and files.")]
pub struct Cli {
    /// Physical root of the store [default: / for root, $XDG_DATA_HOME/noodle otherwise].
    #[arg(long, global = true, env = "NOODLE_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// Print machine-readable JSON on stdout instead of human output.
    #[arg(long, global = true)]
    pub json: bool,

    /// More detail on stderr.
    #[arg(short, long, global = true, conflicts_with = "quiet")]
    pub verbose: bool,

    /// Only errors on stderr; no progress bars.
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// The channel to build from: a directory holding pkgs/<name>/<version>.toml
    /// [default: the store's configured channel (`noodle channel`), else the current directory].
    #[arg(long, global = true, env = "NOODLE_CHANNEL", value_name = "DIR")]
    pub channel: Option<PathBuf>,

    /// The profile to work on [default: ~/.local/state/noodle/profile for a user's own store,
    /// else R/noodle/var/profiles/per-user/<user>/profile]. The system profile is
    /// /noodle/var/profiles/system; a profile must live under R/noodle/var/profiles.
    #[arg(long, global = true, env = "NOODLE_PROFILE", value_name = "PATH")]
    pub profile: Option<PathBuf>,

    /// Set a configuration option for this command, overriding noodle.toml (repeatable):
    /// `--option substituters='http://a:8080 file:///srv/cache'`.
    #[arg(long = "option", global = true, value_name = "NAME=VALUE")]
    pub options: Vec<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a store under the root (does nothing if one is there).
    ///
    /// The logical store directory is fixed here and recorded in the database; later commands
    /// refuse a different one.
    Init {
        /// The logical store directory that store paths will name.
        #[arg(
            long,
            env = "NOODLE_STORE_DIR",
            default_value = "/noodle/store",
            value_name = "DIR"
        )]
        store_dir: String,
    },
    /// Build packages in a sandbox and print their output paths, one per line.
    ///
    /// TARGET is a package of the channel (`hello`: its highest version), an exact version
    /// (`crypto@1.2.3`), a semver requirement (`'crypto@>=1.2.5'`, `crypto@^1.2`), a package
    /// directory (`pkgs/hello`) or a recipe file (`pkgs/hello/1.0.0.toml`). Dependencies are
    /// resolved edge by edge to the highest version that satisfies each requirement, kept
    /// where noodle.lock already fixed them; the lockfile is written (or checked, with
    /// --locked). An output that is already valid is never rebuilt. Builds run hermetically:
    /// only their inputs are visible, no network, no host files, as an unprivileged user.
    Build(BuildArgs),
    /// Resolve recipes and write noodle.lock without building.
    ///
    /// Without TARGETs the whole channel is locked (every version of every package). Sources
    /// without a pin in their recipe are fetched and pinned here.
    Lock {
        /// Only these packages (same syntax as `build`).
        targets: Vec<String>,
        /// Move these packages to the highest versions their requirements allow and pin their
        /// sources again (e.g. after the host's busybox changed).
        #[arg(long, value_name = "NAME")]
        update: Vec<String>,
        /// Fail if noodle.lock would change, instead of changing it.
        #[arg(long)]
        locked: bool,
    },
    /// Print the build log of an output path (or of the last failed attempt to build it).
    Log {
        /// The output's store path (or a package of the channel, e.g. `hello@1.0.0`).
        path: String,
    },
    /// Show the store's default channel, or set it.
    Channel {
        /// A directory holding pkgs/ to build from when neither --channel nor NOODLE_CHANNEL is given.
        dir: Option<PathBuf>,
    },
    /// Install packages into the profile: builds (or reuses) them, adds a generation, switches.
    ///
    /// TARGET is what `build` takes (`hello`, `'crypto@^1.2'`, `pkgs/hello`) or a valid store
    /// path. A package replaces the installed one of the same name; the requirement it was
    /// installed with is remembered for `update`. Installing what is already installed adds no
    /// generation. Two packages providing the same file is an error naming both, unless
    /// --priority settles it.
    Install {
        #[arg(required = true, value_name = "TARGET")]
        targets: Vec<String>,
        /// Wins a file both it and another package provide when lower (Nix's meaning).
        #[arg(long, default_value_t = noodle_profiles::manifest::DEFAULT_PRIORITY, value_name = "N", allow_negative_numbers = true)]
        priority: i32,
        #[command(flatten)]
        activation: ActivationArgs,
    },
    /// Remove packages from the profile: a new generation without them, switched to.
    Remove {
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
        #[command(flatten)]
        activation: ActivationArgs,
    },
    /// Move installed packages to the highest versions their requirements allow.
    ///
    /// `noodle update` updates everything installed from the channel; `noodle update crypto`
    /// one package within the requirement it was installed with; `noodle update crypto
    /// '>=1.2.5'` (or `crypto@>=1.2.5`) with a new requirement, remembered from then on.
    Update {
        /// NAME, each optionally followed by a requirement.
        #[arg(value_name = "NAME [REQUIREMENT]")]
        args: Vec<String>,
        #[command(flatten)]
        activation: ActivationArgs,
    },
    /// List what the profile's current generation holds: name, version, store path.
    List,
    /// Activate a generation, health-gated; or recover, abort or commit an activation.
    ///
    /// An activation is journalled step by step: BUILT → VALIDATED (closure complete and
    /// intact, check commands present, `pre` checks green) → STAGED → ACTIVE (the profile
    /// switched, the activation scripts of new or changed packages run) → COMMITTED once every
    /// required health check stayed green for the whole window. A failing gate, script or
    /// required check instead switches back to the previous generation, re-runs its activation
    /// and checks it: REVERTED (exit 7), or FAILED (exit 8) when that one is not healthy either.
    /// A wanted check that is red is only a warning. `install`, `remove`, `update`, `profile
    /// switch` and `profile rollback` activate the same way and take the same options.
    Activate(ActivateArgs),
    /// The profile's current generation, its default, and its last activation with its checks.
    Status {
        /// Keep showing the activation in flight until it ends.
        #[arg(long)]
        follow: bool,
    },
    /// Every activation of the profile: when, from, to, strategy, outcome, why, how long.
    History {
        /// Counts and rates of commits, reversions and failures, and median durations.
        #[arg(long)]
        stats: bool,
    },
    /// Run the current generation's health checks now (once each, with their retries).
    Health,
    /// Work with the profile's generations: list, switch, roll back, compare, delete.
    #[command(subcommand)]
    Profile(ProfileCommand),
    /// Work with the store itself: add, inspect, verify, collect garbage.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Signing keys for binary caches and bundles.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Copy closures to a binary cache, or from one (verified) into this store.
    ///
    /// `--to file:///srv/cache PATH...` writes the closures of PATHs into a static cache
    /// directory that any web server can serve as it is (cache-info, <digest>.narinfo,
    /// nar/<filehash>.nar.zst), signing each path with the keys of `secret-key-files`.
    /// `--from URL PATH...` fetches the closures from a cache (file:// or http://, e.g. a
    /// peer's `noodle serve`): a path is registered only if a key of `trusted-public-keys`
    /// signed it and its NAR hash and size match; otherwise nothing is registered (exit 11).
    Copy(CopyArgs),
    /// Serve this store as a binary cache for peers (narinfos made and signed on the fly,
    /// NARs streamed and compressed), until interrupted.
    Serve {
        /// Address and port to listen on (port 0: any free port, printed at start).
        #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR:PORT")]
        listen: String,
        /// Requests served at the same time.
        #[arg(long, default_value_t = 8, value_name = "N")]
        threads: usize,
    },
    /// Portable bundles: one signed file holding closures, for machines with no network.
    #[command(subcommand)]
    Bundle(BundleCommand),
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Make an Ed25519 key pair: NAME.sec (mode 0600; keep it secret, list it in
    /// `secret-key-files`) and NAME.pub; prints the public key, for `trusted-public-keys`.
    Generate {
        /// The key's name, by convention the cache's host name and a number
        /// (`cache.example.org-1`).
        name: String,
        /// Where to write the two files.
        #[arg(long, default_value = ".", value_name = "DIR")]
        dir: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// Push into this cache (file:///dir).
    #[arg(
        long,
        conflicts_with = "from",
        required_unless_present = "from",
        value_name = "URL"
    )]
    pub to: Option<String>,
    /// Fetch from this cache (file:///dir or http://host:port).
    #[arg(long, value_name = "URL")]
    pub from: Option<String>,
    /// Store paths; their whole closures are copied.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum BundleCommand {
    /// Write the closures of PATHs into one file (tar + zstd: a manifest, its signatures by
    /// the keys of `secret-key-files`, and the NARs).
    Export {
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<String>,
        /// The bundle file to write.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
    /// Check a bundle completely (signature by a trusted key, every NAR's hash and size,
    /// closure) and only then register its paths. Prints the paths it holds.
    Import { file: PathBuf },
}

/// How to activate: shared by every command that switches a profile.
#[derive(Debug, Clone, Args)]
pub struct ActivationArgs {
    /// `switch`: active now and the default; `test`: active now, but the previous generation
    /// stays the default until `noodle activate --commit` (`--recover`, as at boot, returns to
    /// it); `boot`: the default from the next boot (or `noodle activate --recover`) on,
    /// nothing changes now; `dry-activate`: print what would change, change nothing.
    #[arg(long, default_value = "switch", value_parser = parse_strategy, value_name = "STRATEGY")]
    pub strategy: Strategy,
    /// How long the health checks must stay green after the switch (`0` runs each once;
    /// e.g. `5m` for a server) [default: 3s].
    #[arg(long, env = "NOODLE_WINDOW", value_parser = parse_duration, value_name = "DURATION")]
    pub window: Option<Duration>,
    /// Kill an activation script that runs longer than this [default: 2m].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub script_timeout: Option<Duration>,
    /// Re-hash every file of the generation's closure before switching (default: sizes and
    /// metadata only).
    #[arg(long)]
    pub verify_contents: bool,
    /// Run the activation in its own session, so it completes or reverts even if this terminal
    /// or SSH connection dies; this command follows it (`noodle status` does too) [default
    /// when stdin is not a terminal].
    #[arg(long, conflicts_with = "no_detach")]
    pub detach: bool,
    /// Run the activation inside this process even when stdin is not a terminal.
    #[arg(long)]
    pub no_detach: bool,
    /// Fail (exit 9) instead of waiting when another activation of the profile is in flight.
    #[arg(long)]
    pub no_wait: bool,
    /// Append one JSON line per event (state change, check or script run) to FILE (`-`:
    /// stdout), for monitoring.
    #[arg(long, value_name = "FILE")]
    pub events: Option<PathBuf>,
}

fn parse_strategy(text: &str) -> Result<Strategy, String> {
    text.parse()
}

#[derive(Debug, Args)]
#[group(id = "action", multiple = false)]
pub struct ActivateArgs {
    /// A generation number, or the store path of a generation (added to the profile as a new
    /// generation when none names it).
    #[arg(value_name = "GEN|PATH", group = "action")]
    pub target: Option<String>,
    /// Only finish or undo an interrupted activation (run this at boot): anything not
    /// COMMITTED is reverted, a generation under test returns to the default, and a
    /// `--strategy boot` generation becomes active.
    #[arg(long, group = "action")]
    pub recover: bool,
    /// Emergency stop: undo the activation in flight (or the generation under test) now.
    #[arg(long, group = "action")]
    pub abort: bool,
    /// Keep the generation under test (`--strategy test`): it becomes the default.
    #[arg(long, group = "action")]
    pub commit: bool,
    #[command(flatten)]
    pub activation: ActivationArgs,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// What to build (see above).
    #[arg(required = true, value_name = "TARGET")]
    pub targets: Vec<String>,
    /// Rebuild the (already built) targets in a fresh sandbox and compare: exit code 6 and the
    /// files that differ when the result is not identical.
    #[arg(long, conflicts_with = "dry_run")]
    pub check: bool,
    /// Print the plan: what would be fetched, built or reused, and why. Changes nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Fail if noodle.lock would change, instead of changing it.
    #[arg(long)]
    pub locked: bool,
    /// Builds to run at the same time [default: the number of cores].
    #[arg(short, long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Kill a build that runs longer than this [default: the recipe's `timeout`, else 3600].
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
    /// Kill a build that prints nothing for this long [default: the recipe's `max-silent`, else 600].
    #[arg(long, value_name = "SECONDS")]
    pub max_silent: Option<u64>,
    /// Keep the working directory of a failed build under var/tmp, to look at.
    #[arg(long)]
    pub keep_failed: bool,
}

#[derive(Debug, Subcommand)]
pub enum ProfileCommand {
    /// List the generations: number, date, what changed, and which is current.
    Generations,
    /// Activate generation N (see `noodle activate`).
    Switch {
        number: u64,
        #[command(flatten)]
        activation: ActivationArgs,
    },
    /// Activate the generation before the current one (see `noodle activate`).
    Rollback {
        #[command(flatten)]
        activation: ActivationArgs,
    },
    /// What differs between two generations: packages added, removed, upgraded, downgraded
    /// or rebuilt, and the closure size [default: the previous and the current generation;
    /// with one number, that one and the current].
    Diff { from: Option<u64>, to: Option<u64> },
    /// Delete generations: `old` (all but the current), `3..7`, `+5` (all but the five
    /// newest), numbers, or `--older-than 30d`. The current one is never deleted; run
    /// `noodle store gc` afterwards to free their paths.
    DeleteGenerations {
        #[arg(value_name = "WHICH", allow_hyphen_values = true)]
        which: Vec<String>,
        /// Generations created longer ago than this (`30d`, `12h`, `90m`).
        #[arg(long, value_name = "AGE")]
        older_than: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Add a file or directory tree; prints its store path.
    ///
    /// The tree is canonicalised (read-only modes, modification time 1, no setuid/setgid/sticky
    /// bits, no extended attributes, no hard links) and named by the BLAKE3 hash of its NAR
    /// serialisation. Adding the same contents again prints the same path and writes nothing.
    /// A symlink given as the argument is followed; symlinks inside the tree are kept.
    /// Creates the store if there is none yet.
    Add(AddArgs),
    /// Write the NAR serialisation of a store path (or any file tree) to stdout.
    ///
    /// The bytes are exactly those of `nix-store --dump` for the same tree.
    Dump {
        /// A store path, or any path on the filesystem.
        path: PathBuf,
    },
    /// Read a NAR from stdin and unpack it into DIR, which must not exist.
    ///
    /// Archives with unsorted or duplicate entries, forbidden names ('..', '/', NUL, over-long),
    /// nesting deeper than 64, or truncated data are refused and nothing is left behind.
    Restore {
        /// Where to unpack (created; must not exist).
        dir: PathBuf,
    },
    /// Show a valid path's hash, size, references and registration time.
    PathInfo {
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Print the closure of paths: everything they reference, recursively (themselves included).
    Closure {
        #[arg(required = true)]
        paths: Vec<String>,
        /// Follow referrers instead: everything that depends on the paths.
        #[arg(long)]
        referrers: bool,
    },
    /// Check the store: database against files, and with --check-contents every hash.
    ///
    /// Finds registered paths whose files are gone, unregistered leftovers (from a crash),
    /// wrong permissions or times, and with --check-contents names each damaged file.
    /// Exit code 3 when problems remain.
    Verify {
        /// Re-hash every path (in parallel) and compare with the recorded hash.
        #[arg(long)]
        check_contents: bool,
        /// Remove unregistered leftovers, fix metadata, and restore damaged or missing paths
        /// with good copies from the substituters (each swapped in atomically).
        #[arg(long)]
        repair: bool,
        /// Only these paths (default: the whole store).
        paths: Vec<String>,
    },
    /// Delete every path not reachable from a root (profiles, gcroots, running processes).
    Gc {
        /// List what would be deleted, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Stop once this much (NAR size) is freed, e.g. 500M, 2G.
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        max_freed: Option<u64>,
    },
    /// Hard-link identical files of valid paths together, to save space.
    Optimise,
    /// Delete specific paths; refused while they are referenced or rooted.
    Delete {
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// List the GC roots: each link and the store path it keeps alive.
    Roots,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// The file or directory to add.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Name part of the store path [default: the source's file name].
    #[arg(long)]
    pub name: Option<String>,
    /// Record references to valid store paths whose hashes occur in the tree's bytes.
    #[arg(long)]
    pub scan_references: bool,
    /// Keep the result alive: create the root var/gcroots/NAME pointing at it.
    #[arg(long, value_name = "NAME")]
    pub gc_root: Option<String>,
}

/// Parses `123`, `10K`, `500M`, `2G`, `1T` (powers of 1024), or with a trailing `B`/`iB`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text
        .trim()
        .trim_end_matches(['B', 'b'])
        .trim_end_matches('i');
    let (digits, shift) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 10),
        Some('M' | 'm') => (&t[..t.len() - 1], 20),
        Some('G' | 'g') => (&t[..t.len() - 1], 30),
        Some('T' | 't') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let n: f64 = digits.trim().parse().map_err(|_| {
        format!("'{text}' is not a size: use a number with an optional K, M, G or T suffix")
    })?;
    Ok((n * (1u64 << shift) as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("123"), Ok(123));
        assert_eq!(parse_size("10K"), Ok(10 * 1024));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("2MiB"), Ok(2 << 20));
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn grammar_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
