//! The peer's side: its WireGuard key pair (`secagg vpn keygen`) and its WireGuard configuration
//! from the `config.env` the server's operator sent (`secagg vpn client-config`).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::Serialize;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::fs_secure::{self, PUBLIC_FILE_MODE, SECRET_FILE_MODE};
use crate::home::Home;
use crate::vpn::config_env;
use crate::vpn::keys::{PrivateKey, PublicKey};
use crate::vpn::net::Ipv4Net;
use crate::vpn::wgconf::{self, ConfigForm};
use crate::vpn::{self as vpn, MTU, PERSISTENT_KEEPALIVE};

/// Largest `config.env` accepted.
pub const MAX_CONFIG_ENV_BYTES: u64 = 64 * 1024;

/// What `keygen` made.
#[derive(Debug, Clone, Serialize)]
pub struct KeyPair {
    /// The public key (give it to the VPN server's operator for `secagg vpn add`).
    pub public_key: PublicKey,
    /// `<home>/vpn/wg.key` (0600).
    pub private_key_path: PathBuf,
    /// `<home>/vpn/wg.pub`.
    pub public_key_path: PathBuf,
    /// The public key replaced by `--force`, if any.
    pub replaced_public_key: Option<PublicKey>,
}

/// Loads this peer's private key from `<home>/vpn/wg.key`.
pub fn load_private_key(home: &Home) -> Result<PrivateKey> {
    let path = vpn::private_key_path(home);
    fs_secure::check_private_file(&path, "WireGuard private key")?;
    let bytes =
        fs_secure::read_limited(&path, 1024, "WireGuard private key").map_err(|e| {
            match e.kind() {
                crate::ErrorKind::NotFound => {
                    e.with_hint("run `secagg vpn keygen` on this peer first")
                }
                _ => e,
            }
        })?;
    let text = Zeroizing::new(String::from_utf8_lossy(&bytes).into_owned());
    PrivateKey::parse_named(&text, &format!("private key in `{}`", path.display()))
}

/// `vpn keygen`: makes this peer's key pair; refuses to replace one without `force`.
pub fn keygen(home: &Home, force: bool) -> Result<KeyPair> {
    install_key(home, PrivateKey::generate(), force)
}

/// What `vpn keygen --import` adopted.
#[derive(Debug, Clone, Serialize)]
pub struct ImportedKey {
    /// The installed key pair.
    #[serde(flatten)]
    pub key_pair: KeyPair,
    /// The file the private key was read from (left in place).
    pub source: PathBuf,
    /// Permission bits of that file (`mode & 0o777`).
    pub source_mode: u32,
    /// True when that file is readable by its group or by others (the key may have leaked).
    pub source_exposed: bool,
}

/// `vpn keygen --import KEYFILE`: adopts an existing WireGuard private key (`wg genkey`'s base64
/// form, as a Fed-BioMed peer keeps it) as this peer's key pair, written 0600; refuses to
/// replace one without `force`.
pub fn import_key(home: &Home, source: &Path, force: bool) -> Result<ImportedKey> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(source).map_err(|e| Error::io_path("inspecting", source, e))?;
    if !meta.is_file() {
        return Err(Error::invalid(format!(
            "`{}` is not a regular file",
            source.display()
        )));
    }
    let bytes = Zeroizing::new(fs_secure::read_limited(
        source,
        1024,
        "WireGuard private key",
    )?);
    let text = Zeroizing::new(String::from_utf8_lossy(&bytes).into_owned());
    let key = PrivateKey::parse_named(
        text.trim(),
        &format!("private key in `{}`", source.display()),
    )
    .map_err(|e| e.with_hint("give a file holding one WireGuard private key (base64 of 32 bytes, as `wg genkey` writes)"))?;
    let source_mode = meta.mode() & 0o777;
    let key_pair = install_key(home, key, force)?;
    Ok(ImportedKey {
        key_pair,
        source: source.to_path_buf(),
        source_mode,
        source_exposed: source_mode & 0o044 != 0,
    })
}

/// Writes `key` as this peer's key pair (`wg.key` 0600, `wg.pub`).
fn install_key(home: &Home, key: PrivateKey, force: bool) -> Result<KeyPair> {
    let key_path = vpn::private_key_path(home);
    let pub_path = vpn::public_key_path(home);
    let previous = if key_path.exists() {
        let old = load_private_key(home).ok().map(|k| k.public_key());
        if !force {
            let shown = old
                .map(|k| format!(" (public key {k})"))
                .unwrap_or_default();
            return Err(Error::conflict(format!(
                "a WireGuard key pair already exists in `{}`{shown}",
                key_path.display()
            ))
            .with_hint("its public key is in wg.pub; run again with --force to replace it (the VPN server must then `add` the new key)"));
        }
        old
    } else {
        None
    };
    fs_secure::create_private_dir(home.root())?;
    fs_secure::create_private_dir(&vpn::vpn_dir(home))?;
    let public_key = key.public_key();
    let mut text = Zeroizing::new(key.to_base64().to_string());
    text.push('\n');
    fs_secure::write_atomic(&key_path, text.as_bytes(), SECRET_FILE_MODE)?;
    fs_secure::write_atomic(
        &pub_path,
        format!("{public_key}\n").as_bytes(),
        PUBLIC_FILE_MODE,
    )?;
    Ok(KeyPair {
        public_key,
        private_key_path: key_path,
        public_key_path: pub_path,
        replaced_public_key: previous,
    })
}

/// Facts about a client configuration (no secrets).
#[derive(Debug, Clone, Serialize)]
pub struct ClientInfo {
    /// This peer's VPN address.
    pub vpn_ip: Ipv4Addr,
    /// Prefix of the VPN network.
    pub prefix: u8,
    /// The server's endpoint.
    pub server_endpoint: String,
    /// The server's public key.
    pub server_public_key: PublicKey,
    /// Routed through the tunnel.
    pub allowed_ips: Ipv4Net,
    /// This peer's public key.
    pub public_key: PublicKey,
    /// `FEDBIOMED_NODEID` / `FEDBIOMED_ID`, if the file has one.
    pub fedbiomed_id: Option<String>,
}

/// `vpn client-config CONFIG_ENV`: this peer's WireGuard configuration (a secret) and facts about it.
pub fn client_config(
    home: &Home,
    config_env_path: &Path,
    form: ConfigForm,
) -> Result<(Zeroizing<String>, ClientInfo)> {
    let bytes = fs_secure::read_limited(config_env_path, MAX_CONFIG_ENV_BYTES, "config.env")?;
    let source = config_env_path.display().to_string();
    let text = Zeroizing::new(String::from_utf8(bytes).map_err(|_| {
        Error::invalid(format!("`{source}` is not UTF-8 text"))
            .with_hint("give the config.env written by `secagg vpn genconf`")
    })?);
    let vars = config_env::parse_vars(&text, &source)?;
    let s = config_env::client_settings(&vars, &source)?;
    let key = load_private_key(home)?;
    let public_key = key.public_key();
    if public_key == s.server_public_key {
        return Err(Error::invalid(
            "this peer's WireGuard key is the VPN server's own key",
        )
        .with_hint("run `secagg vpn keygen --force` on this peer, then have the server `add` the new key"));
    }
    let iface = wgconf::Interface {
        comments: vec![
            format!(
                "secagg VPN peer {}, address {}/{}, server {}",
                s.fedbiomed_id.as_deref().unwrap_or("(management)"),
                s.vpn_ip,
                s.prefix,
                s.server_endpoint
            ),
            match form {
                ConfigForm::Wg => "apply with `wg setconf IFACE FILE`, then `ip address add VPN_IP/PREFIX dev IFACE` and `ip link set IFACE up`".into(),
                ConfigForm::WgQuick => "apply with `wg-quick up FILE`".into(),
            },
        ],
        private_key: &key,
        listen_port: None,
        address: (s.vpn_ip, s.prefix),
        mtu: MTU,
    };
    let peer = wgconf::Peer {
        comment: "the VPN server".into(),
        public_key: s.server_public_key,
        preshared_key: &s.preshared_key,
        endpoint: Some(s.server_endpoint.to_string()),
        allowed_ips: s.allowed_ips.to_string(),
        persistent_keepalive: Some(PERSISTENT_KEEPALIVE),
    };
    let conf = wgconf::render(form, &iface, &[peer]);
    Ok((
        conf,
        ClientInfo {
            vpn_ip: s.vpn_ip,
            prefix: s.prefix,
            server_endpoint: s.server_endpoint.to_string(),
            server_public_key: s.server_public_key,
            allowed_ips: s.allowed_ips,
            public_key,
            fedbiomed_id: s.fedbiomed_id,
        },
    ))
}
