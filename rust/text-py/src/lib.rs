//! The Python module `xshm_text._native`: the xshm-text functions on `str` and `bytes`.
use pyo3::exceptions::{PyUnicodeDecodeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// Cut bytes to at most `max_bytes` without splitting a UTF-8 sequence.
#[pyfunction]
fn cut<'py>(py: Python<'py>, data: &[u8], max_bytes: usize) -> Bound<'py, PyBytes> {
    PyBytes::new(py, &data[..xshm_text::cut(data, max_bytes)])
}

/// Cut a str so that its UTF-8 encoding is at most `max_bytes` bytes, on a code-point boundary.
#[pyfunction]
fn cut_str(text: &str, max_bytes: usize) -> &str {
    &text[..xshm_text::cut(text.as_bytes(), max_bytes)]
}

/// Check that `data` is valid UTF-8: returns None, or raises UnicodeDecodeError whose `start`
/// is the offset of the first invalid sequence (as `bytes.decode("utf-8")` would).
#[pyfunction]
fn validate(py: Python<'_>, data: &[u8]) -> PyResult<()> {
    match py.detach(|| xshm_text::validate(data)) {
        Ok(()) => Ok(()),
        Err(offset) => {
            let end = (offset + 1).min(data.len());
            Err(PyUnicodeDecodeError::new(
                py,
                c"utf-8",
                data,
                offset..end,
                c"invalid UTF-8 sequence",
            )?
            .into())
        }
    }
}

/// Length of the longest valid UTF-8 prefix of `data`: `len(data)` exactly when it is valid.
#[pyfunction]
fn valid_up_to(py: Python<'_>, data: &[u8]) -> usize {
    py.detach(|| xshm_text::valid_up_to(data))
}

/// Decode UTF-8, replacing each invalid sequence with U+FFFD.
#[pyfunction]
fn decode_lossy(data: &[u8]) -> String {
    xshm_text::decode_lossy(data)
}

/// Encode a str as UTF-16LE bytes (for JVM/.NET peers).
#[pyfunction]
fn encode_utf16<'py>(py: Python<'py>, text: &str) -> Bound<'py, PyBytes> {
    let units = xshm_text::utf8_to_utf16(text.as_bytes()).expect("a str is valid UTF-8");
    let bytes: Vec<u8> = units.iter().flat_map(|u| u.to_le_bytes()).collect();
    PyBytes::new(py, &bytes)
}

/// Decode UTF-16LE bytes; raises ValueError for an odd length or an unpaired surrogate.
#[pyfunction]
fn decode_utf16(data: &[u8]) -> PyResult<String> {
    if !data.len().is_multiple_of(2) {
        return Err(PyValueError::new_err(format!(
            "UTF-16 data has an odd number of bytes ({})",
            data.len()
        )));
    }
    let units: Vec<u16> = data
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    xshm_text::utf16_to_utf8(&units)
        .map_err(|i| PyValueError::new_err(format!("unpaired UTF-16 surrogate at code unit {i}")))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(cut, m)?)?;
    m.add_function(wrap_pyfunction!(cut_str, m)?)?;
    m.add_function(wrap_pyfunction!(validate, m)?)?;
    m.add_function(wrap_pyfunction!(valid_up_to, m)?)?;
    m.add_function(wrap_pyfunction!(decode_lossy, m)?)?;
    m.add_function(wrap_pyfunction!(encode_utf16, m)?)?;
    m.add_function(wrap_pyfunction!(decode_utf16, m)?)?;
    Ok(())
}
