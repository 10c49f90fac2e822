//! A WireGuard lab for end-to-end tests: a VPN server and its peers, each in its own network
//! namespace, joined to the server's namespace by veth pairs, each running `wireguard-go` with
//! the configuration `secagg vpn` produced (server: init/genconf/add/server-config; peers:
//! keygen/client-config); node ↔ node traffic is forwarded by the server's namespace.
//!
//! Needs root, `ip netns`, `wireguard-go` and `wg` ([`unsupported`] says what is missing, and the
//! tests print `skipped: <reason>` and pass). Everything is named with the test process's id and
//! removed by [`Lab`]'s drop, even when an assertion fails. No traffic leaves the namespaces.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `cmd` with a deadline; kills it when the deadline passes.
pub fn run_bounded(mut cmd: Command, limit: Duration) -> Output {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    wait_bounded(&mut child, limit, &shown);
    child.wait_with_output().unwrap()
}

pub fn wait_bounded(child: &mut Child, limit: Duration, what: &str) {
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn check(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({})\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn sh(program: &str, args: &[&str]) -> Output {
    let mut c = Command::new(program);
    c.args(args);
    run_bounded(c, Duration::from_secs(20))
}

pub fn must(program: &str, args: &[&str]) -> String {
    check(&sh(program, args), &format!("{program} {}", args.join(" ")))
}

pub fn secagg(home: &Path, args: &[&str]) -> String {
    let mut c = super::secagg_command();
    c.arg("--home").arg(home).args(args);
    check(
        &run_bounded(c, Duration::from_secs(30)),
        &format!("secagg {}", args.join(" ")),
    )
}

pub fn ns_exec(ns: &str, args: &[&str]) -> String {
    let mut all = vec!["netns", "exec", ns];
    all.extend_from_slice(args);
    must("ip", &all)
}

/// Why the test cannot run here, if it cannot.
pub fn unsupported(probe_ns: &str) -> Option<String> {
    let uid = sh("id", &["-u"]);
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("not running as root (network namespaces need it)".into());
    }
    for tool in ["wireguard-go", "wg", "ip", "bash", "timeout"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !found {
            return Some(format!(
                "`{tool}` is not installed (apt-get install wireguard-go wireguard-tools iproute2)"
            ));
        }
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun is missing (wireguard-go needs a TUN device)".into());
    }
    let add = sh("ip", &["netns", "add", probe_ns]);
    if !add.status.success() {
        return Some(format!(
            "`ip netns add` failed: {}",
            String::from_utf8_lossy(&add.stderr).trim()
        ));
    }
    let _ = sh("ip", &["netns", "del", probe_ns]);
    None
}

/// Everything the test created; dropping it removes all of it.
pub struct Lab {
    /// Namespaces created, deleted in reverse order.
    pub namespaces: Vec<String>,
    /// `wireguard-go` daemons and their interfaces.
    pub daemons: Vec<(String, Child)>,
    /// Processes the test started inside the namespaces (negotiations, agents), killed first.
    pub processes: Vec<Child>,
}

impl Lab {
    pub fn add_ns(&mut self, name: &str) {
        must("ip", &["netns", "add", name]);
        self.namespaces.push(name.to_owned());
        must("ip", &["-n", name, "link", "set", "lo", "up"]);
    }

    /// Starts `wireguard-go -f IFACE` in `ns` and waits for its control socket.
    pub fn start_wireguard(&mut self, ns: &str, iface: &str, log: &Path) {
        let log = std::fs::File::create(log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "wireguard-go", "-f", iface])
            .env("LOG_LEVEL", "error")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn wireguard-go");
        self.daemons.push((iface.to_owned(), child));
        let sock = socket_path(iface);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sock.exists() {
            assert!(
                Instant::now() < deadline,
                "wireguard-go {iface} in {ns} did not create {} within 10 s",
                sock.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

pub fn socket_path(iface: &str) -> PathBuf {
    PathBuf::from(format!("/var/run/wireguard/{iface}.sock"))
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.processes {
            let _ = c.kill();
            let _ = c.wait();
        }
        for (iface, c) in &mut self.daemons {
            let _ = c.kill();
            let _ = c.wait();
            let _ = std::fs::remove_file(socket_path(iface));
        }
        for ns in self.namespaces.iter().rev() {
            let _ = sh("ip", &["netns", "del", ns]);
        }
    }
}

/// Waits (bounded) until a TCP connection from `ns` to `addr:9` is answered — refused, since
/// nothing listens there — which proves a round trip through the tunnel. (A TCP probe rather than
/// `ping`, which CI machines often lack.)
pub fn probe_tunnel(ns: &str, addr: &str, iface: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = String::new();
    while Instant::now() < deadline {
        let out = sh(
            "ip",
            &[
                "netns",
                "exec",
                ns,
                "timeout",
                "2",
                "bash",
                "-c",
                &format!("exec 3<>/dev/tcp/{addr}/9"),
            ],
        );
        last = String::from_utf8_lossy(&out.stderr).into_owned();
        if last.contains("Connection refused") || out.status.success() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let wg = sh("ip", &["netns", "exec", ns, "wg", "show", iface]);
    panic!(
        "tunnel failure: no answer from {addr} in namespace {ns} within 20 s (last: {})\n`wg show {iface}`:\n{}",
        last.trim(),
        String::from_utf8_lossy(&wg.stdout)
    );
}

/// Bytes the server received from each peer (`wg show IFACE transfer`).
pub fn received_per_peer(ns: &str, iface: &str) -> Vec<(String, u64)> {
    ns_exec(ns, &["wg", "show", iface, "transfer"])
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_owned(), f[1].parse().unwrap())
        })
        .collect()
}

/// One VPN peer of the lab: its namespace, WireGuard interface, VPN identity and secagg party.
pub struct Client {
    pub ns: String,
    pub iface: String,
    pub vpn_type: &'static str,
    pub vpn_id: &'static str,
    pub party_id: &'static str,
    pub role: &'static str,
    pub port: &'static str,
    pub underlay: u8,
}

/// The lab's three peers: a researcher and two nodes (VPN addresses 10.222.0.2, 10.221.0.2,
/// 10.221.0.3), with names tagged by `tag`.
pub fn standard_clients(tag: &str) -> Vec<Client> {
    vec![
        Client {
            ns: format!("sgres{tag}"),
            iface: format!("wgr{tag}"),
            vpn_type: "researcher",
            vpn_id: "researcher1",
            party_id: "researcher_vpn",
            role: "researcher",
            port: "14000",
            underlay: 1,
        },
        Client {
            ns: format!("sgn1{tag}"),
            iface: format!("wga{tag}"),
            vpn_type: "node",
            vpn_id: "NODETAG",
            party_id: "node_vpn1",
            role: "node",
            port: "14001",
            underlay: 2,
        },
        Client {
            ns: format!("sgn2{tag}"),
            iface: format!("wgb{tag}"),
            vpn_type: "node",
            vpn_id: "NODE2TAG",
            party_id: "node_vpn2",
            role: "node",
            port: "14002",
            underlay: 3,
        },
    ]
}

/// The standard lab of a test: [`standard_clients`] tagged by `tag`, their tunnel up, in a new
/// temporary directory.
pub struct StandardLab {
    /// Where the homes and logs go.
    pub dir: tempfile::TempDir,
    pub lab: Lab,
    pub clients: Vec<Client>,
    pub tunnel: Tunnel,
}

/// [`StandardLab`], or `None` where the lab cannot run here (the reason printed: the test is
/// skipped). Destructure it with `dir` first, so that the lab (its processes, daemons and
/// namespaces) goes before the directory.
pub fn standard_lab(tag: &str) -> Option<StandardLab> {
    if let Some(reason) = unsupported(&format!("sgprobe{tag}")) {
        println!("skipped: {reason}");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut lab = Lab::new();
    let clients = standard_clients(tag);
    let tunnel = lab.build_tunnel(dir.path(), tag, &clients);
    Some(StandardLab {
        dir,
        lab,
        clients,
        tunnel,
    })
}

/// The server's side of a built tunnel.
pub struct Tunnel {
    /// The server's namespace.
    pub srv_ns: String,
    /// The server's WireGuard interface.
    pub srv_if: String,
    /// Each client's VPN address, in the order of the clients.
    pub vpn_ips: Vec<String>,
}

impl Lab {
    /// An empty lab.
    pub fn new() -> Lab {
        Lab {
            namespaces: Vec::new(),
            daemons: Vec::new(),
            processes: Vec::new(),
        }
    }

    /// Builds the VPN for `clients` (files under `root`, names tagged by `tag`) and checks that
    /// every peer reaches the server and the others through it before returning.
    pub fn build_tunnel(&mut self, root: &Path, tag: &str, clients: &[Client]) -> Tunnel {
        // Namespaces and the underlay: each client's veth to the server's namespace; the server's
        // public address 172.30.0.1 lives on its loopback and each client routes it over its veth.
        let srv_ns = format!("sgsrv{tag}");
        let srv_if = format!("wgs{tag}");
        self.add_ns(&srv_ns);
        must(
            "ip",
            &["-n", &srv_ns, "addr", "add", "172.30.0.1/32", "dev", "lo"],
        );
        for c in clients {
            self.add_ns(&c.ns);
            let (vs, vc) = (
                format!("vs{}x{tag}", c.underlay),
                format!("vc{}x{tag}", c.underlay),
            );
            must(
                "ip",
                &[
                    "link", "add", &vs, "netns", &srv_ns, "type", "veth", "peer", "name", &vc,
                    "netns", &c.ns,
                ],
            );
            let s_addr = format!("172.31.{}.1/30", c.underlay);
            let c_addr = format!("172.31.{}.2/30", c.underlay);
            let gw = format!("172.31.{}.1", c.underlay);
            must("ip", &["-n", &srv_ns, "addr", "add", &s_addr, "dev", &vs]);
            must("ip", &["-n", &srv_ns, "link", "set", &vs, "up"]);
            must("ip", &["-n", &c.ns, "addr", "add", &c_addr, "dev", &vc]);
            must("ip", &["-n", &c.ns, "link", "set", &vc, "up"]);
            must(
                "ip",
                &["-n", &c.ns, "route", "add", "172.30.0.1/32", "via", &gw],
            );
        }

        // The VPN server's registry: init, genconf per peer; each peer makes its key pair and the
        // server adds the public key.
        let srv_home = root.join("vpnserver");
        secagg(
            &srv_home,
            &["vpn", "init", "--public-addr", "172.30.0.1:51820"],
        );
        let mut vpn_ips = Vec::new();
        for c in clients {
            let gen: serde_json::Value = serde_json::from_str(&secagg(
                &srv_home,
                &["vpn", "genconf", c.vpn_type, c.vpn_id, "--format", "json"],
            ))
            .unwrap();
            vpn_ips.push(gen["address"].as_str().unwrap().to_owned());
            let home = root.join(c.vpn_id);
            let key = secagg(&home, &["vpn", "keygen"]);
            secagg(&srv_home, &["vpn", "add", c.vpn_type, c.vpn_id, key.trim()]);
        }
        assert_eq!(vpn_ips, ["10.222.0.2", "10.221.0.2", "10.221.0.3"]);

        // The server's interface, with the configuration `wg setconf` takes, and forwarding.
        let srv_conf = root.join("wg-server.conf");
        secagg(
            &srv_home,
            &["vpn", "server-config", "-o", srv_conf.to_str().unwrap()],
        );
        self.start_wireguard(&srv_ns, &srv_if, &root.join("wg-server.log"));
        ns_exec(
            &srv_ns,
            &["wg", "setconf", &srv_if, srv_conf.to_str().unwrap()],
        );
        must(
            "ip",
            &[
                "-n",
                &srv_ns,
                "addr",
                "add",
                "10.220.0.1/14",
                "dev",
                &srv_if,
            ],
        );
        must("ip", &["-n", &srv_ns, "link", "set", &srv_if, "up"]);
        ns_exec(&srv_ns, &["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);

        // Each peer's interface from its config.env.
        for (c, ip) in clients.iter().zip(&vpn_ips) {
            let home = root.join(c.vpn_id);
            let env = srv_home
                .join("vpn/peers")
                .join(c.vpn_type)
                .join(c.vpn_id)
                .join("config.env");
            let conf = root.join(format!("wg-{}.conf", c.vpn_id));
            secagg(
                &home,
                &[
                    "vpn",
                    "client-config",
                    env.to_str().unwrap(),
                    "-o",
                    conf.to_str().unwrap(),
                ],
            );
            self.start_wireguard(&c.ns, &c.iface, &root.join(format!("wg-{}.log", c.vpn_id)));
            ns_exec(&c.ns, &["wg", "setconf", &c.iface, conf.to_str().unwrap()]);
            must(
                "ip",
                &[
                    "-n",
                    &c.ns,
                    "addr",
                    "add",
                    &format!("{ip}/14"),
                    "dev",
                    &c.iface,
                ],
            );
            must("ip", &["-n", &c.ns, "link", "set", &c.iface, "up"]);
        }

        // The tunnel works before anything else is blamed on it: every peer reaches the server,
        // and every pair of peers reaches each other through it.
        for c in clients {
            probe_tunnel(&c.ns, "10.220.0.1", &c.iface);
        }
        for (i, c) in clients.iter().enumerate() {
            for ip in &vpn_ips[i + 1..] {
                probe_tunnel(&c.ns, ip, &c.iface);
            }
        }
        Tunnel {
            srv_ns,
            srv_if,
            vpn_ips,
        }
    }
}

/// A secagg home per client (`<root>/party-<vpn id>`) with its identity at its VPN address and
/// every other client registered from its bundle; returns the homes in the order of `clients`.
pub fn parties_at_vpn_addresses(
    root: &Path,
    clients: &[Client],
    vpn_ips: &[String],
) -> Vec<PathBuf> {
    let mut homes = Vec::new();
    for (c, ip) in clients.iter().zip(vpn_ips) {
        let home = root.join(format!("party-{}", c.vpn_id));
        secagg(
            &home,
            &[
                "init", "--role", c.role, "--id", c.party_id, "--ip", ip, "--port", c.port,
            ],
        );
        let bundle = root.join(format!("{}.json", c.party_id));
        secagg(
            &home,
            &[
                "certificate",
                "registration-instructions",
                "--format",
                "json",
                "-o",
                bundle.to_str().unwrap(),
            ],
        );
        homes.push((home, bundle));
    }
    for (i, (home, _)) in homes.iter().enumerate() {
        for (j, (_, bundle)) in homes.iter().enumerate() {
            if i != j {
                secagg(
                    home,
                    &[
                        "certificate",
                        "register",
                        "--bundle",
                        bundle.to_str().unwrap(),
                    ],
                );
            }
        }
    }
    homes.into_iter().map(|(home, _)| home).collect()
}
