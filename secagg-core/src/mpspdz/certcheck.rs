//! Will MP-SPDZ v0.3.4 accept this certificate as party `P<j>`?
//!
//! The checks mirror what its TLS setup does (Boost.Asio 1.74 over OpenSSL, see
//! `mp-spdz-interface.md` §2): X.509 v3; valid now; the RFC 2818 name check of Boost's
//! `rfc2818_verification("P<j>")` — DNS subject alternative names first, then the last common
//! name, case-insensitive, `*` matching any run of characters other than `.`; and, because every
//! party is both TLS server and TLS client, an extended key usage (when present) that allows both.

use ::time::OffsetDateTime;
use x509_parser::prelude::*;

use crate::certificate::format_time;

/// One finding about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFinding {
    /// Whether MP-SPDZ will refuse the certificate because of it.
    pub fatal: bool,
    /// What was found.
    pub message: String,
}

/// Boost 1.74's `rfc2818_verification::match_pattern`: case-insensitive, `*` matches any run of
/// characters other than `.` (including none).
pub fn match_pattern(pattern: &[u8], host: &[u8]) -> bool {
    let (mut p, mut h) = (0usize, 0usize);
    while p < pattern.len() && h < host.len() {
        if pattern[p] == b'*' {
            p += 1;
            while h < host.len() && host[h] != b'.' {
                if match_pattern(&pattern[p..], &host[h..]) {
                    return true;
                }
                h += 1;
            }
        } else if pattern[p].eq_ignore_ascii_case(&host[h]) {
            p += 1;
            h += 1;
        } else {
            return false;
        }
    }
    p == pattern.len() && h == host.len()
}

/// The names MP-SPDZ v0.3.4 checks: DNS SANs, then the last CN.
pub fn tls_names(cert: &X509Certificate<'_>) -> (Vec<String>, Option<String>) {
    let mut dns = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::DNSName(d) = n {
                dns.push((*d).to_owned());
            }
        }
    }
    let cn = cert
        .subject()
        .iter_common_name()
        .filter_map(|a| a.as_str().ok().map(str::to_owned))
        .last();
    (dns, cn)
}

/// Checks a DER certificate for use as party `index` at time `now`. An empty list of fatal
/// findings means MP-SPDZ v0.3.4 will accept it.
pub fn check(der: &[u8], index: usize, now: OffsetDateTime) -> Vec<CertFinding> {
    let fatal = |m: String| CertFinding {
        fatal: true,
        message: m,
    };
    let (_, cert) = match X509Certificate::from_der(der) {
        Ok(c) => c,
        Err(e) => return vec![fatal(format!("cannot parse the certificate: {e}"))],
    };
    let mut out = Vec::new();
    if cert.version() != X509Version::V3 {
        out.push(fatal(format!(
            "X.509 version {} (MP-SPDZ's TLS setup expects v3)",
            cert.version().0 + 1
        )));
    }
    let nb = cert.validity().not_before.to_datetime();
    let na = cert.validity().not_after.to_datetime();
    if now > na {
        out.push(fatal(format!("expired on {}", format_time(na))));
    } else if now < nb {
        out.push(fatal(format!("not valid before {}", format_time(nb))));
    }
    let host = format!("P{index}");
    let (dns, cn) = tls_names(&cert);
    let matched = dns
        .iter()
        .any(|d| match_pattern(d.as_bytes(), host.as_bytes()))
        || cn
            .as_deref()
            .is_some_and(|c| match_pattern(c.as_bytes(), host.as_bytes()));
    if !matched {
        out.push(fatal(format!(
            "its names (CN {}, DNS SANs [{}]) do not match `{host}` in MP-SPDZ v0.3.4's RFC 2818 check; use CN=* (secagg's certificates have it) or CN={host}",
            cn.as_deref().map_or_else(|| "none".to_owned(), |c| format!("`{c}`")),
            dns.join(", ")
        )));
    }
    if let Some(e) = crate::certificate::ExtendedKeyUsage::of(&cert) {
        if !e.allows_mutual_tls() {
            let missing: Vec<&str> = [
                (!e.server_auth).then_some("serverAuth"),
                (!e.client_auth).then_some("clientAuth"),
            ]
            .into_iter()
            .flatten()
            .collect();
            out.push(fatal(format!(
                "its extended key usage lacks {}: every MP-SPDZ party is both TLS server and client",
                missing.join(" and ")
            )));
        }
    }
    if let Ok(Some(ku)) = cert.key_usage() {
        if !ku.value.digital_signature() {
            out.push(fatal(
                "its key usage lacks digitalSignature, which TLS 1.2 with ECDHE needs".to_owned(),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boost_rfc2818_pattern_matching() {
        assert!(match_pattern(b"*", b"P1"));
        assert!(match_pattern(b"P1", b"p1"));
        assert!(match_pattern(b"P*", b"P12"));
        assert!(!match_pattern(b"P1", b"P2"));
        assert!(!match_pattern(b"foo", b"P0"));
        assert!(!match_pattern(b"*", b"a.b"));
        assert!(match_pattern(b"*.b", b"a.b"));
        assert!(!match_pattern(b"", b"P0"));
    }

    fn fixture(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/certs")
            .join(name);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        crate::certificate::Certificate::parse(&bytes, "fixture")
            .unwrap()
            .der
    }

    #[test]
    fn generated_certificates_pass_and_bad_ones_are_named() {
        let now = OffsetDateTime::now_utc();
        let id = crate::PartyId::parse("node_x").unwrap();
        let g =
            crate::certificate::generate(&id, crate::certificate::GeneratedKeyType::P256, 10, now)
                .unwrap();
        for j in 0..5 {
            assert!(check(&g.certificate.der, j, now).is_empty());
        }
        let later = now + ::time::Duration::days(30);
        let f = check(&g.certificate.der, 1, later);
        assert!(
            f.iter().any(|f| f.fatal && f.message.contains("expired")),
            "{f:?}"
        );

        let now = OffsetDateTime::now_utc();
        assert!(check(&fixture("fedbiomed_rsa2048.pem"), 2, now).is_empty());
        let f = check(&fixture("x509_v1.pem"), 1, now);
        assert!(f.iter().any(|f| f.message.contains("version 1")), "{f:?}");
        let f = check(&fixture("expired.pem"), 1, now);
        assert!(f.iter().any(|f| f.message.contains("expired")), "{f:?}");

        let make = |cn: &str, ekus: Vec<rcgen::ExtendedKeyUsagePurpose>| {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::default();
            let mut dn = rcgen::DistinguishedName::new();
            dn.push(rcgen::DnType::CommonName, cn);
            params.distinguished_name = dn;
            params.extended_key_usages = ekus;
            params.self_signed(&key).unwrap().der().to_vec()
        };
        use rcgen::ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
        let f = check(&make("*", vec![ServerAuth]), 1, now);
        assert!(
            f.iter().any(|f| f.message.contains("lacks clientAuth")),
            "{f:?}"
        );
        let f = check(&make("foo", vec![ServerAuth, ClientAuth]), 1, now);
        assert!(f.iter().any(|f| f.message.contains("`P1`")), "{f:?}");
        assert!(check(&make("P1", vec![]), 1, now).is_empty());
        assert!(!check(&make("P1", vec![]), 2, now).is_empty());
    }
}
