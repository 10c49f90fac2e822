//! `secagg vpn`: the WireGuard VPN server's peer registry and configurations, and a peer's key
//! pair and client configuration.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use secagg_core::home::Home;
use secagg_core::home::SECRET_FILE_MODE;
use secagg_core::party::Endpoint;
use secagg_core::vpn::keys::PublicKey;
use secagg_core::vpn::net::{self, Ipv4Net};
use secagg_core::vpn::server::{self, AddAction, InitRequest};
use secagg_core::vpn::wgconf::ConfigForm;
use secagg_core::vpn::{client, config_env, PeerName, PeerType, DEFAULT_PORT};
use time::OffsetDateTime;

use crate::output::{self, Format, FormatArg};

/// WireGuard VPN. On the VPN server: `init`, `genconf`, `add`, `remove`, `removeconf`, `list`,
/// `server-config`. On a peer: `keygen`, `client-config`.
#[derive(Debug, Subcommand)]
pub enum VpnCommand {
    /// (server) Set up the VPN server: make its key pair, record its public address and network.
    Init(InitArgs),
    /// (server) Register a peer: allocate the first free address of its type's pool, make a
    /// pre-shared key, and write its config.env (send that file to the peer).
    Genconf(PeerArgs),
    /// (server) Register the public key a peer made with `secagg vpn keygen` (replaces its
    /// previous key, if any).
    Add(AddArgs),
    /// (server) Withdraw a peer's public key; the peer keeps its address and config.env.
    Remove(PeerArgs),
    /// (server) Delete a peer and its config.env; its address becomes free for reuse.
    Removeconf(PeerArgs),
    /// (server) The server's settings and its peers.
    List(ListArgs),
    /// (server) The server's WireGuard configuration (contains its private key).
    ServerConfig(ConfigArgs),
    /// (server) Adopt a Fed-BioMed v4 VPN server's state (its run_mounts/config/ directory): the
    /// server key from wireguard/wg0.conf, every peer's config.env with its address and pre-shared
    /// key, and the peers' public keys, so that existing peers keep working.
    ImportFedbiomed(ImportFedbiomedArgs),
    /// (peer) Make this peer's WireGuard key pair in <home>/vpn/ and print the public key (or,
    /// with --import, adopt an existing private key).
    Keygen(KeygenArgs),
    /// (peer) This peer's WireGuard configuration from the config.env the server's operator sent.
    ClientConfig(ClientConfigArgs),
}

/// Arguments of `vpn init`.
#[derive(Debug, Args)]
#[command(
    after_help = "The network is split in four equal parts, as in Fed-BioMed: the server is network+1; \
management peers get addresses from part 0, nodes from part 1, researchers from part 2, each starting at \
the part's network address + 2 (10.220.0.2, 10.221.0.2, 10.222.0.2 with the default network)."
)]
pub struct InitArgs {
    /// Where peers reach the server: HOST or HOST:PORT (UDP port default 51820; IPv6 as [ADDR]:PORT).
    #[arg(long, value_name = "HOST[:PORT]", value_parser = parse_public_addr)]
    public_addr: Endpoint,
    /// The VPN network (/8 to /28).
    #[arg(long, value_name = "NET", default_value = net::DEFAULT_NETWORK, value_parser = parse_network)]
    network: Ipv4Net,
    /// Replace existing settings and key pair (refused while peers are registered).
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    output: FormatArg,
}

/// A peer's type and id.
#[derive(Debug, Args)]
pub struct PeerArgs {
    /// Peer type: management, node or researcher.
    #[arg(value_name = "TYPE")]
    kind: PeerType,
    /// Peer id (1–64 letters, digits, `_`, `.`, `-`).
    #[arg(value_name = "ID")]
    id: PeerName,
    #[command(flatten)]
    output: FormatArg,
}

/// Arguments of `vpn add`.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// Peer type: management, node or researcher.
    #[arg(value_name = "TYPE")]
    kind: PeerType,
    /// Peer id.
    #[arg(value_name = "ID")]
    id: PeerName,
    /// The peer's WireGuard public key (base64 of 32 bytes).
    // Parsed in `run`, not by clap: its errors name the peer ("public key of node/n1 …").
    #[arg(value_name = "PUBLIC_KEY", allow_hyphen_values = true)]
    public_key: String,
    #[command(flatten)]
    output: FormatArg,
}

/// Arguments of `vpn list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    output: FormatArg,
}

/// Form of a WireGuard configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormArg {
    /// For `wg setconf` / `wg syncconf` (no Address line).
    Wg,
    /// For `wg-quick up` (adds Address and MTU).
    WgQuick,
}

impl From<FormArg> for ConfigForm {
    fn from(f: FormArg) -> Self {
        match f {
            FormArg::Wg => ConfigForm::Wg,
            FormArg::WgQuick => ConfigForm::WgQuick,
        }
    }
}

/// Arguments of `vpn server-config`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Configuration form.
    #[arg(long, value_enum, default_value = "wg")]
    format: FormArg,
    /// Write to FILE (0600, atomically) instead of stdout; an existing FILE only with --force;
    /// never a FIFO, directory or device, nor one of the home's own files.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
    /// Replace FILE if it exists.
    #[arg(long, requires = "output")]
    force: bool,
    /// Print the configuration, which holds a private key, on stdout (without -o, it is refused
    /// unless this is given: a terminal's scrollback or a shell redirection would keep the key
    /// readable by others).
    #[arg(long, conflicts_with = "output")]
    stdout: bool,
}

/// Arguments of `vpn keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Replace an existing key pair (the server must then `add` the new public key).
    #[arg(long)]
    force: bool,
    /// Adopt this existing WireGuard private key (base64, as `wg genkey` writes it) instead of
    /// making a new one; it is written 0600 and the source file is left in place.
    #[arg(long = "import", value_name = "KEYFILE")]
    import: Option<PathBuf>,
    #[command(flatten)]
    output: FormatArg,
}

/// Arguments of `vpn import-fedbiomed`.
#[derive(Debug, Args)]
pub struct ImportFedbiomedArgs {
    /// Fed-BioMed's `envs/vpn/docker/vpnserver/run_mounts/config/` (or the `vpnserver` directory
    /// holding it).
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    #[command(flatten)]
    output: FormatArg,
}

/// Arguments of `vpn client-config`.
#[derive(Debug, Args)]
pub struct ClientConfigArgs {
    /// The config.env written by `secagg vpn genconf` (or Fed-BioMed's configure_peer.py).
    #[arg(value_name = "CONFIG_ENV")]
    config_env: PathBuf,
    /// Configuration form.
    #[arg(long, value_enum, default_value = "wg")]
    format: FormArg,
    /// Write to FILE (0600, atomically) instead of stdout; an existing FILE only with --force;
    /// never a FIFO, directory or device, nor one of the home's own files.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
    /// Replace FILE if it exists.
    #[arg(long, requires = "output")]
    force: bool,
    /// Print the configuration, which holds a private key, on stdout (without -o, it is refused
    /// unless this is given: a terminal's scrollback or a shell redirection would keep the key
    /// readable by others).
    #[arg(long, conflicts_with = "output")]
    stdout: bool,
}

/// Runs `secagg vpn …`.
pub fn run(home: &Path, cmd: VpnCommand) -> anyhow::Result<()> {
    let home = Home::new(home);
    let now = OffsetDateTime::now_utc();
    match cmd {
        VpnCommand::Init(a) => {
            let r = server::init(
                &home,
                &InitRequest {
                    public_endpoint: a.public_addr,
                    network: Some(a.network),
                    force: a.force,
                },
                now,
            )?;
            match a.output.format {
                Format::Json => output::print_json(&r)?,
                Format::Text => {
                    let s = &r.server;
                    let mut fields = vec![
                        ("public key", s.public_key.to_string()),
                        ("endpoint", s.endpoint.clone()),
                        ("network", s.network.to_string()),
                        ("server address", s.server_address.to_string()),
                    ];
                    for p in &s.pools {
                        fields.push((
                            p.kind.as_str(),
                            format!("{} ({} to {})", p.pool, p.first, p.last),
                        ));
                    }
                    output::print_fields(&fields);
                    if let Some(old) = r.replaced_public_key {
                        output::warn(format!(
                            "replaced the server key pair (old public key {old})"
                        ));
                    }
                    output::note(format!(
                        "next: `secagg vpn genconf {PEER_TYPES_SHORT} ID` for each peer"
                    ));
                }
            }
        }
        VpnCommand::Genconf(a) => {
            let r = server::genconf(&home, a.kind, &a.id, now)?;
            match a.output.format {
                Format::Json => output::print_json(&r)?,
                Format::Text => {
                    println!("{}", r.config_path.display());
                    output::note(format!(
                        "configuration for {}/{} ({}) saved; send this file to the peer over a private channel (it holds the peer's pre-shared key)",
                        r.kind, r.id, r.address
                    ));
                }
            }
        }
        VpnCommand::Add(a) => {
            let key = PublicKey::parse_named(
                &a.public_key,
                &format!("public key of {}/{}", a.kind, a.id),
            )?;
            let r = server::add(&home, a.kind, &a.id, &key, now)?;
            match a.output.format {
                Format::Json => output::print_json(&r)?,
                Format::Text => {
                    let what = match r.action {
                        AddAction::Added => "added",
                        AddAction::Replaced => "replaced the key of",
                        AddAction::Unchanged => "unchanged:",
                    };
                    println!(
                        "{what} {}/{} {} allowed-ips {}/32",
                        r.kind, r.id, r.public_key, r.address
                    );
                    if let Some(old) = r.previous_public_key {
                        output::note(format!("previous key {old} withdrawn"));
                    }
                    // `-o`, not `> wg0.conf`: the file holds the server's private key, and a
                    // shell redirection creates it with the umask (0644 by default).
                    output::note("apply with `secagg vpn server-config -o wg0.conf --force && wg syncconf wg0 wg0.conf` (-o writes it 0600: it holds the server's private key)");
                }
            }
        }
        VpnCommand::Remove(a) => {
            let r = server::remove(&home, a.kind, &a.id, now)?;
            match a.output.format {
                Format::Json => output::print_json(&r)?,
                Format::Text => match r.removed_public_key {
                    Some(k) => println!(
                        "removed key {k} of {}/{}; address {} stays reserved (free it with `secagg vpn removeconf {} {}`)",
                        r.kind, r.id, r.address, r.kind, r.id
                    ),
                    None => output::note(format!(
                        "{}/{} had no public key; nothing to remove",
                        r.kind, r.id
                    )),
                },
            }
        }
        VpnCommand::Removeconf(a) => {
            let r = server::removeconf(&home, a.kind, &a.id)?;
            match a.output.format {
                Format::Json => output::print_json(&r)?,
                Format::Text => {
                    println!(
                        "removed {}/{}; address {} is free again",
                        r.kind, r.id, r.address
                    );
                    if let Some(k) = r.removed_public_key {
                        output::note(format!("its key {k} was withdrawn too"));
                    }
                    if let Some(p) = r.removed_config {
                        output::note(format!("removed config file {}", p.display()));
                    }
                }
            }
        }
        VpnCommand::List(a) => {
            let l = server::list(&home)?;
            match a.output.format {
                Format::Json => output::print_json(&l)?,
                Format::Text => {
                    output::note(format!(
                        "server {} at {} ({}), network {}",
                        l.server.server_address,
                        l.server.endpoint,
                        l.server.public_key,
                        l.server.network
                    ));
                    for pool in &l.server.pools {
                        output::note(format!(
                            "  {} pool {}: {} of {} addresses used ({} to {})",
                            pool.kind, pool.pool, pool.used, pool.capacity, pool.first, pool.last
                        ));
                    }
                    if l.peers.is_empty() {
                        output::note("no peers (add one with `secagg vpn genconf TYPE ID`)");
                    } else {
                        let mut t = output::list_table(&[
                            "type",
                            "id",
                            "prefix",
                            "public key",
                            "status",
                            "created",
                        ]);
                        for p in &l.peers {
                            t.add_row(vec![
                                p.kind.to_string(),
                                p.id.to_string(),
                                p.allowed_ips.clone(),
                                p.public_key
                                    .map(|k| k.to_string())
                                    .unwrap_or_else(|| "-".into()),
                                p.status.to_string(),
                                p.created_at.clone(),
                            ]);
                        }
                        output::print_table(t);
                    }
                }
            }
        }
        VpnCommand::ServerConfig(a) => {
            let conf = server::server_config(&home, a.format.into())?;
            emit_secret(&conf, a.output.as_deref(), a.force, a.stdout, &home)?;
        }
        VpnCommand::ImportFedbiomed(a) => {
            let r = secagg_core::vpn::fedbiomed::import_server(&home, &a.dir, now)?;
            match a.output.format {
                Format::Json => output::print_json(&r)?,
                Format::Text => {
                    for p in &r.peers {
                        let key = p
                            .public_key
                            .map_or_else(|| "(no public key yet)".to_owned(), |k| k.to_string());
                        println!("{}/{}  {}  {key}", p.kind, p.id, p.address);
                    }
                    let waiting = r.peers.iter().filter(|p| p.public_key.is_none()).count();
                    output::note(format!(
                        "adopted the VPN server of {}: public key {}, endpoint {}, network {}, {} peer(s){}",
                        r.source.display(),
                        r.public_key,
                        r.endpoint,
                        r.network,
                        r.peers.len(),
                        if waiting > 0 {
                            format!(", {waiting} waiting for `secagg vpn add`")
                        } else {
                            String::new()
                        }
                    ));
                    output::note("the peers' config.env files stay valid; `secagg vpn server-config` gives the same WireGuard configuration");
                }
            }
        }
        VpnCommand::Keygen(a) => {
            let (r, imported) = match &a.import {
                Some(src) => {
                    let i = client::import_key(&home, src, a.force)?;
                    (i.key_pair.clone(), Some(i))
                }
                None => (client::keygen(&home, a.force)?, None),
            };
            if let Some(i) = imported.as_ref().filter(|i| i.source_exposed) {
                output::warn(format!(
                    "`{}` is readable by its group or others (mode {:04o}): the private key may have leaked; delete that copy, or make a new key pair with `secagg vpn keygen --force` and `add` it on the server",
                    i.source.display(),
                    i.source_mode
                ));
            }
            match a.output.format {
                Format::Json => match &imported {
                    Some(i) => output::print_json(i)?,
                    None => output::print_json(&r)?,
                },
                Format::Text => {
                    println!("{}", r.public_key);
                    if let Some(old) = r.replaced_public_key {
                        output::warn(format!("replaced the key pair (old public key {old}); the VPN server must `add` the new key"));
                    }
                    if let Some(i) = &imported {
                        output::note(format!(
                            "adopted the private key of {} into {} (0600); the VPN server already knows its public key above if this peer was added before",
                            i.source.display(),
                            r.private_key_path.display()
                        ));
                    } else {
                        output::note(format!(
                            "private key in {} (0600); give the public key above to the VPN server's operator for `secagg vpn add TYPE ID KEY`",
                            r.private_key_path.display()
                        ));
                    }
                }
            }
        }
        VpnCommand::ClientConfig(a) => {
            let (conf, info) = client::client_config(&home, &a.config_env, a.format.into())?;
            emit_secret(&conf, a.output.as_deref(), a.force, a.stdout, &home)?;
            if a.output.is_some() {
                output::note(format!(
                    "peer address {}/{}, server {}",
                    info.vpn_ip, info.prefix, info.server_endpoint
                ));
            }
        }
    }
    Ok(())
}

const PEER_TYPES_SHORT: &str = "management|node|researcher";

/// `--public-addr`: `HOST[:PORT]`, the port defaulting to WireGuard's.
fn parse_public_addr(s: &str) -> secagg_core::Result<Endpoint> {
    config_env::parse_endpoint(s, Some(DEFAULT_PORT)).map_err(|e| e.context("--public-addr"))
}

/// `--network`: a VPN network of /8 to /28.
fn parse_network(s: &str) -> secagg_core::Result<Ipv4Net> {
    Ipv4Net::parse_vpn(s).map_err(|e| e.context("--network"))
}

/// Prints a configuration holding secrets, or writes it 0600 to `out`.
fn emit_secret(
    text: &str,
    out: Option<&Path>,
    force: bool,
    stdout: bool,
    home: &Home,
) -> anyhow::Result<()> {
    match out {
        None if stdout => print!("{text}"),
        None => {
            return Err(secagg_core::Error::invalid(
                "this configuration holds a private key: it is written to a file, not printed",
            )
            .with_hint("give -o FILE (written 0600), or --stdout to print it anyway")
            .into())
        }
        Some(p) => {
            home.write_output(p, text.as_bytes(), SECRET_FILE_MODE, force)?;
            output::note(format!("written to {} (0600)", p.display()));
        }
    }
    Ok(())
}
