//! Profile test helpers: packages made from plain trees (`store add`, no builds, so fast),
//! and readers for a profile's links and generations.

use std::path::PathBuf;

use super::Noodle;

impl Noodle {
    /// Adds a package tree `<name>-<version>` holding `files` (relative path → contents;
    /// paths under `bin/` are executable) and returns its store path.
    pub fn package(&self, name: &str, version: &str, files: &[(&str, &str)]) -> String {
        use std::os::unix::fs::PermissionsExt;
        let dir = self.scratch(&format!("pkg-{name}-{version}"));
        for (rel, contents) in files {
            let path = dir.join(rel);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(&path, contents).expect("write");
            if rel.starts_with("bin/") {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                    .expect("chmod");
            }
        }
        self.add_with(&dir, &["--name", &format!("{name}-{version}")])
    }

    /// The default profile of a store under --root, as root: per-user/<user>/profile.
    pub fn default_profile(&self) -> PathBuf {
        let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .ok()
            .flatten()
            .map(|u| u.name)
            .expect("a user name");
        self.root()
            .join("noodle/var/profiles/per-user")
            .join(user)
            .join("profile")
    }

    /// The generation number the profile link points at.
    pub fn current_generation(&self, profile: &std::path::Path) -> Option<u64> {
        let target = std::fs::read_link(profile).ok()?;
        let name = target.file_name()?.to_string_lossy().into_owned();
        name.rsplit_once("-link")?
            .0
            .rsplit_once('-')?
            .1
            .parse()
            .ok()
    }

    /// `profile generations --json` for `args` (e.g. `--profile P`): (number, current) pairs.
    pub fn generation_numbers(&self, args: &[&str]) -> Vec<(u64, bool)> {
        let mut all = args.to_vec();
        all.extend(["profile", "generations"]);
        self.json(&all)
            .as_array()
            .expect("array")
            .iter()
            .map(|g| {
                (
                    g["number"].as_u64().expect("number"),
                    g["current"].as_bool().expect("current"),
                )
            })
            .collect()
    }

    /// `list --json` for `args`: (name, version, path) of each installed package.
    pub fn installed(&self, args: &[&str]) -> Vec<(String, String, String)> {
        let mut all = args.to_vec();
        all.push("list");
        self.json(&all)["packages"]
            .as_array()
            .expect("packages")
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().expect("name").to_owned(),
                    p["version"].as_str().expect("version").to_owned(),
                    p["path"].as_str().expect("path").to_owned(),
                )
            })
            .collect()
    }
}

/// Every entry of the profile's directory with its link target (or "file"): the profile link
/// and the generation links.
pub fn profile_dir_state(profile: &std::path::Path) -> std::collections::BTreeMap<String, String> {
    let dir = profile.parent().expect("dir");
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| {
                    let e = e.expect("entry");
                    let target = std::fs::read_link(e.path())
                        .map(|t| t.display().to_string())
                        .unwrap_or_else(|_| "file".into());
                    (e.file_name().to_string_lossy().into_owned(), target)
                })
                .collect()
        })
        .unwrap_or_default()
}
