//! The row-gather graph: the small ONNX model that rearranges a step session's state rows on the
//! device the model runs on.
//!
//! Why a graph: slot states live in memory ONNX Runtime allocated for the session's device (GPU
//! memory under `--device cuda`), so the host cannot move rows with `memcpy`, and ONNX Runtime's
//! `CopyTensors` only knows the data transfers of plugin execution providers (in 1.31 a copy
//! between two CPU tensors fails with "Data transfer implementation ... was not found"). A
//! `Gather` along the batch axis, run by a session on the same execution provider, moves any set
//! of rows in one call on every device: `gathered.i = Gather(source.i, rows, axis = 0)` for each
//! state `i`, sharing one `rows` index input.
//!
//! The graph is written here, at load time, from the model's state shapes: a few protobuf
//! messages of the public ONNX format (`onnx.proto`; only the fields this graph uses, with the
//! format's field numbers), encoded with prost.

use prost::Message;

/// The index input: which source row each output row takes (int64, one per output row).
pub const ROWS_INPUT: &str = "rows";

/// The name of state `index`'s source input (all rows of one state buffer).
pub fn source_name(index: usize) -> String {
    format!("source.{index}")
}

/// The name of state `index`'s output (the gathered rows).
pub fn gathered_name(index: usize) -> String {
    format!("gathered.{index}")
}

/// The ONNX operator set the graph is written against (`Gather` has been stable since 13).
const OPSET: i64 = 13;
/// ONNX IR version 8 (ONNX 1.10+): every ONNX Runtime this server loads reads it.
const IR_VERSION: i64 = 8;
const FLOAT: i32 = 1;
const INT64: i32 = 7;
const ATTRIBUTE_INT: i32 = 2;

/// The encoded gather graph for states whose rows have the shapes `row_shapes` (each without the
/// batch axis). Row counts are symbolic, so one graph serves every batch size.
pub fn gather_graph(row_shapes: &[Vec<usize>]) -> Vec<u8> {
    let rows = || Dimension { dim_value: None, dim_param: Some("rows".into()) };
    let tensor = |name: String, elem_type: i32, dims: Vec<Dimension>| ValueInfoProto {
        name,
        r#type: Some(TypeProto {
            tensor_type: Some(TypeTensor { elem_type, shape: Some(TensorShapeProto { dim: dims }) }),
        }),
    };
    let fixed = |shape: &[usize]| -> Vec<Dimension> {
        shape.iter().map(|&d| Dimension { dim_value: Some(d as i64), dim_param: None }).collect()
    };
    let mut input = vec![tensor(ROWS_INPUT.into(), INT64, vec![rows()])];
    let mut output = Vec::new();
    let mut node = Vec::new();
    for (index, shape) in row_shapes.iter().enumerate() {
        let source_rows = Dimension { dim_value: None, dim_param: Some("slots".into()) };
        input.push(tensor(
            source_name(index),
            FLOAT,
            std::iter::once(source_rows).chain(fixed(shape)).collect(),
        ));
        output.push(tensor(
            gathered_name(index),
            FLOAT,
            std::iter::once(rows()).chain(fixed(shape)).collect(),
        ));
        node.push(NodeProto {
            input: vec![source_name(index), ROWS_INPUT.into()],
            output: vec![gathered_name(index)],
            name: format!("gather.{index}"),
            op_type: "Gather".into(),
            attribute: vec![AttributeProto { name: "axis".into(), r#type: ATTRIBUTE_INT, i: 0 }],
        });
    }
    ModelProto {
        ir_version: IR_VERSION,
        producer_name: "spikeserve".into(),
        graph: Some(GraphProto { node, name: "row_gather".into(), input, output }),
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: OPSET }],
    }
    .encode_to_vec()
}

// The subset of onnx.proto this graph needs; field numbers are the format's.

#[derive(Clone, PartialEq, Message)]
struct ModelProto {
    #[prost(int64, tag = "1")]
    ir_version: i64,
    #[prost(string, tag = "2")]
    producer_name: String,
    #[prost(message, optional, tag = "7")]
    graph: Option<GraphProto>,
    #[prost(message, repeated, tag = "8")]
    opset_import: Vec<OperatorSetIdProto>,
}

#[derive(Clone, PartialEq, Message)]
struct OperatorSetIdProto {
    #[prost(string, tag = "1")]
    domain: String,
    #[prost(int64, tag = "2")]
    version: i64,
}

#[derive(Clone, PartialEq, Message)]
struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    node: Vec<NodeProto>,
    #[prost(string, tag = "2")]
    name: String,
    #[prost(message, repeated, tag = "11")]
    input: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "12")]
    output: Vec<ValueInfoProto>,
}

#[derive(Clone, PartialEq, Message)]
struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    output: Vec<String>,
    #[prost(string, tag = "3")]
    name: String,
    #[prost(string, tag = "4")]
    op_type: String,
    #[prost(message, repeated, tag = "5")]
    attribute: Vec<AttributeProto>,
}

#[derive(Clone, PartialEq, Message)]
struct AttributeProto {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(int64, tag = "3")]
    i: i64,
    #[prost(int32, tag = "20")]
    r#type: i32,
}

#[derive(Clone, PartialEq, Message)]
struct ValueInfoProto {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    r#type: Option<TypeProto>,
}

#[derive(Clone, PartialEq, Message)]
struct TypeProto {
    #[prost(message, optional, tag = "1")]
    tensor_type: Option<TypeTensor>,
}

#[derive(Clone, PartialEq, Message)]
struct TypeTensor {
    #[prost(int32, tag = "1")]
    elem_type: i32,
    #[prost(message, optional, tag = "2")]
    shape: Option<TensorShapeProto>,
}

#[derive(Clone, PartialEq, Message)]
struct TensorShapeProto {
    #[prost(message, repeated, tag = "1")]
    dim: Vec<Dimension>,
}

#[derive(Clone, PartialEq, Message)]
struct Dimension {
    #[prost(int64, optional, tag = "1")]
    dim_value: Option<i64>,
    #[prost(string, optional, tag = "2")]
    dim_param: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_graph_names_one_gather_per_state_over_a_shared_index() {
        let bytes = gather_graph(&[vec![16, 8, 8], vec![128]]);
        let model = ModelProto::decode(bytes.as_slice()).expect("decodes");
        let graph = model.graph.expect("graph");
        assert_eq!(model.opset_import[0].version, OPSET);
        let inputs: Vec<&str> = graph.input.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(inputs, ["rows", "source.0", "source.1"]);
        let outputs: Vec<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(outputs, ["gathered.0", "gathered.1"]);
        assert!(graph.node.iter().all(|n| n.op_type == "Gather" && n.input[1] == ROWS_INPUT));
        let dims = |value: &ValueInfoProto| -> Vec<Option<i64>> {
            let shape =
                value.r#type.as_ref().and_then(|t| t.tensor_type.as_ref()).and_then(|t| t.shape.as_ref());
            shape.map(|s| s.dim.iter().map(|d| d.dim_value).collect()).unwrap_or_default()
        };
        assert_eq!(dims(&graph.input[1]), [None, Some(16), Some(8), Some(8)]);
        assert_eq!(dims(&graph.output[1]), [None, Some(128)]);
    }
}
