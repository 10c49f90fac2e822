//! Reading model parameters to encrypt: a JSON array of numbers, or a NumPy `.npy` file of
//! float32 or float64 values (the form model weights come in), any shape, flattened in C order.

use std::path::Path;

use crate::error::{Error, Result};
use crate::fs_secure;

/// Largest parameter file accepted (a 100-million-parameter float64 model is 800 MB).
pub const MAX_PARAMS_FILE_BYTES: u64 = 1 << 30;

const NPY_MAGIC: &[u8] = b"\x93NUMPY";

/// Reads the parameters in `path`: NumPy `.npy` (recognised by its magic bytes) or a JSON array
/// of numbers. Non-finite values are refused later, by quantisation, with their index.
pub fn read_params(path: &Path) -> Result<Vec<f64>> {
    let bytes = fs_secure::read_limited(path, MAX_PARAMS_FILE_BYTES, "parameter")?;
    let what = format!("parameter file `{}`", path.display());
    if bytes.starts_with(NPY_MAGIC) {
        parse_npy(&bytes).map_err(|e| e.context(format!("in {what}")))
    } else {
        parse_json(&bytes).map_err(|e| e.context(format!("in {what}")))
    }
}

/// Parses a JSON array of numbers.
pub fn parse_json(bytes: &[u8]) -> Result<Vec<f64>> {
    let hint = "give a JSON array of numbers, e.g. [0.5, -0.25, 1.0], or a NumPy .npy file of float32/float64 values";
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        Error::invalid(format!("not a JSON array of numbers nor a .npy file ({e})")).with_hint(hint)
    })?;
    let items = value
        .as_array()
        .ok_or_else(|| Error::invalid("the JSON value is not an array").with_hint(hint))?;
    items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_f64().ok_or_else(|| {
                Error::invalid(format!("element {i} is not a number: {v}")).with_hint(hint)
            })
        })
        .collect()
}

/// Parses a NumPy `.npy` file (format versions 1 to 3) of little- or big-endian float32 or
/// float64 values in C order.
pub fn parse_npy(bytes: &[u8]) -> Result<Vec<f64>> {
    let bad = |why: String| {
        Error::invalid(format!("not a usable .npy file: {why}"))
            .with_hint("save a float32 or float64 array with numpy.save (C order)")
    };
    if bytes.len() < 10 {
        return Err(bad("truncated header".into()));
    }
    let (header_len, start) = match bytes[6] {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(bad(format!("format version {v} is not supported"))),
    };
    let header = bytes
        .get(start..start + header_len)
        .ok_or_else(|| bad("truncated header".into()))?;
    let header = std::str::from_utf8(header).map_err(|_| bad("header is not text".into()))?;
    let field = |key: &str| -> Option<&str> {
        let at = header.find(&format!("'{key}'"))? + key.len() + 2;
        Some(header[at..].trim_start().strip_prefix(':')?.trim_start())
    };
    let descr = field("descr")
        .and_then(|r| r.strip_prefix('\''))
        .and_then(|r| r.split('\'').next())
        .ok_or_else(|| bad("no dtype ('descr') in the header".into()))?;
    if field("fortran_order").is_some_and(|r| r.starts_with("True")) {
        return Err(bad("Fortran-ordered arrays are not supported".into()));
    }
    let shape = field("shape")
        .and_then(|r| r.strip_prefix('('))
        .and_then(|r| r.split(')').next())
        .ok_or_else(|| bad("no shape in the header".into()))?;
    let mut count: usize = 1;
    for dim in shape.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let d: usize = dim
            .trim_end_matches('L')
            .parse()
            .map_err(|_| bad(format!("bad dimension `{dim}` in the shape")))?;
        count = count
            .checked_mul(d)
            .ok_or_else(|| bad("the shape is too large".into()))?;
    }
    let data = &bytes[start + header_len..];
    let (size, little) = match descr {
        "<f8" | "=f8" => (8, true),
        ">f8" => (8, false),
        "<f4" | "=f4" => (4, true),
        ">f4" => (4, false),
        other => return Err(bad(format!("dtype `{other}` is not float32 or float64"))),
    };
    if data.len() != count * size {
        return Err(bad(format!(
            "the shape ({shape}) needs {} data bytes, the file has {}",
            count * size,
            data.len()
        )));
    }
    Ok(data
        .chunks_exact(size)
        .map(|c| match (size, little) {
            (8, true) => f64::from_le_bytes(c.try_into().expect("8 bytes")),
            (8, false) => f64::from_be_bytes(c.try_into().expect("8 bytes")),
            (4, true) => f64::from(f32::from_le_bytes(c.try_into().expect("4 bytes"))),
            _ => f64::from(f32::from_be_bytes(c.try_into().expect("4 bytes"))),
        })
        .collect())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A `.npy` file as numpy.save writes it (format 1.0, header padded to 64 bytes).
    pub(crate) fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut header =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = NPY_MAGIC.to_vec();
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn npy_float64_float32_and_shapes() {
        let v = [0.5f64, -0.25, 1.0, 3.5];
        let le: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(parse_npy(&npy("<f8", "(4,)", &le)).unwrap(), v);
        assert_eq!(parse_npy(&npy("<f8", "(2, 2)", &le)).unwrap(), v);
        let f32s: Vec<u8> = v.iter().flat_map(|x| (*x as f32).to_le_bytes()).collect();
        assert_eq!(parse_npy(&npy("<f4", "(4,)", &f32s)).unwrap(), v);
        let be: Vec<u8> = v.iter().flat_map(|x| x.to_be_bytes()).collect();
        assert_eq!(parse_npy(&npy(">f8", "(4,)", &be)).unwrap(), v);
        assert_eq!(
            parse_npy(&npy("<f8", "(0,)", &[])).unwrap(),
            Vec::<f64>::new()
        );
    }

    #[test]
    fn npy_refusals_say_why() {
        let e = parse_npy(&npy("<i8", "(1,)", &[0; 8])).unwrap_err();
        assert!(
            e.to_string()
                .contains("dtype `<i8` is not float32 or float64"),
            "{e}"
        );
        let e = parse_npy(&npy("<f8", "(3,)", &[0; 16])).unwrap_err();
        assert!(
            e.to_string()
                .contains("needs 24 data bytes, the file has 16"),
            "{e}"
        );
        let mut f = npy("<f8", "(1,)", &[0; 8]);
        f[6] = 9;
        assert!(parse_npy(&f).unwrap_err().to_string().contains("version 9"));
        assert!(parse_npy(b"\x93NUMPY").is_err());
    }

    #[test]
    fn json_arrays() {
        assert_eq!(
            parse_json(b"[0.5, -1, 2e3]").unwrap(),
            vec![0.5, -1.0, 2000.0]
        );
        let e = parse_json(b"[0.5, \"x\"]").unwrap_err();
        assert!(e.to_string().contains("element 1 is not a number"), "{e}");
        assert!(parse_json(b"{\"a\": 1}")
            .unwrap_err()
            .to_string()
            .contains("not an array"));
        assert!(parse_json(b"garbage").is_err());
    }
}
