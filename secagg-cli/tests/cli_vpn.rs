//! `secagg vpn` through the real binary: the server's registry (init, genconf, add, remove,
//! removeconf, list, server-config), a peer's keygen and client-config, every refusal leaving the
//! registry and the files unchanged, and (as root, with wireguard-go) the rendered configurations
//! applied with `wg setconf` inside a network namespace.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use secagg_core::ErrorKind;
use support::{secagg, Run};

fn init_server(dir: &Path, network: &str) -> PathBuf {
    let home = dir.join("vpnserver");
    secagg(
        &home,
        &[
            "vpn",
            "init",
            "--public-addr",
            "vpn.example.org",
            "--network",
            network,
        ],
    )
    .ok();
    home
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// The registry (list --format json) and every file under <home>/vpn with its content.
fn snapshot(home: &Path) -> (serde_json::Value, Vec<(PathBuf, Vec<u8>)>) {
    let list = secagg(home, &["vpn", "list", "--format", "json"])
        .ok()
        .json();
    let mut files = Vec::new();
    let mut stack = vec![home.join("vpn")];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p.clone());
                files.push((p, Vec::new()));
            } else {
                let c = fs::read(&p).unwrap();
                files.push((p, c));
            }
        }
    }
    files.sort();
    (list, files)
}

fn genconf(home: &Path, kind: &str, id: &str) -> serde_json::Value {
    secagg(home, &["vpn", "genconf", kind, id, "--format", "json"])
        .ok()
        .json()
}

fn keygen(home: &Path) -> String {
    secagg(home, &["vpn", "keygen"])
        .ok()
        .stdout
        .trim()
        .to_owned()
}

#[test]
fn server_registry_allocates_like_fedbiomed_and_writes_private_config_env() {
    let dir = tempfile::tempdir().unwrap();
    let home = init_server(dir.path(), "10.220.0.0/14");
    let init = secagg(&home, &["vpn", "list", "--format", "json"])
        .ok()
        .json();
    assert_eq!(init["server"]["server_address"], "10.220.0.1");
    assert_eq!(init["server"]["endpoint"], "vpn.example.org:51820");
    assert_eq!(init["peers"].as_array().unwrap().len(), 0);
    let pools: Vec<String> = init["server"]["pools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{} {}",
                p["type"].as_str().unwrap(),
                p["pool"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        pools,
        [
            "management 10.220.0.0/16",
            "node 10.221.0.0/16",
            "researcher 10.222.0.0/16"
        ]
    );
    for (kind, id, addr) in [
        ("management", "mqtt", "10.220.0.2"),
        ("management", "restful", "10.220.0.3"),
        ("researcher", "researcher1", "10.222.0.2"),
        ("node", "NODETAG", "10.221.0.2"),
        ("node", "NODE2TAG", "10.221.0.3"),
    ] {
        let g = genconf(&home, kind, id);
        assert_eq!(g["address"], addr, "{kind}/{id}");
    }
    // Text mode prints the path of the file on stdout.
    let r = secagg(&home, &["vpn", "genconf", "node", "node3"]);
    r.ok();
    let path = PathBuf::from(r.stdout.trim());
    assert_eq!(path, home.join("vpn/peers/node/node3/config.env"));
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&home.join("vpn")), 0o700);
    let text = fs::read_to_string(&path).unwrap();
    let server_key = init["server"]["public_key"].as_str().unwrap();
    for line in [
        "# Fed-BioMed node configuration file",
        "# KEEP THIS FILE PRIVATE!",
        "export FEDBIOMED_NODEID=node3",
        "export FEDBIOMED_NET_IP=10.220.0.1",
        "export VPN_IP=10.221.0.4",
        "export VPN_SUBNET_PREFIX=14",
        "export USE_WG_KERNEL_MOD=false",
        "export VPN_SERVER_ENDPOINT=vpn.example.org:51820",
        "export VPN_SERVER_ALLOWED_IPS=10.220.0.0/14",
        &format!("export VPN_SERVER_PUBLIC_KEY={server_key}"),
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} missing:\n{text}");
    }
    let r_text =
        fs::read_to_string(home.join("vpn/peers/researcher/researcher1/config.env")).unwrap();
    assert!(r_text.contains("export FEDBIOMED_ID=researcher1\n"));
    let m_text = fs::read_to_string(home.join("vpn/peers/management/mqtt/config.env")).unwrap();
    assert!(!m_text.contains("FEDBIOMED_"));
    // The PSK never shows in list output.
    let psk = text
        .lines()
        .find_map(|l| l.strip_prefix("export VPN_SERVER_PSK="))
        .unwrap();
    let list = secagg(&home, &["vpn", "list", "--format", "json"]);
    assert!(!list.ok().stdout.contains(psk));
    let listed = secagg(&home, &["vpn", "list"]);
    let table = listed.ok().stdout.clone();
    assert!(
        table.contains("NODETAG") && table.contains("10.221.0.2/32") && table.contains("no_key")
    );
    // Issue 23, item 14: the pools' usage was only in the JSON output.
    let json: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    let node_pool = json["server"]["pools"]
        .as_array()
        .or_else(|| json["pools"].as_array())
        .and_then(|pools| pools.iter().find(|p| p["type"] == "node").cloned())
        .expect("the node pool in the JSON output");
    let line = format!(
        "node pool {}: {} of {} addresses used",
        node_pool["pool"].as_str().unwrap(),
        node_pool["used"],
        node_pool["capacity"]
    );
    assert!(
        listed.stderr.contains(&line),
        "{line:?} not in:\n{}",
        listed.stderr
    );
}

#[test]
fn refused_commands_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let home = init_server(dir.path(), "10.9.0.0/28");
    genconf(&home, "node", "n1");
    genconf(&home, "node", "n2");
    genconf(&home, "researcher", "r1");
    let peer = dir.path().join("peer");
    let key = keygen(&peer);
    let added = secagg(&home, &["vpn", "add", "node", "n1", &key]);
    // Issue 23, item 12: the server's private key is printed only when asked for.
    let refused = secagg(&home, &["vpn", "server-config"]);
    refused.fails_with(3, "holds a private key");
    assert!(refused.stdout.is_empty(), "{}", refused.stdout);
    assert!(refused.stderr.contains("-o FILE"), "{}", refused.stderr);
    // Regression (issue 23, item 12): the hint said `server-config > wg0.conf`, which leaves
    // the server's private key world-readable; it says `-o` (0600) now.
    assert!(
        added.ok().stderr.contains("server-config -o wg0.conf")
            && !added.stderr.contains("server-config >"),
        "{}",
        added.stderr
    );
    let before = snapshot(&home);
    let b64_31 = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEB"; // 30 bytes
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (
            vec!["vpn", "init", "--public-addr", "h"],
            5,
            "already set up",
        ),
        (
            vec!["vpn", "genconf", "node", "n3"],
            5,
            "pool 10.9.0.4/30 is full",
        ),
        (
            vec!["vpn", "genconf", "node", "n1"],
            5,
            "node/n1 already exists",
        ),
        (
            vec!["vpn", "genconf", "nodes", "x"],
            3,
            "unknown VPN peer type `nodes`",
        ),
        (
            vec!["vpn", "genconf", "node", "../x"],
            3,
            "contains the character '/'",
        ),
        (
            vec!["vpn", "genconf", "node", ""],
            3,
            "VPN peer id is empty",
        ),
        (
            vec!["vpn", "add", "node", "n2", "not-base64!"],
            3,
            "not valid base64",
        ),
        (
            vec!["vpn", "add", "node", "n2", b64_31],
            3,
            "decodes to 30 bytes",
        ),
        (vec!["vpn", "add", "node", "n2", ""], 3, "is empty"),
        (
            vec!["vpn", "add", "node", "n2", &key],
            5,
            "already belongs to VPN peer node/n1",
        ),
        (
            vec!["vpn", "add", "node", "zz", &key],
            4,
            "node/zz does not exist",
        ),
        (
            vec!["vpn", "add", "management", "n1", &key],
            4,
            "management/n1 does not exist",
        ),
        (
            vec!["vpn", "remove", "researcher", "n1"],
            4,
            "researcher/n1 does not exist",
        ),
        (
            vec!["vpn", "removeconf", "node", "r1"],
            4,
            "node/r1 does not exist",
        ),
        (
            vec!["vpn", "removeconf", "bogus", "r1"],
            3,
            "unknown VPN peer type",
        ),
    ];
    for (args, code, needle) in cases {
        let r = secagg(&home, &args);
        r.fails_with(code, needle);
        assert_eq!(snapshot(&home), before, "{args:?} changed something");
    }
    // The hint of a duplicate genconf says what to do.
    let r = secagg(&home, &["vpn", "genconf", "node", "n1"]);
    assert!(r.stderr.contains("hint: ") && r.stderr.contains("removeconf node n1"));
    // Bad init arguments on a fresh home create nothing.
    let fresh = dir.path().join("fresh");
    secagg(&fresh, &["vpn", "init", "--public-addr", "h:0"]).fails_with(3, "out of range");
    secagg(
        &fresh,
        &[
            "vpn",
            "init",
            "--public-addr",
            "h",
            "--network",
            "10.220.0.1/14",
        ],
    )
    .fails_with(3, "not a network address");
    secagg(
        &fresh,
        &[
            "vpn",
            "init",
            "--public-addr",
            "h",
            "--network",
            "10.0.0.0/30",
        ],
    )
    .fails_with(3, "/8 to /28");
    assert!(!fresh.exists());
    // Server commands on a home without a server.
    for args in [
        vec!["vpn", "genconf", "node", "x"],
        vec!["vpn", "list"],
        vec!["vpn", "server-config"],
    ] {
        secagg(&fresh, &args).fails_with(4, "no VPN server is set up");
    }
    assert!(!fresh.exists());
}

#[test]
fn remove_keeps_the_address_reserved_and_removeconf_frees_it() {
    let dir = tempfile::tempdir().unwrap();
    let home = init_server(dir.path(), "10.9.0.0/28");
    genconf(&home, "researcher", "r1");
    genconf(&home, "researcher", "r2");
    let k1 = keygen(&dir.path().join("p1"));
    secagg(&home, &["vpn", "add", "researcher", "r1", &k1]).ok();
    let conf = secagg(&home, &["vpn", "server-config", "--stdout"])
        .ok()
        .stdout
        .clone();
    assert!(conf.contains(&format!("PublicKey = {k1}\n")));
    assert!(conf.contains("AllowedIPs = 10.9.0.10/32\n"));
    assert!(!conf.contains("10.9.0.11"), "r2 has no key yet:\n{conf}");
    let r = secagg(
        &home,
        &["vpn", "remove", "researcher", "r1", "--format", "json"],
    )
    .ok()
    .json();
    assert_eq!(r["removed_public_key"], k1.as_str());
    assert!(!secagg(&home, &["vpn", "server-config", "--stdout"])
        .ok()
        .stdout
        .contains(&k1));
    // Still reserved: the pool (two addresses) is full.
    secagg(&home, &["vpn", "genconf", "researcher", "r3"]).fails_with(5, "is full");
    // remove again: nothing to remove, not an error.
    secagg(&home, &["vpn", "remove", "researcher", "r1"]).ok();
    let r = secagg(
        &home,
        &["vpn", "removeconf", "researcher", "r1", "--format", "json"],
    )
    .ok()
    .json();
    assert_eq!(r["address"], "10.9.0.10");
    assert!(!home.join("vpn/peers/researcher/r1").exists());
    assert_eq!(genconf(&home, "researcher", "r3")["address"], "10.9.0.10");
    // Re-adding a key to a removed peer works, and a new key replaces the old one.
    let k2 = keygen(&dir.path().join("p2"));
    let a = secagg(
        &home,
        &["vpn", "add", "researcher", "r2", &k2, "--format", "json"],
    )
    .ok()
    .json();
    assert_eq!(a["action"], "added");
    let k3 = keygen(&dir.path().join("p3"));
    let a = secagg(
        &home,
        &["vpn", "add", "researcher", "r2", &k3, "--format", "json"],
    )
    .ok()
    .json();
    assert_eq!(a["action"], "replaced");
    assert_eq!(a["previous_public_key"], k2.as_str());
}

#[test]
fn init_force_and_server_config_forms() {
    let dir = tempfile::tempdir().unwrap();
    let home = init_server(dir.path(), "10.220.0.0/14");
    let old = secagg(&home, &["vpn", "list", "--format", "json"])
        .ok()
        .json()["server"]["public_key"]
        .clone();
    let r = secagg(
        &home,
        &[
            "vpn",
            "init",
            "--public-addr",
            "[2001:db8::7]:4500",
            "--force",
            "--format",
            "json",
        ],
    )
    .ok()
    .json();
    assert_eq!(r["replaced_public_key"], old);
    assert_eq!(r["endpoint"], "[2001:db8::7]:4500");
    genconf(&home, "node", "n1");
    secagg(&home, &["vpn", "init", "--public-addr", "h", "--force"])
        .fails_with(5, "1 VPN peer(s) are registered");
    let wg = secagg(&home, &["vpn", "server-config", "--stdout"])
        .ok()
        .stdout
        .clone();
    assert!(wg.contains("[Interface]\nPrivateKey = ") && wg.contains("ListenPort = 4500\n"));
    assert!(!wg.contains("Address"));
    let quick = secagg(
        &home,
        &["vpn", "server-config", "--format", "wg-quick", "--stdout"],
    )
    .ok()
    .stdout
    .clone();
    assert!(quick.contains("Address = 10.220.0.1/14\n"));
    let out = dir.path().join("wg0.conf");
    secagg(
        &home,
        &["vpn", "server-config", "-o", out.to_str().unwrap()],
    )
    .ok();
    assert_eq!(mode(&out), 0o600);
    assert_eq!(fs::read_to_string(&out).unwrap(), wg);
    secagg(&home, &["vpn", "server-config", "--format", "ini"]).fails_with_usage();
}

trait Usage {
    fn fails_with_usage(&self);
}
impl Usage for Run {
    fn fails_with_usage(&self) {
        assert_eq!(self.code, 2, "{}", self.stderr);
    }
}

#[test]
fn peer_keygen_and_client_config() {
    let dir = tempfile::tempdir().unwrap();
    let server = init_server(dir.path(), "10.220.0.0/14");
    let env = PathBuf::from(
        secagg(&server, &["vpn", "genconf", "node", "NODETAG"])
            .ok()
            .stdout
            .trim(),
    );
    let peer = dir.path().join("node");
    // No key yet.
    secagg(
        &peer,
        &["vpn", "client-config", env.to_str().unwrap(), "--stdout"],
    )
    .fails_with(4, "wg.key");
    let j = secagg(&peer, &["vpn", "keygen", "--format", "json"])
        .ok()
        .json();
    let public = j["public_key"].as_str().unwrap().to_owned();
    assert_eq!(public.len(), 44);
    assert_eq!(mode(&peer.join("vpn/wg.key")), 0o600);
    assert_eq!(
        fs::read_to_string(peer.join("vpn/wg.pub")).unwrap().trim(),
        public
    );
    let key_before = fs::read(peer.join("vpn/wg.key")).unwrap();
    secagg(&peer, &["vpn", "keygen"]).fails_as(ErrorKind::Conflict);
    assert_eq!(fs::read(peer.join("vpn/wg.key")).unwrap(), key_before);
    let forced = secagg(&peer, &["vpn", "keygen", "--force", "--format", "json"])
        .ok()
        .json();
    assert_eq!(forced["replaced_public_key"], public.as_str());
    let public = forced["public_key"].as_str().unwrap().to_owned();
    let private = fs::read_to_string(peer.join("vpn/wg.key")).unwrap();

    let conf = secagg(
        &peer,
        &["vpn", "client-config", env.to_str().unwrap(), "--stdout"],
    )
    .ok()
    .stdout
    .clone();
    let server_key = secagg(&server, &["vpn", "list", "--format", "json"])
        .ok()
        .json()["server"]["public_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let env_text = fs::read_to_string(&env).unwrap();
    let psk = env_text
        .lines()
        .find_map(|l| l.strip_prefix("export VPN_SERVER_PSK="))
        .unwrap();
    for line in [
        format!("PrivateKey = {}", private.trim()),
        format!("PublicKey = {server_key}"),
        format!("PresharedKey = {psk}"),
        "Endpoint = vpn.example.org:51820".into(),
        "AllowedIPs = 10.220.0.0/14".into(),
        "PersistentKeepalive = 25".into(),
    ] {
        assert!(conf.lines().any(|l| l == line), "{line:?} missing:\n{conf}");
    }
    assert!(!conf.contains("Address"));
    let quick = secagg(
        &peer,
        &[
            "vpn",
            "client-config",
            env.to_str().unwrap(),
            "--format",
            "wg-quick",
            "--stdout",
        ],
    )
    .ok()
    .stdout
    .clone();
    assert!(quick.contains("Address = 10.221.0.2/14\n"));
    assert!(
        !conf.contains(&public),
        "the peer's own public key is not in its config"
    );

    // Bad config.env files are named.
    let bad = dir.path().join("bad.env");
    fs::write(&bad, env_text.replace("export VPN_SERVER_PSK", "# gone")).unwrap();
    secagg(&peer, &["vpn", "client-config", bad.to_str().unwrap()])
        .fails_with(3, "does not set VPN_SERVER_PSK");
    fs::write(
        &bad,
        env_text.replace("export VPN_IP=10.221.0.2", "export VPN_IP=10.1.2.3"),
    )
    .unwrap();
    secagg(&peer, &["vpn", "client-config", bad.to_str().unwrap()])
        .fails_with(3, "not inside VPN_SERVER_ALLOWED_IPS");
    fs::write(&bad, "garbage line\n").unwrap();
    secagg(&peer, &["vpn", "client-config", bad.to_str().unwrap()]).fails_with(3, "line 1");
    secagg(&peer, &["vpn", "client-config", "/nonexistent/config.env"])
        .fails_as(ErrorKind::NotFound);
}

// ---- `wg setconf` inside a namespace (root + wireguard-go + wg), skipped with a reason otherwise.

fn sh(program: &str, args: &[&str]) -> std::process::Output {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{program} {args:?} did not finish within 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn has(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

struct NsGuard {
    ns: String,
    daemons: Vec<(String, std::process::Child)>,
}

impl Drop for NsGuard {
    fn drop(&mut self) {
        for (iface, c) in &mut self.daemons {
            let _ = c.kill();
            let _ = c.wait();
            let _ = fs::remove_file(format!("/var/run/wireguard/{iface}.sock"));
        }
        let _ = sh("ip", &["netns", "del", &self.ns]);
    }
}

#[test]
fn rendered_configurations_are_accepted_by_wg_setconf() {
    let root = String::from_utf8_lossy(&sh("id", &["-u"]).stdout).trim() == "0";
    if !root || !has("wireguard-go") || !has("wg") || !has("ip") {
        println!("skipped: needs root, wireguard-go, wg and ip");
        return;
    }
    let pid = std::process::id();
    let ns = format!("sgcli{pid}");
    if !sh("ip", &["netns", "add", &ns]).status.success() {
        println!("skipped: `ip netns add` failed");
        return;
    }
    let mut guard = NsGuard {
        ns: ns.clone(),
        daemons: Vec::new(),
    };
    let dir = tempfile::tempdir().unwrap();
    // An IP endpoint (TEST-NET-1): `wg setconf` would try to resolve a host name, and the
    // namespace has no network; its interfaces are never brought up, so nothing is sent.
    let server = dir.path().join("vpnserver");
    secagg(&server, &["vpn", "init", "--public-addr", "192.0.2.1"]).ok();
    let env = PathBuf::from(
        secagg(&server, &["vpn", "genconf", "researcher", "r1"])
            .ok()
            .stdout
            .trim(),
    );
    let peer = dir.path().join("r1");
    let key = keygen(&peer);
    secagg(&server, &["vpn", "add", "researcher", "r1", &key]).ok();
    let files = [
        (
            "s",
            secagg(&server, &["vpn", "server-config", "--stdout"])
                .ok()
                .stdout
                .clone(),
        ),
        (
            "c",
            secagg(
                &peer,
                &["vpn", "client-config", env.to_str().unwrap(), "--stdout"],
            )
            .ok()
            .stdout
            .clone(),
        ),
    ];
    for (tag, conf) in files {
        let iface = format!("wgt{tag}{pid}");
        let child = Command::new("ip")
            .args(["netns", "exec", &ns, "wireguard-go", "-f", &iface])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        guard.daemons.push((iface.clone(), child));
        let sock = PathBuf::from(format!("/var/run/wireguard/{iface}.sock"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sock.exists() {
            assert!(
                Instant::now() < deadline,
                "wireguard-go {iface} did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let file = dir.path().join(format!("{tag}.conf"));
        fs::write(&file, &conf).unwrap();
        let out = sh(
            "ip",
            &[
                "netns",
                "exec",
                &ns,
                "wg",
                "setconf",
                &iface,
                file.to_str().unwrap(),
            ],
        );
        assert!(
            out.status.success(),
            "wg setconf refused:\n{conf}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let shown = String::from_utf8_lossy(
            &sh("ip", &["netns", "exec", &ns, "wg", "showconf", &iface]).stdout,
        )
        .into_owned();
        if tag == "s" {
            assert!(shown.contains("ListenPort = 51820"), "{shown}");
            assert!(shown.contains(&format!("PublicKey = {key}")), "{shown}");
            assert!(shown.contains("AllowedIPs = 10.222.0.2/32"), "{shown}");
        } else {
            assert!(shown.contains("AllowedIPs = 10.220.0.0/14"), "{shown}");
            assert!(shown.contains("PersistentKeepalive = 25"), "{shown}");
        }
        assert!(shown.contains("PresharedKey = "), "{shown}");
        // The wg-quick form is not for `wg setconf` (it refuses Address), which is why both exist.
        let quick = dir.path().join(format!("{tag}-quick.conf"));
        fs::write(
            &quick,
            conf.replace("[Interface]\n", "[Interface]\nAddress = 10.220.0.1/14\n"),
        )
        .unwrap();
        let out = sh(
            "ip",
            &[
                "netns",
                "exec",
                &ns,
                "wg",
                "setconf",
                &iface,
                quick.to_str().unwrap(),
            ],
        );
        assert!(!out.status.success());
    }
}

#[test]
fn concurrent_genconf_processes_get_distinct_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let home = init_server(dir.path(), "10.220.0.0/14");
    let children: Vec<_> = (0..8)
        .map(|i| {
            Command::new(support::bin())
                .arg("--home")
                .arg(&home)
                .args([
                    "vpn",
                    "genconf",
                    "node",
                    &format!("n{i}"),
                    "--format",
                    "json",
                ])
                .env_remove("SECAGG_HOME")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut addresses: Vec<String> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            j["address"].as_str().unwrap().to_owned()
        })
        .collect();
    addresses.sort();
    let expected: Vec<String> = (2..10).map(|i| format!("10.221.0.{i}")).collect();
    assert_eq!(addresses, expected, "first-free without duplicates or gaps");
}

#[test]
fn a_value_rejected_while_parsing_the_arguments_is_reported_in_the_requested_error_format() {
    // TYPE and ID are parsed by clap with secagg's own parsers: a bad one is invalid input
    // (exit 3, with its hint), also as the one JSON line of `--error-format json`.
    let dir = tempfile::tempdir().unwrap();
    let home = init_server(dir.path(), "10.9.0.0/28");
    let cases: [&[&str]; 2] = [
        &["--error-format", "json", "vpn", "genconf", "nodes", "x"],
        &["vpn", "--error-format=json", "genconf", "node", "../x"],
    ];
    for args in cases {
        let r = secagg(&home, args);
        let e = r.fails_as(ErrorKind::InvalidInput).error().unwrap();
        assert!(e.hint.is_some(), "{e:?}");
    }
}
