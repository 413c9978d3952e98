//! Channels for builder tests: a temporary directory holding `pkgs/`, with the repository's
//! bootstrap busybox recipe, plus recipes the test writes.

use std::path::{Path, PathBuf};
use std::process::Output;

use super::Noodle;

pub struct Channel {
    pub dir: PathBuf,
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in walkdir::WalkDir::new(from) {
        let entry = entry.expect("walk");
        let rel = entry.path().strip_prefix(from).expect("prefix");
        let dest = to.join(rel);
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&dest).expect("mkdir");
        } else {
            std::fs::copy(entry.path(), &dest).expect("copy");
        }
    }
}

pub fn repo_pkgs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("pkgs")
}

impl Channel {
    /// A channel with only the repository's busybox recipe.
    pub fn new(noodle: &Noodle) -> Self {
        let dir = noodle.dir.path().join("channel");
        copy_dir(&repo_pkgs().join("busybox"), &dir.join("pkgs/busybox"));
        Self { dir }
    }

    /// A copy of the repository's whole package set.
    pub fn repo(noodle: &Noodle) -> Self {
        let dir = noodle.dir.path().join("channel");
        copy_dir(&repo_pkgs(), &dir.join("pkgs"));
        Self { dir }
    }

    /// Writes `pkgs/<name>/<version>.toml`: `name`, `version` and then `body`.
    pub fn recipe(&self, name: &str, version: &str, body: &str) -> PathBuf {
        let path = self.dir.join(format!("pkgs/{name}/{version}.toml"));
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(
            &path,
            format!("name = \"{name}\"\nversion = \"{version}\"\n{body}"),
        )
        .expect("write recipe");
        path
    }

    /// A recipe depending on busybox whose build runs `script`.
    pub fn script(&self, name: &str, version: &str, script: &str) -> PathBuf {
        self.recipe(
            name,
            version,
            &format!(
                "[dependencies]\nbusybox = \"^1.35\"\n\n[build]\nscript = '''\n{script}\n'''\n"
            ),
        )
    }

    /// A file of the channel (e.g. a source), relative to its root.
    pub fn file(&self, rel: &str, contents: &str) -> PathBuf {
        let path = self.dir.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, contents).expect("write");
        path
    }

    pub fn lockfile(&self) -> String {
        std::fs::read_to_string(self.dir.join("noodle.lock")).unwrap_or_default()
    }

    /// Arguments that select this channel, then `args`.
    pub fn args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = vec!["--channel", self.dir.to_str().expect("utf-8")];
        all.extend_from_slice(args);
        all
    }
}

impl Noodle {
    /// `noodle --channel C <args>`.
    pub fn in_channel(&self, channel: &Channel, args: &[&str]) -> Output {
        self.run(&channel.args(args))
    }

    /// `noodle --channel C build <targets>`: succeeds, returns stdout's lines.
    pub fn build_ok(&self, channel: &Channel, targets: &[&str]) -> Vec<String> {
        let mut args = vec!["build"];
        args.extend_from_slice(targets);
        self.ok(&channel.args(&args))
            .lines()
            .map(str::to_owned)
            .collect()
    }
}
