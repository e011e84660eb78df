//! The Python module `xshm_text._native`: the xshm-text functions on `str` and `bytes`.
//!
//! Every parameter is taken as a Python object and converted here (`arg_*`), so that a wrong
//! argument gets xshm's words naming the parameter, as xshm's own binding does: TypeError for a
//! wrong type, ValueError for a wrong value, never pyo3's "can't convert negative int to
//! unsigned" or "'NoneType' object is not an instance of 'bytes'".
use pyo3::exceptions::{PyOverflowError, PyTypeError, PyUnicodeDecodeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyFloat, PyString};
use std::borrow::Cow;

/// The name of `obj`'s type as Python writes it ("NoneType", "numpy.float64").
fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .fully_qualified_name()
        .map_or_else(|_| "object".to_owned(), |n| n.to_string())
}

/// `repr(obj)`, shortened to 60 characters, for a message; never fails.
fn repr_of(obj: &Bound<'_, PyAny>) -> String {
    let text = obj
        .repr()
        .map_or_else(|_| format!("<{}>", type_name(obj)), |r| r.to_string());
    if text.chars().count() > 60 {
        text.chars().take(57).chain("...".chars()).collect()
    } else {
        text
    }
}

/// A bytes parameter: TypeError naming it for anything else.
fn arg_bytes<'a>(obj: &'a Bound<'_, PyAny>, name: &str) -> PyResult<&'a [u8]> {
    match obj.cast::<PyBytes>() {
        Ok(b) => Ok(b.as_bytes()),
        Err(_) => Err(PyTypeError::new_err(format!(
            "{name} must be bytes, not {}",
            type_name(obj)
        ))),
    }
}

/// A str parameter as UTF-8: TypeError for another type, ValueError for a str that has no UTF-8
/// form (a lone surrogate).
fn arg_str<'a>(obj: &'a Bound<'_, PyAny>, name: &str) -> PyResult<Cow<'a, str>> {
    let Ok(s) = obj.cast::<PyString>() else {
        return Err(PyTypeError::new_err(format!(
            "{name} must be a str, not {}",
            type_name(obj)
        )));
    };
    s.to_cow().map_err(|e| {
        let why = e.value(obj.py()).to_string(); // str(exc), without its class name
        PyValueError::new_err(format!("{name} cannot be encoded as UTF-8: {why}"))
    })
}

/// A size parameter in 0..usize::MAX (an int, or anything with `__index__` such as numpy's
/// integers, never a float): TypeError for a non-integer, ValueError out of range.
fn arg_usize(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<usize> {
    let range = || format!("0..2**{}-1", usize::BITS);
    if !obj.is_instance_of::<PyFloat>() {
        match obj.extract::<usize>() {
            Ok(v) => return Ok(v),
            Err(e) if e.is_instance_of::<PyOverflowError>(obj.py()) => {
                return Err(PyValueError::new_err(format!(
                    "{name} must be an integer in {}, got {}",
                    range(),
                    repr_of(obj)
                )));
            }
            Err(e) if !e.is_instance_of::<PyTypeError>(obj.py()) => return Err(e),
            Err(_) => {}
        }
    }
    Err(PyTypeError::new_err(format!(
        "{name} must be an integer in {}, not {}",
        range(),
        type_name(obj)
    )))
}

/// Cut bytes to at most `max_bytes` without splitting a UTF-8 sequence.
#[pyfunction]
fn cut<'py>(
    data: &Bound<'py, PyAny>,
    max_bytes: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyBytes>> {
    let bytes = arg_bytes(data, "data")?;
    let max_bytes = arg_usize(max_bytes, "max_bytes")?;
    let n = xshm_text::cut(bytes, max_bytes);
    if let (true, Ok(whole)) = (n == bytes.len(), data.cast_exact::<PyBytes>()) {
        return Ok(whole.clone()); // bytes are immutable: the argument itself, no copy
    }
    Ok(PyBytes::new(data.py(), &bytes[..n]))
}

/// Cut a str so that its UTF-8 encoding is at most `max_bytes` bytes, on a code-point boundary.
#[pyfunction]
fn cut_str<'py>(
    text: &Bound<'py, PyAny>,
    max_bytes: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyString>> {
    let utf8 = arg_str(text, "text")?;
    let max_bytes = arg_usize(max_bytes, "max_bytes")?;
    let n = xshm_text::cut(utf8.as_bytes(), max_bytes);
    if let (true, Ok(whole)) = (n == utf8.len(), text.cast_exact::<PyString>()) {
        return Ok(whole.clone()); // str is immutable: the argument itself, no copy
    }
    Ok(PyString::new(text.py(), &utf8[..n]))
}

/// Check that `data` is valid UTF-8: returns None, or raises UnicodeDecodeError whose `start`
/// is the offset of the first invalid sequence (as `bytes.decode("utf-8")` would).
#[pyfunction]
fn validate(py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
    let data = arg_bytes(data, "data")?;
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
fn valid_up_to(py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<usize> {
    let data = arg_bytes(data, "data")?;
    Ok(py.detach(|| xshm_text::valid_up_to(data)))
}

/// Decode UTF-8, replacing each invalid sequence with U+FFFD.
#[pyfunction]
fn decode_lossy(data: &Bound<'_, PyAny>) -> PyResult<String> {
    Ok(xshm_text::decode_lossy(arg_bytes(data, "data")?))
}

/// Encode a str as UTF-16LE bytes (for JVM/.NET peers).
#[pyfunction]
fn encode_utf16<'py>(text: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    let utf8 = arg_str(text, "text")?;
    let units = xshm_text::utf8_to_utf16(utf8.as_bytes()).expect("a str is valid UTF-8");
    let bytes: Vec<u8> = units.iter().flat_map(|u| u.to_le_bytes()).collect();
    Ok(PyBytes::new(text.py(), &bytes))
}

/// Decode UTF-16LE bytes; raises ValueError for an odd length or an unpaired surrogate.
#[pyfunction]
fn decode_utf16(data: &Bound<'_, PyAny>) -> PyResult<String> {
    let data = arg_bytes(data, "data")?;
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
