//! Reading model parameters to encrypt: a JSON array of numbers, or a NumPy `.npy` file of
//! float32 or float64 values (the form model weights come in), any shape, flattened in C order
//! (a Fortran-ordered file is read as NumPy reads it, then flattened in C order too).

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
/// float64 values, in C or Fortran order; the result is the array flattened in C order, as
/// `numpy.load(f).flatten()` gives it whatever the file's order.
pub fn parse_npy(bytes: &[u8]) -> Result<Vec<f64>> {
    let bad = |why: String| {
        Error::invalid(format!("not a usable .npy file: {why}"))
            .with_hint("save a float32 or float64 array with numpy.save")
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
    let fortran_order = match field("fortran_order") {
        Some(r) if r.starts_with("True") => true,
        Some(r) if r.starts_with("False") => false,
        _ => return Err(bad("no 'fortran_order' True or False in the header".into())),
    };
    let shape = field("shape")
        .and_then(|r| r.strip_prefix('('))
        .and_then(|r| r.split(')').next())
        .ok_or_else(|| bad("no shape in the header".into()))?;
    let mut count: usize = 1;
    let mut dims = Vec::new();
    for dim in shape.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let d: usize = dim
            .trim_end_matches('L')
            .parse()
            .map_err(|_| bad(format!("bad dimension `{dim}` in the shape")))?;
        count = count
            .checked_mul(d)
            .ok_or_else(|| bad("the shape is too large".into()))?;
        dims.push(d);
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
    let values: Vec<f64> = data
        .chunks_exact(size)
        .map(|c| match (size, little) {
            (8, true) => f64::from_le_bytes(c.try_into().expect("8 bytes")),
            (8, false) => f64::from_be_bytes(c.try_into().expect("8 bytes")),
            (4, true) => f64::from(f32::from_le_bytes(c.try_into().expect("4 bytes"))),
            _ => f64::from(f32::from_be_bytes(c.try_into().expect("4 bytes"))),
        })
        .collect();
    Ok(if fortran_order {
        fortran_to_c_order(&values, &dims)
    } else {
        values
    })
}

/// Reorders the values of an array of shape `dims` stored in Fortran (column-major) order into C
/// (row-major) order: element `(i_0, …, i_k)` is at `Σ i_j · Π_{l<j} dims_l` in the file, and goes
/// to `Σ i_j · Π_{l>j} dims_l`.
fn fortran_to_c_order(values: &[f64], dims: &[usize]) -> Vec<f64> {
    if dims.len() < 2 {
        return values.to_vec();
    }
    let mut f_strides = vec![1usize; dims.len()];
    for j in 1..dims.len() {
        f_strides[j] = f_strides[j - 1] * dims[j - 1];
    }
    let mut index = vec![0usize; dims.len()];
    let mut out = Vec::with_capacity(values.len());
    for _ in 0..values.len() {
        let at: usize = index.iter().zip(&f_strides).map(|(i, s)| i * s).sum();
        out.push(values[at]);
        // The next C-order index: the last dimension varies fastest.
        for j in (0..dims.len()).rev() {
            index[j] += 1;
            if index[j] < dims[j] {
                break;
            }
            index[j] = 0;
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A `.npy` file as numpy.save writes it (format 1.0, header padded to 64 bytes).
    pub(crate) fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
        npy_ordered(descr, shape, data, "False")
    }

    fn npy_ordered(descr: &str, shape: &str, data: &[u8], fortran: &str) -> Vec<u8> {
        let mut header =
            format!("{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape}, }}");
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

    /// Regression (issue 20, item 9): a Fortran-ordered file (`numpy.save(f, a.T)` of a C
    /// array, or `np.asfortranarray`) was refused. It is read as NumPy reads it: the C-order
    /// flattening of the same logical array.
    #[test]
    fn npy_fortran_order_is_read_as_numpy_reads_it() {
        let fortran = |shape: &str, data: &[f64]| {
            let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
            npy_ordered("<f8", shape, &bytes, "True")
        };
        // a = [[1, 2, 3], [4, 5, 6]]: column-major bytes 1 4 2 5 3 6.
        assert_eq!(
            parse_npy(&fortran("(2, 3)", &[1.0, 4.0, 2.0, 5.0, 3.0, 6.0])).unwrap(),
            vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
        );
        // Shape (2, 2, 2): a[i][j][k] = 4i + 2j + k, stored with i fastest.
        let mut col_major = Vec::new();
        for k in 0..2 {
            for j in 0..2 {
                for i in 0..2 {
                    col_major.push(f64::from(4 * i + 2 * j + k));
                }
            }
        }
        assert_eq!(
            parse_npy(&fortran("(2, 2, 2)", &col_major)).unwrap(),
            (0..8).map(f64::from).collect::<Vec<_>>()
        );
        // One dimension: the same in both orders.
        assert_eq!(
            parse_npy(&fortran("(3,)", &[1.0, 2.0, 3.0])).unwrap(),
            vec![1.0, 2.0, 3.0]
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
