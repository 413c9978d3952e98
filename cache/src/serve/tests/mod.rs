//! A real store served on 127.0.0.1, fetched the way a peer would.

mod fixture;

use std::io::Read;
use std::time::Duration;

use noodle_store::Blake3;

use super::{ServeOptions, Server};
use crate::keys::{self, SecretKey};
use crate::narinfo::{CacheInfo, Compression, NarInfo};
use fixture::*;

#[test]
fn cache_info_names_the_store() {
    let fx = fixture();
    with_server(&fx, 2, |base| {
        let url = format!("{base}/cache-info");
        let text = ureq::get(&url)
            .call()
            .expect("get")
            .into_string()
            .expect("text");
        let info = CacheInfo::parse(&url, &text).expect("parse");
        assert_eq!(info.store_dir, "/noodle/store");
        assert_eq!(info.priority, 40);
        assert!(info.want_mass_query);
        let head = ureq::head(&url).call().expect("head");
        assert_eq!(head.status(), 200);
        assert!(head.into_string().expect("body").is_empty());
    });
}

#[test]
fn narinfo_describes_the_path_and_is_signed() {
    let fx = fixture();
    let log = with_server(&fx, 2, |base| {
        let url = format!("{base}/{}.narinfo", digest(&fx.app.path));
        let text = ureq::get(&url)
            .call()
            .expect("get")
            .into_string()
            .expect("text");
        let store_dir = noodle_store::StoreDir::new("/noodle/store").expect("dir");
        let info = NarInfo::parse(&url, &text, &store_dir).expect("parse");
        let nar_hash = Blake3::parse(&fx.app.nar_hash).expect("hash");
        assert_eq!(info.store_path, fx.app.path);
        assert_eq!(info.nar_hash, nar_hash);
        assert_eq!(info.nar_size, fx.app.nar_size);
        assert_eq!(info.references, fx.app.references);
        assert_eq!(info.compression, Compression::Zstd);
        assert_eq!((info.file_hash, info.file_size), (None, None));
        assert_eq!(
            format!("{base}/{}", info.url),
            nar_url(base, &fx.app),
            "the narinfo names the NAR this server serves"
        );
        // Signed over the fingerprint of what the store recorded, by the server's key.
        let fingerprint =
            keys::fingerprint(&fx.app.path, &nar_hash, fx.app.nar_size, &fx.app.references);
        assert_eq!(info.signatures.len(), 1, "{text}");
        assert!(fx.key.public().verify(&fingerprint, &info.signatures[0]));
        let other = SecretKey::generate("test-cache-1").expect("key");
        assert!(!other.public().verify(&fingerprint, &info.signatures[0]));
    });
    assert!(
        log.iter()
            .any(|l| l.contains(".narinfo") && l.contains(" 200 ")),
        "{log:?}"
    );
}

#[test]
fn stored_signatures_are_served_beside_the_servers_own() {
    let fx = fixture();
    let lib = &fx.lib;
    let nar_hash = Blake3::parse(&lib.nar_hash).expect("hash");
    let fingerprint = keys::fingerprint(&lib.path, &nar_hash, lib.nar_size, &lib.references);
    let upstream = SecretKey::generate("upstream-1").expect("key");
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        // Signed upstream: both signatures.
        (vec![upstream.sign(&fingerprint)], 2),
        // Already signed by this server's key: not twice.
        (vec![fx.key.sign(&fingerprint)], 1),
    ];
    for (n, (stored, count)) in cases.into_iter().enumerate() {
        let peer = imported_lib(&fx, &dir.path().join(n.to_string()), stored.clone());
        assert_eq!(peer.lib.signatures, stored, "the store keeps them");
        with_server(&peer, 1, |base| {
            let url = format!("{base}/{}.narinfo", digest(&lib.path));
            let text = ureq::get(&url)
                .call()
                .expect("get")
                .into_string()
                .expect("text");
            let store_dir = noodle_store::StoreDir::new("/noodle/store").expect("dir");
            let info = NarInfo::parse(&url, &text, &store_dir).expect("parse");
            assert_eq!(info.signatures.len(), count, "{text}");
            assert_eq!(info.signatures[0], stored[0], "stored ones first");
            assert!(info.signatures.contains(&fx.key.sign(&fingerprint)));
            for key in [&upstream, &fx.key] {
                let by: Vec<_> = info
                    .signatures
                    .iter()
                    .filter(|s| s.starts_with(&format!("{}:", key.name())))
                    .collect();
                assert!(by.len() <= 1, "{text}");
                assert!(by.iter().all(|s| key.public().verify(&fingerprint, s)));
            }
        });
    }
}

#[test]
fn nar_is_the_paths_archive_streamed_compressed() {
    let fx = fixture();
    with_server(&fx, 2, |base| {
        for info in [&fx.lib, &fx.app] {
            let response = ureq::get(&nar_url(base, info)).call().expect("get");
            assert_eq!(response.header("Content-Type"), Some("application/zstd"));
            assert_eq!(response.header("Transfer-Encoding"), Some("chunked"));
            assert_eq!(response.header("Content-Length"), None);
            let mut nar = Vec::new();
            zstd::Decoder::new(response.into_reader())
                .expect("decoder")
                .read_to_end(&mut nar)
                .expect("a complete zstd stream");
            assert_eq!(nar.len() as u64, info.nar_size, "{}", info.path);
            assert_eq!(Blake3::of(&nar).to_string(), info.nar_hash, "{}", info.path);
        }
        let head = ureq::head(&nar_url(base, &fx.app)).call().expect("head");
        assert_eq!(head.status(), 200);
        assert!(head.into_string().expect("body").is_empty());
    });
}

#[test]
fn unknown_paths_and_stale_hashes_are_not_found() {
    let fx = fixture();
    with_server(&fx, 2, |base| {
        let unknown = "0123456789abcdfghijklmnpqrsvwxyz";
        assert_eq!(
            status_of(ureq::get(&format!("{base}/{unknown}.narinfo")).call()),
            404
        );
        let stale = format!(
            "{base}/nar/{}-{}.nar.zst",
            digest(&fx.app.path),
            "0".repeat(64)
        );
        assert_eq!(status_of(ureq::get(&stale).call()), 404);
        let elsewhere = nar_url(base, &fx.app).replace(&digest(&fx.app.path), unknown);
        assert_eq!(status_of(ureq::get(&elsewhere).call()), 404);
        // Another path's NAR under this one's digest.
        let swapped = nar_url(base, &fx.lib).replace(&digest(&fx.lib.path), &digest(&fx.app.path));
        assert_eq!(status_of(ureq::get(&swapped).call()), 404);
    });
}

#[test]
fn only_the_three_shapes_and_only_get_and_head() {
    let fx = fixture();
    let app = digest(&fx.app.path);
    with_server(&fx, 2, |base| {
        for target in [
            "/../cache-info".to_owned(),
            "/nar/../cache-info".into(),
            "/%2e%2e/cache-info".into(),
            "//cache-info".into(),
            "/cache-info?x".into(),
            format!("/./{app}.narinfo"),
            format!("/nar/../{app}.narinfo"),
            format!("/{}.narinfo", app.to_uppercase()),
            format!("/{}", fx.app.path),
            "/nar/".into(),
            "/etc/passwd".into(),
        ] {
            let (head, _) = raw(base, &format!("GET {target} HTTP/1.1"), "");
            assert_eq!(status_line(&head), "HTTP/1.1 404 Not Found", "{target}");
        }
        for method in ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"] {
            let response = ureq::request(method, &format!("{base}/cache-info")).call();
            let Err(ureq::Error::Status(405, response)) = response else {
                panic!("{method} must be refused");
            };
            assert_eq!(response.header("Allow"), Some("GET, HEAD"));
        }
    });
}

#[test]
fn nars_are_never_buffered_for_peers_that_cannot_take_chunks() {
    let fx = fixture();
    with_server(&fx, 2, |base| {
        let target = nar_url("", &fx.app);
        let (head, body) = raw(base, &format!("GET {target} HTTP/1.0"), "");
        assert!(status_line(&head).contains(" 505 "), "{head}");
        assert!(String::from_utf8_lossy(&body).contains("HTTP/1.1"));
        let (head, _) = raw(base, &format!("GET {target} HTTP/1.1"), "TE: identity\r\n");
        assert!(status_line(&head).contains(" 400 "), "{head}");
        // Small text is still served to them.
        let (head, body) = raw(base, "GET /cache-info HTTP/1.0", "");
        assert!(status_line(&head).contains(" 200 "), "{head}");
        assert!(String::from_utf8_lossy(&body).contains("StoreDir: /noodle/store"));
    });
}

#[test]
fn a_stalled_peer_does_not_hold_up_the_others() {
    let fx = fixture();
    with_server(&fx, 2, |base| {
        // Headers read, body not: the worker sending it blocks once the socket is full.
        let stalled = ureq::get(&nar_url(base, &fx.app)).call().expect("get");
        std::thread::sleep(Duration::from_millis(300));
        let quick = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(5))
            .build();
        for _ in 0..5 {
            let url = format!("{base}/{}.narinfo", digest(&fx.lib.path));
            assert_eq!(status_of(quick.get(&url).call()), 200);
        }
        drop(stalled);
    });
}

#[test]
fn a_damaged_path_is_refused_not_served() {
    let fx = fixture();
    let physical = fx.root.join(fx.lib.path.trim_start_matches('/'));
    let data = physical.join("share/data");
    make_writable(&physical);
    std::fs::write(&data, "hello, but longer\n").expect("damage");
    let log = with_server(&fx, 2, |base| {
        assert_eq!(status_of(ureq::get(&nar_url(base, &fx.lib)).call()), 500);
        // The narinfo is still served: it is what the database holds.
        let narinfo = format!("{base}/{}.narinfo", digest(&fx.lib.path));
        assert_eq!(status_of(ureq::get(&narinfo).call()), 200);
    });
    let line = log.iter().find(|l| l.contains(" 500 ")).expect("logged");
    assert!(
        line.contains(&fx.lib.path) && line.contains("damaged"),
        "{line}"
    );
    assert!(line.contains("noodle store verify"), "{line}");
}

#[test]
fn bind_errors_name_the_address_or_the_store() {
    let fx = fixture();
    let options = |listen: String| ServeOptions {
        listen,
        keys: Vec::new(),
        priority: 40,
        threads: 1,
    };
    let first = Server::bind(&fx.root, options("127.0.0.1:0".into())).expect("bind");
    let taken = first.local_addr().to_string();
    let err = Server::bind(&fx.root, options(taken.clone()))
        .err()
        .expect("the port is taken");
    assert!(
        err.to_string()
            .contains(&format!("cannot listen on {taken}")),
        "{err}"
    );
    let nowhere = tempfile::tempdir().expect("tempdir");
    let err = Server::bind(nowhere.path(), options("127.0.0.1:0".into()))
        .err()
        .expect("no store there");
    assert!(err.to_string().contains("noodle init"), "{err}");
}
