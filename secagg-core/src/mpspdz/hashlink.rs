//! OpenSSL subject-hash links (`<hash>.N` → `P<j>.pem`), made without running `openssl rehash`.
//!
//! MP-SPDZ trusts `Player-Data/` as an OpenSSL *hashed directory*: a peer's certificate is found
//! only through a link named after `X509_NAME_hash` of its subject. That hash is the first four
//! bytes, read little-endian, of SHA-1 over OpenSSL's *canonical* encoding of the name
//! (`x509_name_canon` in `crypto/x509/x_name.c`):
//!
//! - every attribute value of a string type OpenSSL canonicalises (UTF8String, PrintableString,
//!   T61String, IA5String, VisibleString, BMPString, UniversalString) is converted to UTF-8, leading
//!   and trailing ASCII whitespace is removed, inner runs of whitespace become one space, ASCII
//!   letters are lowercased, and the value is re-tagged as UTF8String; other types are kept as is;
//! - each RDN is encoded as a DER `SET OF` (members sorted), and the RDNs are concatenated
//!   **without** the outer `SEQUENCE` header.
//!
//! Links are numbered `.0`, `.1`, … per hash in party order, as `openssl rehash` does for distinct
//! certificates with the same subject hash.

use std::path::Path;

use sha1::{Digest, Sha1};

use crate::error::{Error, Result};

const TAG_SEQUENCE: u8 = 0x30;
const TAG_SET: u8 = 0x31;
const TAG_UTF8: u8 = 0x0c;
const TAG_PRINTABLE: u8 = 0x13;
const TAG_T61: u8 = 0x14;
const TAG_IA5: u8 = 0x16;
const TAG_VISIBLE: u8 = 0x1a;
const TAG_UNIVERSAL: u8 = 0x1c;
const TAG_BMP: u8 = 0x1e;

/// One DER element: tag, header length, and the whole encoding.
struct Tlv<'a> {
    tag: u8,
    content: &'a [u8],
}

fn bad_name(what: &str) -> Error {
    Error::invalid(format!("malformed certificate subject name: {what}"))
}

/// Reads one DER element at the start of `input`; returns it and the rest.
fn read_tlv(input: &[u8]) -> Result<(Tlv<'_>, &[u8])> {
    if input.len() < 2 {
        return Err(bad_name("truncated element"));
    }
    let tag = input[0];
    if tag & 0x1f == 0x1f {
        return Err(bad_name("multi-byte tags are not supported"));
    }
    let (len, header) = match input[1] {
        l if l < 0x80 => (usize::from(l), 2),
        0x80 => return Err(bad_name("indefinite length")),
        l => {
            let n = usize::from(l & 0x7f);
            if n > 4 || input.len() < 2 + n {
                return Err(bad_name("bad length"));
            }
            let mut len = 0usize;
            for &b in &input[2..2 + n] {
                len = (len << 8) | usize::from(b);
            }
            (len, 2 + n)
        }
    };
    let end = header
        .checked_add(len)
        .filter(|&e| e <= input.len())
        .ok_or_else(|| bad_name("element longer than its container"))?;
    Ok((
        Tlv {
            tag,
            content: &input[header..end],
        },
        &input[end..],
    ))
}

fn write_tlv(out: &mut Vec<u8>, tag: u8, content: &[u8]) {
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
}

/// OpenSSL's `ossl_isspace`: space, \t, \n, \v, \f, \r.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// Converts a string value of a canonicalised type to UTF-8 bytes (as `ASN1_STRING_to_UTF8`).
fn to_utf8(tag: u8, v: &[u8]) -> Result<Vec<u8>> {
    let from_chars = |chars: &mut dyn Iterator<Item = u32>| -> Result<Vec<u8>> {
        let mut s = String::new();
        for c in chars {
            s.push(char::from_u32(c).ok_or_else(|| bad_name("invalid character"))?);
        }
        Ok(s.into_bytes())
    };
    match tag {
        TAG_UTF8 => Ok(v.to_vec()),
        // OpenSSL treats T61String as one byte per character (Latin-1), like the others here.
        TAG_PRINTABLE | TAG_T61 | TAG_IA5 | TAG_VISIBLE => {
            from_chars(&mut v.iter().map(|&b| u32::from(b)))
        }
        TAG_BMP => {
            if v.len() % 2 != 0 {
                return Err(bad_name("odd-length BMPString"));
            }
            from_chars(
                &mut v
                    .chunks(2)
                    .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))),
            )
        }
        TAG_UNIVERSAL => {
            if v.len() % 4 != 0 {
                return Err(bad_name("UniversalString length not a multiple of 4"));
            }
            from_chars(
                &mut v
                    .chunks(4)
                    .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]])),
            )
        }
        _ => Err(bad_name("unexpected string type")),
    }
}

/// `asn1_string_canon`: trims, collapses whitespace and lowercases ASCII.
fn canon_value(utf8: &[u8]) -> Vec<u8> {
    let mut s = utf8;
    while let Some((&b, rest)) = s.split_first() {
        if !is_space(b) {
            break;
        }
        s = rest;
    }
    while let Some((&b, rest)) = s.split_last() {
        if !is_space(b) {
            break;
        }
        s = rest;
    }
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        if b >= 0x80 {
            out.push(b);
            i += 1;
        } else if is_space(b) {
            out.push(b' ');
            while i < s.len() && is_space(s[i]) {
                i += 1;
            }
        } else {
            out.push(b.to_ascii_lowercase());
            i += 1;
        }
    }
    out
}

/// OpenSSL's canonical encoding of a DER `Name` (see the module documentation).
pub fn canonical_name_encoding(name_der: &[u8]) -> Result<Vec<u8>> {
    let (name, rest) = read_tlv(name_der)?;
    if name.tag != TAG_SEQUENCE || !rest.is_empty() {
        return Err(bad_name("not a SEQUENCE"));
    }
    let mut out = Vec::new();
    let mut rdns = name.content;
    while !rdns.is_empty() {
        let (rdn, next) = read_tlv(rdns)?;
        rdns = next;
        if rdn.tag != TAG_SET {
            return Err(bad_name("RDN is not a SET"));
        }
        let mut entries: Vec<Vec<u8>> = Vec::new();
        let mut avas = rdn.content;
        while !avas.is_empty() {
            let (ava, next) = read_tlv(avas)?;
            avas = next;
            if ava.tag != TAG_SEQUENCE {
                return Err(bad_name("attribute is not a SEQUENCE"));
            }
            let (oid, after) = read_tlv(ava.content)?;
            let (value, end) = read_tlv(after)?;
            if oid.tag != 0x06 || !end.is_empty() {
                return Err(bad_name("attribute is not OID + value"));
            }
            let mut body = Vec::new();
            write_tlv(&mut body, 0x06, oid.content);
            match value.tag {
                TAG_UTF8 | TAG_PRINTABLE | TAG_T61 | TAG_IA5 | TAG_VISIBLE | TAG_UNIVERSAL
                | TAG_BMP => {
                    let v = canon_value(&to_utf8(value.tag, value.content)?);
                    write_tlv(&mut body, TAG_UTF8, &v);
                }
                other => write_tlv(&mut body, other, value.content),
            }
            let mut entry = Vec::new();
            write_tlv(&mut entry, TAG_SEQUENCE, &body);
            entries.push(entry);
        }
        // DER SET OF: members in ascending order of their encodings.
        entries.sort();
        write_tlv(&mut out, TAG_SET, &entries.concat());
    }
    Ok(out)
}

/// `X509_NAME_hash` of a DER `Name`: SHA-1 of the canonical encoding, first 4 bytes little-endian.
pub fn name_hash(name_der: &[u8]) -> Result<u32> {
    let canon = canonical_name_encoding(name_der)?;
    let d = Sha1::digest(&canon);
    Ok(u32::from_le_bytes([d[0], d[1], d[2], d[3]]))
}

/// The subject hash of a DER certificate, as `openssl x509 -subject_hash` prints it (8 hex digits).
pub fn subject_hash_hex(cert_der: &[u8]) -> Result<String> {
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(cert_der)
        .map_err(|e| Error::invalid(format!("cannot parse certificate: {e}")))?;
    Ok(format!(
        "{:08x}",
        name_hash(cert.tbs_certificate.subject.as_raw())?
    ))
}

/// Link names (`<hash>.N`) for certificates given in party order: entry j is the name of the link
/// to party j's PEM.
pub fn link_names(certs_der: &[&[u8]]) -> Result<Vec<String>> {
    let mut seen: Vec<String> = Vec::with_capacity(certs_der.len());
    let mut names = Vec::with_capacity(certs_der.len());
    for der in certs_der {
        let h = subject_hash_hex(der)?;
        let n = seen.iter().filter(|s| **s == h).count();
        names.push(format!("{h}.{n}"));
        seen.push(h);
    }
    Ok(names)
}

/// Creates, in `dir`, a relative symbolic link `<hash>.N` → `P<j>.pem` for every party j.
pub fn make_links(dir: &Path, certs_der: &[&[u8]]) -> Result<Vec<String>> {
    let names = link_names(certs_der)?;
    for (j, name) in names.iter().enumerate() {
        let link = dir.join(name);
        std::os::unix::fs::symlink(format!("P{j}.pem"), &link)
            .map_err(|e| Error::io_path("creating hash link", &link, e))?;
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonicalisation_rules() {
        assert_eq!(canon_value(b"  Hello \t  World\n"), b"hello world");
        assert_eq!(canon_value(b"*"), b"*");
        assert_eq!(canon_value(b"   "), b"");
        assert_eq!(canon_value("ÉCOLE  x".as_bytes()), "École x".as_bytes());
    }

    #[test]
    fn der_lengths_round_trip() {
        for len in [0usize, 1, 127, 128, 255, 256, 70000] {
            let mut out = Vec::new();
            let content = vec![7u8; len];
            write_tlv(&mut out, 0x04, &content);
            let (t, rest) = read_tlv(&out).unwrap();
            assert!(rest.is_empty());
            assert_eq!(t.content.len(), len);
        }
        assert!(read_tlv(&[0x30, 0x05, 1]).is_err());
        assert!(read_tlv(&[0x30, 0x80]).is_err());
    }

    #[test]
    fn empty_name_hashes_the_empty_string() {
        // SHA-1("") = da39a3ee…: first 4 bytes little-endian.
        assert_eq!(name_hash(&[0x30, 0x00]).unwrap(), 0xee_a3_39_da);
    }
}
