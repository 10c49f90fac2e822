//! Rendering WireGuard configurations.
//!
//! Two forms: [`ConfigForm::Wg`] is what `wg setconf` / `wg syncconf` accept (they refuse
//! wg-quick's `Address`, `MTU`, `DNS`, … keys), and [`ConfigForm::WgQuick`] adds the interface's
//! `Address` and `MTU` for `wg-quick up`.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use serde::Serialize;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::vpn::keys::{PresharedKey, PrivateKey, PublicKey};

/// Which tool the configuration is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConfigForm {
    /// `wg setconf` (no `Address`).
    #[default]
    Wg,
    /// `wg-quick` (with `Address` and `MTU`).
    WgQuick,
}

impl std::str::FromStr for ConfigForm {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "wg" => Ok(ConfigForm::Wg),
            "wg-quick" => Ok(ConfigForm::WgQuick),
            _ => Err(
                Error::invalid(format!("unknown configuration form `{}`", s.escape_debug()))
                    .with_hint("the forms are wg (for `wg setconf`) and wg-quick"),
            ),
        }
    }
}

/// The `[Interface]` section.
#[derive(Debug)]
pub struct Interface<'a> {
    /// Comment lines put before the section (without `# `).
    pub comments: Vec<String>,
    /// The private key.
    pub private_key: &'a PrivateKey,
    /// `ListenPort`, if any (the server).
    pub listen_port: Option<u16>,
    /// The interface address and prefix (written only in the wg-quick form).
    pub address: (Ipv4Addr, u8),
    /// `MTU` (written only in the wg-quick form).
    pub mtu: u16,
}

/// A `[Peer]` section.
#[derive(Debug)]
pub struct Peer<'a> {
    /// A comment line naming the peer.
    pub comment: String,
    /// Its public key.
    pub public_key: PublicKey,
    /// The pre-shared key.
    pub preshared_key: &'a PresharedKey,
    /// `Endpoint` (`host:port`), if any.
    pub endpoint: Option<String>,
    /// `AllowedIPs`.
    pub allowed_ips: String,
    /// `PersistentKeepalive`, if any.
    pub persistent_keepalive: Option<u16>,
}

/// Renders a configuration (a secret: it contains the private and pre-shared keys).
pub fn render(form: ConfigForm, iface: &Interface<'_>, peers: &[Peer<'_>]) -> Zeroizing<String> {
    let mut s = Zeroizing::new(String::new());
    for c in &iface.comments {
        let _ = writeln!(s, "# {c}");
    }
    s.push_str("[Interface]\n");
    let _ = writeln!(s, "PrivateKey = {}", iface.private_key.to_base64().as_str());
    if let Some(p) = iface.listen_port {
        let _ = writeln!(s, "ListenPort = {p}");
    }
    if form == ConfigForm::WgQuick {
        let _ = writeln!(s, "Address = {}/{}", iface.address.0, iface.address.1);
        let _ = writeln!(s, "MTU = {}", iface.mtu);
    }
    for p in peers {
        let _ = writeln!(s, "\n# {}", p.comment);
        s.push_str("[Peer]\n");
        let _ = writeln!(s, "PublicKey = {}", p.public_key);
        let _ = writeln!(s, "PresharedKey = {}", p.preshared_key.to_base64().as_str());
        if let Some(e) = &p.endpoint {
            let _ = writeln!(s, "Endpoint = {e}");
        }
        let _ = writeln!(s, "AllowedIPs = {}", p.allowed_ips);
        if let Some(k) = p.persistent_keepalive {
            let _ = writeln!(s, "PersistentKeepalive = {k}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_differ_only_in_address_and_mtu() {
        let sk = PrivateKey::generate();
        let psk = PresharedKey::generate();
        let iface = Interface {
            comments: vec!["hello".into()],
            private_key: &sk,
            listen_port: Some(51820),
            address: ("10.220.0.1".parse().unwrap(), 14),
            mtu: 1420,
        };
        let peers = [Peer {
            comment: "node/n1".into(),
            public_key: PrivateKey::generate().public_key(),
            preshared_key: &psk,
            endpoint: None,
            allowed_ips: "10.221.0.2/32".into(),
            persistent_keepalive: None,
        }];
        let wg = render(ConfigForm::Wg, &iface, &peers);
        let quick = render(ConfigForm::WgQuick, &iface, &peers);
        assert!(!wg.contains("Address") && !wg.contains("MTU"));
        assert!(quick.contains("Address = 10.220.0.1/14\nMTU = 1420\n"));
        assert!(wg.starts_with("# hello\n[Interface]\nPrivateKey = "));
        assert!(wg.contains("ListenPort = 51820\n\n# node/n1\n[Peer]\nPublicKey = "));
        assert!(wg.contains("AllowedIPs = 10.221.0.2/32\n"));
        assert_eq!(
            "wg-quick".parse::<ConfigForm>().unwrap(),
            ConfigForm::WgQuick
        );
        assert!("quick".parse::<ConfigForm>().is_err());
    }
}
