//! Several `secagg` processes registering into one store at the same time lose nothing.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::thread;

use secagg_core::certificate::{generate, GeneratedKeyType};
use secagg_core::PartyId;
use support::*;

#[test]
fn four_processes_times_fifty_registrations_give_two_hundred_rows() {
    let dir = tempfile::tempdir().unwrap();
    let home = node_home(dir.path(), "me");
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    let now = time::OffsetDateTime::now_utc();
    for i in 0..200 {
        let id = PartyId::parse(&format!("node_c{i:03}")).unwrap();
        let g = generate(&id, GeneratedKeyType::P256, 365, now).unwrap();
        std::fs::write(certs.join(format!("{i}.pem")), &g.certificate.pem).unwrap();
    }
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let home = home.clone();
            let certs = certs.clone();
            thread::spawn(move || {
                for k in 0..50 {
                    let i = w * 50 + k;
                    let cert = certs.join(format!("{i}.pem"));
                    let r = secagg(
                        &home,
                        &[
                            "certificate",
                            "register",
                            "-pk",
                            cert.to_str().unwrap(),
                            "-pi",
                            &format!("node_c{i:03}"),
                            "--ip",
                            "10.221.1.1",
                            "--port",
                            &(20000 + i).to_string(),
                        ],
                    );
                    r.ok();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker panicked");
    }
    let peers = peers_json(&home);
    let peers = peers["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 200);
    for (i, p) in peers.iter().enumerate() {
        assert_eq!(p["party_id"], format!("node_c{i:03}"));
        assert_eq!(p["port"], 20000 + i);
    }
}
