//! Ed25519 signing keys in Nix's text form (`name:base64`), the fingerprint they sign, and the
//! trusted-key check that decides whether a path from a cache may enter the store.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use fs_err::os::unix::fs::OpenOptionsExt;
use noodle_store::Blake3;

use crate::error::{CacheError, Result};

/// A key able to sign paths. Its `Debug` shows only the name, so it never ends up in a log.
#[derive(Clone)]
pub struct SecretKey {
    name: String,
    key: SigningKey,
}

/// The public half: names a signer and checks its signatures.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    name: String,
    key: VerifyingKey,
}

fn key_error(what: &str, why: impl Into<String>) -> CacheError {
    CacheError::Key {
        what: what.to_owned(),
        why: why.into(),
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn check_name(what: &str, name: &str) -> Result<()> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(key_error(
            what,
            format!(
                "key name '{name}' is invalid: names are [A-Za-z0-9._-]+, e.g. cache.example.org-1"
            ),
        ))
    }
}

/// Splits `name:base64` and decodes the base64 into exactly `N` bytes.
fn split_key<const N: usize>(what: &str, text: &str, kind: &str) -> Result<(String, [u8; N])> {
    let (name, data) = text
        .split_once(':')
        .ok_or_else(|| key_error(what, format!("expected NAME:BASE64 ({kind})")))?;
    check_name(what, name)?;
    let bytes = BASE64
        .decode(data)
        .map_err(|e| key_error(what, format!("the part after '{name}:' is not base64: {e}")))?;
    let bytes: [u8; N] = bytes.try_into().map_err(|b: Vec<u8>| {
        key_error(
            what,
            format!("{kind} must be {N} bytes, this one is {}", b.len()),
        )
    })?;
    Ok((name.to_owned(), bytes))
}

impl SecretKey {
    pub fn generate(name: &str) -> Result<Self> {
        check_name("name", name)?;
        Ok(Self {
            name: name.to_owned(),
            key: SigningKey::generate(&mut rand_core::OsRng),
        })
    }

    pub fn parse(text: &str) -> Result<Self> {
        Self::parse_as("secret key text", text)
    }

    /// `what` names the source in errors; the key material itself is never quoted.
    fn parse_as(what: &str, text: &str) -> Result<Self> {
        let (name, bytes) =
            split_key::<64>(what, text.trim(), "a secret key: seed and public key")?;
        let key = SigningKey::from_keypair_bytes(&bytes).map_err(|_| {
            key_error(
                what,
                format!("the public half of secret key '{name}' does not belong to its seed (damaged key file?)"),
            )
        })?;
        Ok(Self { name, key })
    }

    pub fn load(file: &Path) -> Result<Self> {
        let text = fs_err::read_to_string(file)?;
        Self::parse_as(&format!("file '{}'", file.display()), &text)
    }

    pub fn to_text(&self) -> String {
        format!(
            "{}:{}",
            self.name,
            BASE64.encode(self.key.to_keypair_bytes())
        )
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn public(&self) -> PublicKey {
        PublicKey {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// `name:base64(signature)`, the text of a `Sig:` line.
    pub fn sign(&self, fingerprint: &str) -> String {
        let signature = self.key.sign(fingerprint.as_bytes());
        format!("{}:{}", self.name, BASE64.encode(signature.to_bytes()))
    }

    /// Writes `dir/NAME.sec` (mode 0600) and `dir/NAME.pub`. Neither may exist already: a
    /// secret key that is overwritten is lost for good, with every signature made by it.
    pub fn write_pair(&self, dir: &Path) -> Result<(PathBuf, PathBuf)> {
        fs_err::create_dir_all(dir)?;
        let secret = dir.join(format!("{}.sec", self.name));
        let public = dir.join(format!("{}.pub", self.name));
        for file in [&secret, &public] {
            if fs_err::symlink_metadata(file).is_ok() {
                return Err(refuse_overwrite(file));
            }
        }
        create_exclusive(&secret, &format!("{}\n", self.to_text()), 0o600)?;
        if let Err(e) = create_exclusive(&public, &format!("{}\n", self.public().to_text()), 0o644)
        {
            // Only this call created the secret file: leave nothing half-made behind.
            let _ = fs_err::remove_file(&secret);
            return Err(e);
        }
        noodle_store::sync::fsync_dir(dir)?;
        Ok((secret, public))
    }
}

fn refuse_overwrite(file: &Path) -> CacheError {
    key_error(
        &format!("file '{}'", file.display()),
        "already exists; refusing to overwrite it (move it away or choose another key name)",
    )
}

/// Removes a temporary file unless it was consumed.
struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = fs_err::remove_file(path);
        }
    }
}

/// Writes `text` to a temp file (fsynced), then hard-links it as `target`: the link fails if
/// `target` appeared meanwhile, where a rename would silently replace it.
fn create_exclusive(target: &Path, text: &str, mode: u32) -> Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = target.parent().unwrap_or(Path::new("."));
    let base = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let temp_path = dir.join(format!(".{base}.tmp-{}-{n}", std::process::id()));
    let mut file = fs_err::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temp_path)?;
    let temp = TempFile(Some(temp_path.clone()));
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    drop(file);
    match fs_err::hard_link(&temp_path, target) {
        Ok(()) => {
            drop(temp);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(refuse_overwrite(target)),
        Err(e) => Err(e.into()),
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({})", self.name)
    }
}

impl PublicKey {
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        let what = format!("'{text}'");
        let (name, bytes) = split_key::<32>(&what, text, "a public key")?;
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|_| key_error(&what, "not a valid Ed25519 public key"))?;
        Ok(Self { name, key })
    }

    pub fn to_text(&self) -> String {
        format!("{}:{}", self.name, BASE64.encode(self.key.as_bytes()))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether `signature` (`name:base64`) is this key's signature of `fingerprint`. Anything
    /// malformed is simply not a match.
    pub fn verify(&self, fingerprint: &str, signature: &str) -> bool {
        let Some((name, data)) = signature.split_once(':') else {
            return false;
        };
        if name != self.name {
            return false;
        }
        let Ok(bytes) = BASE64.decode(data.trim()) else {
            return false;
        };
        let Ok(bytes) = <[u8; 64]>::try_from(bytes) else {
            return false;
        };
        let signature = Signature::from_bytes(&bytes);
        self.key
            .verify_strict(fingerprint.as_bytes(), &signature)
            .is_ok()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

/// What a signature covers: `1;<path>;<nar hash>;<nar size>;<sorted references, ','-joined>`.
pub fn fingerprint(path: &str, nar_hash: &Blake3, nar_size: u64, references: &[String]) -> String {
    let mut references: Vec<&str> = references.iter().map(String::as_str).collect();
    references.sort_unstable();
    format!("1;{path};{nar_hash};{nar_size};{}", references.join(","))
}

/// The keys whose signatures let a path in (`trusted-public-keys`).
#[derive(Clone, Debug, Default)]
pub struct TrustedKeys {
    keys: Vec<PublicKey>,
}

impl TrustedKeys {
    pub fn parse(texts: &[String]) -> Result<Self> {
        let mut keys: Vec<PublicKey> = Vec::new();
        for text in texts {
            let key = PublicKey::parse(text)?;
            match keys.iter().find(|k| k.name == key.name) {
                Some(known) if *known == key => {}
                // Signatures are matched to keys by name: two keys with one name would make
                // "signed by K" ambiguous.
                Some(_) => {
                    return Err(key_error(
                        &format!("'{}'", key.name),
                        "two different trusted public keys have this name; keep only the right one",
                    ))
                }
                None => keys.push(key),
            }
        }
        Ok(Self { keys })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn names(&self) -> Vec<&str> {
        self.keys.iter().map(PublicKey::name).collect()
    }

    /// The name of the trusted key that signed `fingerprint`, or `CacheError::Untrusted`
    /// saying which check failed.
    pub fn check(&self, path: &str, fingerprint: &str, signatures: &[String]) -> Result<String> {
        let untrusted = |why: String| CacheError::Untrusted {
            path: path.to_owned(),
            why,
        };
        if signatures.is_empty() {
            return Err(untrusted(
                "unsigned (no Sig); only paths signed by a trusted key are accepted".to_owned(),
            ));
        }
        let mut mismatched: Vec<&str> = Vec::new();
        let mut unknown: Vec<&str> = Vec::new();
        let mut malformed: Vec<&str> = Vec::new();
        for signature in signatures {
            let name = signature.split_once(':').map(|(n, _)| n);
            match name {
                Some(name) if valid_name(name) => match self.keys.iter().find(|k| k.name == name) {
                    Some(key) if key.verify(fingerprint, signature) => return Ok(name.to_owned()),
                    Some(key) => mismatched.push(key.name()),
                    None => unknown.push(name),
                },
                _ => malformed.push(signature),
            }
        }
        // A failing trusted signature is the alarming case (tampering): report it first.
        if !mismatched.is_empty() {
            mismatched.sort_unstable();
            mismatched.dedup();
            return Err(untrusted(format!(
                "signature by trusted key {} does not match (tampered narinfo or wrong key)",
                mismatched.join(", ")
            )));
        }
        if !unknown.is_empty() {
            unknown.sort_unstable();
            unknown.dedup();
            let none = if self.keys.is_empty() {
                " (no trusted-public-keys are configured)"
            } else {
                ""
            };
            return Err(untrusted(format!(
                "signed only by untrusted key(s) {}: add them to trusted-public-keys if you trust them{none}",
                unknown.join(", ")
            )));
        }
        let shown: String = malformed[0].chars().take(40).collect();
        Err(untrusted(format!(
            "signature {shown:?} is malformed (expected NAME:BASE64), so it does not match"
        )))
    }
}

#[cfg(test)]
mod tests;
