use super::*;

fn fp() -> String {
    fingerprint(
        "/noodle/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x",
        &Blake3::of(b"nar"),
        120,
        &[],
    )
}

fn why(error: CacheError) -> String {
    match error {
        CacheError::Untrusted { why, .. } | CacheError::Key { why, .. } => why,
        other => panic!("unexpected error {other}"),
    }
}

#[test]
fn secret_and_public_text_round_trip() {
    let key = SecretKey::generate("cache.example.org-1").expect("key generation");
    let again = SecretKey::parse(&format!("{}\n", key.to_text())).expect("parses");
    assert_eq!(again.to_text(), key.to_text());
    assert_eq!(again.name(), "cache.example.org-1");
    let public = PublicKey::parse(&key.public().to_text()).expect("parses");
    assert_eq!(public, key.public());
    assert_eq!(public.name(), "cache.example.org-1");
    // Nix's layout: 64 bytes seed ‖ public, 32 bytes public.
    let (_, data) = key
        .to_text()
        .split_once(':')
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .expect("has a colon");
    let bytes = BASE64.decode(&data).expect("base64");
    assert_eq!(bytes.len(), 64);
    let (_, pdata) = public
        .to_text()
        .split_once(':')
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .expect("has a colon");
    assert_eq!(BASE64.decode(pdata).expect("base64"), bytes[32..]);
    assert!(!format!("{key:?}").contains(data.as_str()));
}

#[test]
fn generated_keys_differ() {
    let a = SecretKey::generate("k").expect("key generation");
    let b = SecretKey::generate("k").expect("key generation");
    assert_ne!(a.to_text(), b.to_text());
}

#[test]
fn bad_key_texts_are_refused_with_a_reason() {
    let good = SecretKey::generate("k").expect("key generation");
    let data = good.to_text()["k:".len()..].to_owned();
    for (text, needle) in [
        ("no-colon", "NAME:BASE64"),
        (
            &format!("bad name:{data}") as &str,
            "key name 'bad name' is invalid",
        ),
        (&format!(":{data}"), "key name '' is invalid"),
        ("k:!!!", "not base64"),
        (
            &format!("k:{}", BASE64.encode([1u8; 32])),
            "must be 64 bytes, this one is 32",
        ),
    ] {
        let error = why(SecretKey::parse(text).expect_err("must be refused"));
        assert!(error.contains(needle), "{text}: {error}");
    }
    // A public half that does not belong to the seed.
    let mut bytes = good.key.to_keypair_bytes();
    bytes[40] ^= 1;
    let error =
        why(SecretKey::parse(&format!("k:{}", BASE64.encode(bytes))).expect_err("must be refused"));
    assert!(error.contains("does not belong"), "{error}");
    // The secret never appears in an error.
    let shown = SecretKey::parse(&format!("k:{data}x"))
        .expect_err("must be refused")
        .to_string();
    assert!(!shown.contains(&data), "{shown}");

    let error = why(PublicKey::parse(&good.to_text()).expect_err("must be refused"));
    assert!(error.contains("must be 32 bytes"), "{error}");
    assert!(SecretKey::generate("a/b").is_err());
    assert!(SecretKey::generate("").is_err());
}

#[test]
fn sign_and_verify() {
    let key = SecretKey::generate("k").expect("key generation");
    let public = key.public();
    let signature = key.sign(&fp());
    assert!(signature.starts_with("k:"));
    assert!(public.verify(&fp(), &signature));
    assert!(!public.verify(&format!("{}x", fp()), &signature));
    // The same bytes under another name are not this key's signature.
    assert!(!public.verify(&fp(), &signature.replacen("k:", "j:", 1)));
    assert!(!public.verify(&fp(), "k:!!"));
    assert!(!public.verify(&fp(), "k:AAAA"));
    assert!(!public.verify(&fp(), "garbage"));
    let other = SecretKey::generate("k").expect("key generation");
    assert!(!public.verify(&fp(), &other.sign(&fp())));
}

#[test]
fn fingerprint_sorts_references() {
    let hash = Blake3::of(b"nar");
    let refs = ["/s/b-y".to_owned(), "/s/a-x".to_owned()];
    assert_eq!(
        fingerprint("/s/c-z", &hash, 7, &refs),
        format!("1;/s/c-z;blake3:{};7;/s/a-x,/s/b-y", hash.to_hex())
    );
    assert_eq!(
        fingerprint("/s/c-z", &hash, 7, &[]),
        format!("1;/s/c-z;{hash};7;")
    );
}

#[test]
fn trusted_keys_check_each_failure() {
    let trusted_key = SecretKey::generate("trusted-1").expect("key generation");
    let stranger = SecretKey::generate("stranger-1").expect("key generation");
    let trusted = TrustedKeys::parse(&[trusted_key.public().to_text()]).expect("parses");
    assert_eq!(trusted.names(), ["trusted-1"]);
    let path = "/noodle/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x";

    let ok = trusted
        .check(
            path,
            &fp(),
            &[stranger.sign(&fp()), trusted_key.sign(&fp())],
        )
        .expect("trusted signature");
    assert_eq!(ok, "trusted-1");

    let error = trusted
        .check(path, &fp(), &[])
        .expect_err("must be refused");
    assert!(error.to_string().starts_with(path), "{error}");
    assert!(why(error).contains("unsigned (no Sig)"));

    let error = why(trusted
        .check(
            path,
            &fp(),
            &[stranger.sign(&fp()), "other:AAAA".to_owned()],
        )
        .expect_err("must be refused"));
    assert!(
        error.contains(
            "signed only by untrusted key(s) other, stranger-1: add them to trusted-public-keys"
        ),
        "{error}"
    );

    let tampered = trusted_key.sign("1;something else");
    let error = why(trusted
        .check(path, &fp(), &[stranger.sign(&fp()), tampered])
        .expect_err("must be refused"));
    assert!(
        error.contains(
            "signature by trusted key trusted-1 does not match (tampered narinfo or wrong key)"
        ),
        "{error}"
    );

    for bad in ["trusted-1:not base64!", "trusted-1:", "trusted-1:AAAA"] {
        let error = why(trusted
            .check(path, &fp(), &[bad.to_owned()])
            .expect_err("must be refused"));
        assert!(error.contains("trusted-1 does not match"), "{bad}: {error}");
    }
    for bad in ["no colon at all", ":AAAA", "bad name:AAAA"] {
        let error = why(trusted
            .check(path, &fp(), &[bad.to_owned()])
            .expect_err("must be refused"));
        assert!(error.contains("malformed"), "{bad}: {error}");
    }

    let nobody = TrustedKeys::parse(&[]).expect("parses");
    assert!(nobody.is_empty());
    let error = why(nobody
        .check(path, &fp(), &[trusted_key.sign(&fp())])
        .expect_err("must be refused"));
    assert!(
        error.contains("no trusted-public-keys are configured"),
        "{error}"
    );
}

#[test]
fn trusted_keys_refuse_two_keys_with_one_name() {
    let a = SecretKey::generate("same")
        .expect("key generation")
        .public()
        .to_text();
    let b = SecretKey::generate("same")
        .expect("key generation")
        .public()
        .to_text();
    assert!(TrustedKeys::parse(&[a.clone(), a.clone()]).is_ok());
    let error = why(TrustedKeys::parse(&[a, b]).expect_err("must be refused"));
    assert!(
        error.contains("two different trusted public keys"),
        "{error}"
    );
    assert!(TrustedKeys::parse(&["junk".to_owned()]).is_err());
}

#[test]
fn write_pair_then_load() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let keys = dir.path().join("keys");
    let key = SecretKey::generate("cache-1").expect("key generation");
    let (secret, public) = key.write_pair(&keys).expect("key files written");
    assert_eq!(secret, keys.join("cache-1.sec"));
    assert_eq!(public, keys.join("cache-1.pub"));
    let mode = fs_err::metadata(&secret)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(
        SecretKey::load(&secret).expect("key file loads").to_text(),
        key.to_text()
    );
    let text = fs_err::read_to_string(&public).expect("read");
    assert_eq!(PublicKey::parse(&text).expect("parses"), key.public());
    // No temp files left behind.
    assert_eq!(fs_err::read_dir(&keys).expect("read_dir").count(), 2);

    let other = SecretKey::generate("cache-1").expect("key generation");
    let error = other
        .write_pair(&keys)
        .expect_err("must be refused")
        .to_string();
    assert!(
        error.contains("cache-1.sec") && error.contains("refusing to overwrite"),
        "{error}"
    );
    assert_eq!(
        SecretKey::load(&secret).expect("key file loads").to_text(),
        key.to_text()
    );

    // A lone public file is not replaced either, and no secret is left behind.
    fs_err::remove_file(&secret).expect("remove");
    let error = other
        .write_pair(&keys)
        .expect_err("must be refused")
        .to_string();
    assert!(error.contains("cache-1.pub"), "{error}");
    assert!(!secret.exists());
    assert_eq!(fs_err::read_dir(&keys).expect("read_dir").count(), 1);
}

#[test]
fn create_exclusive_never_replaces() {
    let dir = tempfile::tempdir().expect("temp dir");
    let target = dir.path().join("x.sec");
    fs_err::write(&target, "precious").expect("write");
    let error = create_exclusive(&target, "new", 0o600)
        .expect_err("must be refused")
        .to_string();
    assert!(error.contains("refusing to overwrite"), "{error}");
    assert_eq!(fs_err::read_to_string(&target).expect("read"), "precious");
    assert_eq!(fs_err::read_dir(dir.path()).expect("read_dir").count(), 1);
}

#[test]
fn load_names_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("k.sec");
    fs_err::write(&file, "junk\n").expect("write");
    let error = SecretKey::load(&file)
        .expect_err("must be refused")
        .to_string();
    assert!(error.contains(&file.display().to_string()), "{error}");
    let error = SecretKey::load(&dir.path().join("missing.sec"))
        .expect_err("must be refused")
        .to_string();
    assert!(error.contains("missing.sec"), "{error}");
}
