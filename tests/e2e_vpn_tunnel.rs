//! End to end over a real WireGuard tunnel: a VPN server, a researcher and two nodes, each in its
//! own network namespace joined to the server's by a veth pair, each running `wireguard-go` with
//! the configuration `secagg vpn` produced (server: init/genconf/add/server-config; peers:
//! keygen/client-config). The parties register each other at their VPN addresses and run
//! `secagg negotiate` inside their namespaces, so every byte of the negotiation crosses the tunnel
//! (node ↔ node traffic is forwarded by the server's namespace). Then `sk0 + Σ sk_i = 0` is checked.
//!
//! The lab (namespaces, veths, WireGuard, the checks that it works) is `support::wg_lab`, shared
//! with the agents' test over WireGuard (`tests/e2e_agent.rs`). Needs root, `ip netns`,
//! `wireguard-go` and `wg`; without them the test prints `skipped: <reason>` and passes.
//! Everything it creates (namespaces, veths, wireguard-go processes, control sockets) is named
//! with this process's id and removed by a drop guard, even when an assertion fails. No traffic
//! leaves the test's own namespaces.

use std::process::Child;
use std::time::{Duration, Instant};

use secagg_core::demo::{self, DemoParty, Federation};
use secagg_core::home::Home;

mod support;

use support::wg_lab::{
    check, must, parties_at_vpn_addresses, received_per_peer, socket_path, standard_lab,
    wait_bounded, StandardLab, Tunnel,
};

#[test]
fn negotiation_over_a_real_wireguard_tunnel() {
    let started = Instant::now();
    let pid = std::process::id();
    let tag = format!("{pid}");
    let Some(StandardLab {
        dir,
        mut lab,
        clients,
        tunnel: Tunnel {
            srv_ns,
            srv_if,
            vpn_ips,
        },
    }) = standard_lab(&tag)
    else {
        return;
    };
    let root = dir.path();
    assert_eq!(vpn_ips, ["10.222.0.2", "10.221.0.2", "10.221.0.3"]);
    let tunnel_ready = started.elapsed();

    // secagg identities at the VPN addresses, cross-registered with bundles.
    let homes = parties_at_vpn_addresses(root, &clients, &vpn_ips);

    // The negotiation, each party in its namespace, concurrently.
    let before = received_per_peer(&srv_ns, &srv_if);
    let session = secagg_core::session::new_session_id();
    let party_ids: Vec<String> = clients.iter().map(|c| c.party_id.to_owned()).collect();
    let negotiation_started = Instant::now();
    for (c, home) in clients.iter().zip(&homes) {
        let child = support::negotiate(home, &session, &party_ids)
            .timeout(Duration::from_secs(30))
            .wrapped_in(["ip", "netns", "exec", &c.ns])
            .command()
            .spawn()
            .expect("spawn secagg negotiate");
        lab.processes.push(child);
    }
    let children: Vec<Child> = lab.processes.drain(..).collect();
    let mut outputs = Vec::new();
    for (c, mut child) in clients.iter().zip(children) {
        wait_bounded(&mut child, Duration::from_secs(60), c.party_id);
        outputs.push((c.party_id, child.wait_with_output().unwrap()));
    }
    let negotiation = negotiation_started.elapsed();
    for (id, out) in &outputs {
        let stdout = check(out, &format!("negotiate of {id} over the VPN"));
        let j: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(j["session_id"], session.as_str(), "{id}: {stdout}");
    }

    // sk0 + Σ sk_i = 0 over the integers, from the stored keys.
    let federation = Federation {
        dir: root.to_owned(),
        parties: clients
            .iter()
            .zip(&homes)
            .map(|(c, home)| DemoParty {
                party_id: c.party_id.to_owned(),
                home: Home::new(home),
            })
            .collect(),
    };
    let v = demo::verify(&federation, &session.parse().unwrap()).unwrap();
    assert!(
        v.verified,
        "sk0 + Σ sk_i != 0 after negotiating over the VPN"
    );
    assert!(v.server_key_bits > 2000);

    // The traffic really went through the tunnel: the server received the negotiation's bytes
    // (TLS handshakes with certificates and shares) from every peer.
    let after = received_per_peer(&srv_ns, &srv_if);
    assert_eq!(after.len(), 3, "{after:?}");
    for (key, rx) in &after {
        let grew = rx - before.iter().find(|(k, _)| k == key).map_or(0, |(_, r)| *r);
        assert!(
            grew > 2_000,
            "peer {key} sent only {grew} bytes through the tunnel during the negotiation"
        );
    }
    println!(
        "tunnel up in {:.1} s, negotiation over WireGuard in {} ms, whole test {:.1} s",
        tunnel_ready.as_secs_f64(),
        negotiation.as_millis(),
        started.elapsed().as_secs_f64()
    );
    // Cleanup leaves nothing behind.
    let namespaces = lab.namespaces.clone();
    let ifaces: Vec<String> = lab.daemons.iter().map(|(i, _)| i.clone()).collect();
    drop(lab);
    let list = must("ip", &["netns", "list"]);
    for ns in &namespaces {
        assert!(
            !list
                .lines()
                .any(|l| l.split_whitespace().next() == Some(ns.as_str())),
            "{ns} left: {list}"
        );
    }
    for iface in &ifaces {
        assert!(!socket_path(iface).exists(), "{iface} socket left");
    }
}
