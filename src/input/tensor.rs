//! Dense tensors from JSON: nested arrays, or a flat array with an explicit shape.
//!
//! Errors carry the JSON path of the offending element (`input[0][3][2]`), so a client can find
//! what is wrong without guessing.

use serde_json::Value;

use super::frames::RequestFrames;
use crate::contract::{InputKind, ModelContract};

/// A row-major float32 tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct DenseTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl DenseTensor {
    /// A tensor from a shape and row-major values that arrived as binary or typed contents (not
    /// JSON): checks that they agree and that every value is finite. `name` is the input's name in
    /// error messages.
    pub fn from_parts(name: &str, shape: Vec<usize>, data: Vec<f32>) -> Result<Self, InputError> {
        let expected = shape.iter().try_fold(1usize, |n, d| n.checked_mul(*d)).unwrap_or(usize::MAX);
        if expected != data.len() {
            return Err(InputError::ShapeElementCount { shape, expected, found: data.len() });
        }
        if expected == 0 {
            return Err(InputError::Empty { path: name.to_owned() });
        }
        if let Some((index, value)) = data.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(InputError::NotFinite { path: format!("{name}[{index}]"), value: f64::from(*value) });
        }
        Ok(Self { shape, data })
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InputError {
    #[error("{path}: expected a number, found {found}")]
    NotNumber { path: String, found: &'static str },
    #[error("{path}: expected an array, found {found}")]
    NotArray { path: String, found: &'static str },
    #[error("{path}: expected {expected} elements like its siblings, found {found}")]
    Ragged { path: String, expected: usize, found: usize },
    #[error("{path}: is empty")]
    Empty { path: String },
    #[error("{path}: {value:e} is not a finite float32")]
    NotFinite { path: String, value: f64 },
    #[error("shape: {shape:?} holds {expected} elements but input has {found}")]
    ShapeElementCount { shape: Vec<usize>, expected: usize, found: usize },
    #[error("shape: given, but input is nested; \"shape\" goes with a flat array only")]
    ShapeWithNested,
    #[error("input: has shape {found:?}, the model expects {expected}")]
    WrongShape { found: Vec<usize>, expected: String },
    #[error("input: has {found} frames, the model runs at most {max} timesteps")]
    TooManyFrames { found: usize, max: usize },
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn number(value: &Value, path: impl FnOnce() -> String) -> Result<f32, InputError> {
    let Some(v) = value.as_f64() else {
        return Err(InputError::NotNumber { path: path(), found: kind_of(value) });
    };
    let narrowed = v as f32;
    if narrowed.is_finite() {
        Ok(narrowed)
    } else {
        Err(InputError::NotFinite { path: path(), value: v })
    }
}

/// Decodes `input` (nested arrays) or, when `shape` is given, a flat array of that shape.
pub fn decode_json_tensor(input: &Value, shape: Option<&[usize]>) -> Result<DenseTensor, InputError> {
    match shape {
        Some(shape) => decode_flat(input, shape),
        None => decode_nested(input),
    }
}

fn decode_flat(input: &Value, shape: &[usize]) -> Result<DenseTensor, InputError> {
    let items =
        input.as_array().ok_or(InputError::NotArray { path: "input".into(), found: kind_of(input) })?;
    if items.iter().any(Value::is_array) {
        return Err(InputError::ShapeWithNested);
    }
    // Checked: a shape is the client's to choose, and its product can overflow.
    let expected = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).unwrap_or(usize::MAX);
    if expected == 0 || items.is_empty() {
        return Err(InputError::Empty { path: "input".into() });
    }
    if expected != items.len() {
        return Err(InputError::ShapeElementCount { shape: shape.to_vec(), expected, found: items.len() });
    }
    let data = items
        .iter()
        .enumerate()
        .map(|(i, v)| number(v, || format!("input[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(DenseTensor { shape: shape.to_vec(), data })
}

/// The most elements a nested input preallocates for (4 MiB of float32).
const MAX_PREALLOCATED: usize = 1 << 20;

fn decode_nested(input: &Value) -> Result<DenseTensor, InputError> {
    // The shape is read off the first element at each depth; every other element must agree.
    let mut shape = Vec::new();
    let mut probe = input;
    while let Value::Array(items) = probe {
        if items.is_empty() {
            let path = format!("input{}", "[0]".repeat(shape.len()));
            return Err(InputError::Empty { path });
        }
        shape.push(items.len());
        probe = &items[0];
    }
    // The shape read off the first elements is only a claim until `walk` has checked every
    // sibling: a small body nested deep could claim billions of elements. Preallocate what a
    // real input needs at most, and let larger (valid, body-limited) ones grow.
    let claimed = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).unwrap_or(usize::MAX);
    let mut data = Vec::with_capacity(claimed.min(MAX_PREALLOCATED));
    let mut indices = Vec::with_capacity(shape.len());
    walk(input, &shape, &mut indices, &mut data)?;
    Ok(DenseTensor { shape, data })
}

/// Copies the numbers of `value` into `out`, checking every sibling against `shape`. `indices` is
/// where the walk is; it becomes a path such as `input[3][1]` only for an error message, so a
/// valid body costs no string formatting.
fn walk(
    value: &Value,
    shape: &[usize],
    indices: &mut Vec<usize>,
    out: &mut Vec<f32>,
) -> Result<(), InputError> {
    let Some((&expected, rest)) = shape.split_first() else {
        out.push(number(value, || element_path(indices))?);
        return Ok(());
    };
    let items = value
        .as_array()
        .ok_or_else(|| InputError::NotArray { path: element_path(indices), found: kind_of(value) })?;
    if items.len() != expected {
        return Err(InputError::Ragged { path: element_path(indices), expected, found: items.len() });
    }
    for (i, item) in items.iter().enumerate() {
        indices.push(i);
        walk(item, rest, indices, out)?;
        indices.pop();
    }
    Ok(())
}

fn element_path(indices: &[usize]) -> String {
    use std::fmt::Write;
    let mut path = String::from("input");
    for i in indices {
        let _ = write!(path, "[{i}]");
    }
    path
}

/// Checks the tensor against what the model takes and turns it into per-timestep frames.
pub fn into_frames(tensor: DenseTensor, contract: &ModelContract) -> Result<RequestFrames, InputError> {
    let wrong_shape = |found: &[usize]| InputError::WrongShape {
        found: found.to_vec(),
        expected: contract.describe_request_shape(),
    };
    match contract.input_kind {
        InputKind::Static if tensor.shape == contract.frame_shape => Ok(RequestFrames::Static(tensor.data)),
        InputKind::Static => Err(wrong_shape(&tensor.shape)),
        InputKind::Frames | InputKind::Events => match tensor.shape.split_first() {
            Some((&count, frame)) if frame == contract.frame_shape.as_slice() => {
                if count == 0 {
                    // Nothing to step: a sequence of no frames would leave the request no timestep.
                    return Err(InputError::Empty { path: "input".into() });
                }
                if count > contract.timesteps {
                    return Err(InputError::TooManyFrames { found: count, max: contract.timesteps });
                }
                Ok(RequestFrames::Sequence { data: tensor.data, count })
            }
            _ => Err(wrong_shape(&tensor.shape)),
        },
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn nested_arrays_give_shape_and_row_major_data() {
        let t = decode_json_tensor(&json!([[[1, 2], [3, 4.5]]]), None).expect("decodes");
        assert_eq!(t.shape, vec![1, 2, 2]);
        assert_eq!(t.data, vec![1.0, 2.0, 3.0, 4.5]);
    }

    #[test]
    fn flat_arrays_take_their_shape() {
        let t = decode_json_tensor(&json!([1, 2, 3, 4, 5, 6]), Some(&[1, 2, 3])).expect("decodes");
        assert_eq!(t.shape, vec![1, 2, 3]);
        assert_eq!(t.data.len(), 6);
        let err = decode_json_tensor(&json!([1, 2, 3]), Some(&[2, 2])).unwrap_err();
        assert_eq!(err.to_string(), "shape: [2, 2] holds 4 elements but input has 3");
        let err = decode_json_tensor(&json!([[1, 2]]), Some(&[2])).unwrap_err();
        assert_eq!(err, InputError::ShapeWithNested);
    }

    #[test]
    fn errors_name_the_element() {
        let err = decode_json_tensor(&json!([[1, 2], [3, "x"]]), None).unwrap_err();
        assert_eq!(err.to_string(), "input[1][1]: expected a number, found a string");
        let err = decode_json_tensor(&json!([[1, 2], [3]]), None).unwrap_err();
        assert_eq!(err.to_string(), "input[1]: expected 2 elements like its siblings, found 1");
        let err = decode_json_tensor(&json!([[1, 2], 3]), None).unwrap_err();
        assert_eq!(err.to_string(), "input[1]: expected an array, found a number");
        let err = decode_json_tensor(&json!([[1, [2]], [3, 4]]), None).unwrap_err();
        assert_eq!(err.to_string(), "input[0][1]: expected a number, found an array");
        let err = decode_json_tensor(&json!([[]]), None).unwrap_err();
        assert_eq!(err.to_string(), "input[0]: is empty");
        let err = decode_json_tensor(&json!([1e39]), None).unwrap_err();
        assert!(err.to_string().starts_with("input[0]: 1e39 is not a finite float32"), "{err}");
        let err = decode_json_tensor(&json!({"a": 1}), Some(&[1])).unwrap_err();
        assert_eq!(err.to_string(), "input: expected an array, found an object");
    }

    #[test]
    fn binary_tensors_must_match_their_shape_and_be_finite() {
        assert!(DenseTensor::from_parts("x", vec![2, 2], vec![0.0; 4]).is_ok());
        let err = DenseTensor::from_parts("x", vec![2, 2], vec![0.0; 3]).unwrap_err();
        assert_eq!(err.to_string(), "shape: [2, 2] holds 4 elements but input has 3");
        let err = DenseTensor::from_parts("x", vec![3], vec![0.0, f32::NAN, 1.0]).unwrap_err();
        assert_eq!(err.to_string(), "x[1]: NaN is not a finite float32");
        let err = DenseTensor::from_parts("x", vec![0], vec![]).unwrap_err();
        assert_eq!(err.to_string(), "x: is empty");
    }

    /// Found by reading for the fuzz targets: a 0 in a flat shape made an empty sequence (no
    /// timestep to step), a huge one overflowed, and a small deeply nested body made the decoder
    /// preallocate for the product of its first elements' lengths before checking the others.
    #[test]
    fn claimed_sizes_are_checked_before_they_are_trusted() {
        let err = decode_json_tensor(&json!([]), Some(&[0, 1, 8, 8])).unwrap_err();
        assert_eq!(err.to_string(), "input: is empty");
        let huge = [usize::MAX / 2, 3];
        let err = decode_json_tensor(&json!([1, 2]), Some(&huge)).unwrap_err();
        assert!(matches!(err, InputError::ShapeElementCount { expected: usize::MAX, .. }), "{err}");
        // 8 levels whose first element holds 100 items claim 10^16 elements in a body of ~800
        // numbers: the second item of each level is a number where an array belongs.
        let mut deep = json!(vec![1.0; 100]);
        for _ in 0..7 {
            let mut level = vec![json!(1.0); 100];
            level[0] = deep;
            deep = json!(level);
        }
        let err = decode_json_tensor(&deep, None).unwrap_err();
        assert!(matches!(err, InputError::Ragged { .. } | InputError::NotArray { .. }), "{err}");
    }

    #[test]
    fn a_scalar_is_a_rank_zero_tensor() {
        let t = decode_json_tensor(&json!(3), None).expect("decodes");
        assert!(t.shape.is_empty());
        assert_eq!(t.data, vec![3.0]);
    }
}
