//! Prometheus remote-write 1.0 messages (protobuf package `prometheus`).
//!
//! `proto/remote.proto` is the reference schema. These structs are written by hand with
//! `#[derive(prost::Message)]` and mirror its field numbers, types and `oneof`s exactly, so the
//! build needs no protobuf compiler and no build script. The tests below check the encoding
//! byte for byte against a golden vector that `protoc` produced from `proto/remote.proto`
//! (`proto/golden.py` regenerates it), and decode it back.
//!
//! Only the messages a remote-write sender needs are here: [`WriteRequest`], [`TimeSeries`],
//! [`Label`], [`Sample`], [`Exemplar`], [`MetricMetadata`] and the native [`Histogram`] with its
//! [`BucketSpan`]s.

/// The body of one remote-write request (before snappy compression).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
    #[prost(message, repeated, tag = "3")]
    pub metadata: Vec<MetricMetadata>,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct MetricMetadata {
    #[prost(enumeration = "metric_metadata::MetricType", tag = "1")]
    pub r#type: i32,
    #[prost(string, tag = "2")]
    pub metric_family_name: String,
    #[prost(string, tag = "4")]
    pub help: String,
    #[prost(string, tag = "5")]
    pub unit: String,
}

pub mod metric_metadata {
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, ::prost::Enumeration)]
    #[repr(i32)]
    pub enum MetricType {
        Unknown = 0,
        Counter = 1,
        Gauge = 2,
        Histogram = 3,
        Gaugehistogram = 4,
        Summary = 5,
        Info = 6,
        Stateset = 7,
    }
}

#[derive(Clone, Copy, PartialEq, ::prost::Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Exemplar {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(double, tag = "2")]
    pub value: f64,
    #[prost(int64, tag = "3")]
    pub timestamp: i64,
}

/// A native histogram.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Histogram {
    #[prost(double, tag = "3")]
    pub sum: f64,
    #[prost(sint32, tag = "4")]
    pub schema: i32,
    #[prost(double, tag = "5")]
    pub zero_threshold: f64,
    #[prost(message, repeated, tag = "8")]
    pub negative_spans: Vec<BucketSpan>,
    #[prost(sint64, repeated, tag = "9")]
    pub negative_deltas: Vec<i64>,
    #[prost(double, repeated, tag = "10")]
    pub negative_counts: Vec<f64>,
    #[prost(message, repeated, tag = "11")]
    pub positive_spans: Vec<BucketSpan>,
    #[prost(sint64, repeated, tag = "12")]
    pub positive_deltas: Vec<i64>,
    #[prost(double, repeated, tag = "13")]
    pub positive_counts: Vec<f64>,
    #[prost(enumeration = "histogram::ResetHint", tag = "14")]
    pub reset_hint: i32,
    #[prost(int64, tag = "15")]
    pub timestamp: i64,
    #[prost(double, repeated, tag = "16")]
    pub custom_values: Vec<f64>,
    #[prost(oneof = "histogram::Count", tags = "1, 2")]
    pub count: Option<histogram::Count>,
    #[prost(oneof = "histogram::ZeroCount", tags = "6, 7")]
    pub zero_count: Option<histogram::ZeroCount>,
}

pub mod histogram {
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, ::prost::Enumeration)]
    #[repr(i32)]
    pub enum ResetHint {
        Unknown = 0,
        Yes = 1,
        No = 2,
        Gauge = 3,
    }

    #[derive(Clone, Copy, PartialEq, ::prost::Oneof)]
    pub enum Count {
        #[prost(uint64, tag = "1")]
        CountInt(u64),
        #[prost(double, tag = "2")]
        CountFloat(f64),
    }

    #[derive(Clone, Copy, PartialEq, ::prost::Oneof)]
    pub enum ZeroCount {
        #[prost(uint64, tag = "6")]
        ZeroCountInt(u64),
        #[prost(double, tag = "7")]
        ZeroCountFloat(f64),
    }
}

#[derive(Clone, Copy, PartialEq, ::prost::Message)]
pub struct BucketSpan {
    #[prost(sint32, tag = "1")]
    pub offset: i32,
    #[prost(uint32, tag = "2")]
    pub length: u32,
}

#[derive(Clone, PartialEq, ::prost::Message)]
pub struct TimeSeries {
    /// Sorted by name, names unique.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// In timestamp order.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
    #[prost(message, repeated, tag = "3")]
    pub exemplars: Vec<Exemplar>,
    #[prost(message, repeated, tag = "4")]
    pub histograms: Vec<Histogram>,
}

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, ::prost::Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// `proto/golden.py`: protoc's encoding of the request built in [`golden_request`].
    const GOLDEN: &str = "0af1010a270a085f5f6e616d655f5f121b63656c6572795f7461736b5f7375636365656465645f746f74616c0a0d0a036a6f62120663656c657279121009000000000000084010b3cca6d8ab331210090000000000001240109bd4a6d8ab331a240a0e0a0874726163655f69641202616211000000000000d03f18ffffffffffffffffff01223408051900000000000004c02005299d978ccf08ba5b2530014204080310014a01025a0210025a04080610016203020104700278072237110000000000000440200439000000000000e03f5a04080210016a0800000000000000408201109a9999999999b93f000000000000f03f1a2f0803121363656c6572795f7461736b5f72756e74696d65220d5461736b2072756e74696d652e2a077365636f6e6473";

    fn label(name: &str, value: &str) -> Label {
        Label {
            name: name.into(),
            value: value.into(),
        }
    }

    fn golden_request() -> WriteRequest {
        WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![
                    label("__name__", "celery_task_succeeded_total"),
                    label("job", "celery"),
                ],
                samples: vec![
                    Sample {
                        value: 3.0,
                        timestamp: 1_764_074_563_123,
                    },
                    Sample {
                        value: 4.5,
                        timestamp: 1_764_074_564_123,
                    },
                ],
                exemplars: vec![Exemplar {
                    labels: vec![label("trace_id", "ab")],
                    value: 0.25,
                    timestamp: -1,
                }],
                histograms: vec![
                    Histogram {
                        count: Some(histogram::Count::CountInt(5)),
                        sum: -2.5,
                        schema: -3,
                        zero_threshold: 1e-128,
                        zero_count: Some(histogram::ZeroCount::ZeroCountInt(1)),
                        negative_spans: vec![BucketSpan {
                            offset: -2,
                            length: 1,
                        }],
                        negative_deltas: vec![1],
                        positive_spans: vec![
                            BucketSpan {
                                offset: 0,
                                length: 2,
                            },
                            BucketSpan {
                                offset: 3,
                                length: 1,
                            },
                        ],
                        positive_deltas: vec![1, -1, 2],
                        reset_hint: histogram::ResetHint::No as i32,
                        timestamp: 7,
                        ..Default::default()
                    },
                    Histogram {
                        count: Some(histogram::Count::CountFloat(2.5)),
                        zero_count: Some(histogram::ZeroCount::ZeroCountFloat(0.5)),
                        schema: 2,
                        positive_spans: vec![BucketSpan {
                            offset: 1,
                            length: 1,
                        }],
                        positive_counts: vec![2.0],
                        custom_values: vec![0.1, 1.0],
                        ..Default::default()
                    },
                ],
            }],
            metadata: vec![MetricMetadata {
                r#type: metric_metadata::MetricType::Histogram as i32,
                metric_family_name: "celery_task_runtime".into(),
                help: "Task runtime.".into(),
                unit: "seconds".into(),
            }],
        }
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn encoding_matches_protoc() {
        let golden = unhex(GOLDEN);
        assert_eq!(golden_request().encode_to_vec(), golden);
        assert_eq!(WriteRequest::decode(&golden[..]).unwrap(), golden_request());
    }
}
