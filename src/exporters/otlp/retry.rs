//! What to do with a failed export: the OTLP retry rules and jittered exponential backoff.
//!
//! Retryable gRPC codes (OTLP spec, "Failures"; the Collector's `shouldRetry` is the same):
//! CANCELLED, DEADLINE_EXCEEDED, ABORTED, OUT_OF_RANGE, UNAVAILABLE, DATA_LOSS, and
//! RESOURCE_EXHAUSTED only when the status carries a `google.rpc.RetryInfo`. Everything else
//! is permanent. A server-given `RetryInfo.retry_delay` is a floor for the next wait.

use std::time::Duration;

use tonic::Code;

pub use crate::exporters::retry::RetryConfig;

/// How a failed call is to be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Retry, waiting at least the server's delay when it gave one.
    Retry(Option<Duration>),
    Permanent,
}

pub fn classify(status: &tonic::Status) -> Verdict {
    let delay = retry_delay(status.details());
    match status.code() {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => Verdict::Retry(delay),
        Code::ResourceExhausted if delay.is_some() => Verdict::Retry(delay),
        _ => Verdict::Permanent,
    }
}

/// `google.rpc.Status` (the `grpc-status-details-bin` trailer), just what is needed.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<Any>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Any {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<ProtoDuration>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ProtoDuration {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

/// The `RetryInfo.retry_delay` in a status' details, if any (malformed details are ignored).
pub fn retry_delay(details: &[u8]) -> Option<Duration> {
    use prost::Message;
    if details.is_empty() {
        return None;
    }
    let st = RpcStatus::decode(details).ok()?;
    let any = st
        .details
        .iter()
        .find(|a| a.type_url.ends_with("google.rpc.RetryInfo"))?;
    let d = RetryInfo::decode(any.value.as_slice()).ok()?.retry_delay?;
    let secs = u64::try_from(d.seconds).ok()?;
    let nanos = u32::try_from(d.nanos).ok()?.min(999_999_999);
    Some(Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn with_retry_info(code: Code, secs: i64) -> tonic::Status {
        let ri = RetryInfo {
            retry_delay: Some(ProtoDuration {
                seconds: secs,
                nanos: 0,
            }),
        };
        let st = RpcStatus {
            code: code as i32,
            message: "slow down".into(),
            details: vec![Any {
                type_url: "type.googleapis.com/google.rpc.RetryInfo".into(),
                value: ri.encode_to_vec(),
            }],
        };
        tonic::Status::with_details(code, "slow down", st.encode_to_vec().into())
    }

    #[test]
    fn otlp_retryable_codes() {
        for c in [
            Code::Cancelled,
            Code::DeadlineExceeded,
            Code::Aborted,
            Code::OutOfRange,
            Code::Unavailable,
            Code::DataLoss,
        ] {
            assert_eq!(classify(&tonic::Status::new(c, "x")), Verdict::Retry(None));
        }
        for c in [
            Code::Unknown,
            Code::InvalidArgument,
            Code::NotFound,
            Code::PermissionDenied,
            Code::Unauthenticated,
            Code::Unimplemented,
            Code::Internal,
            Code::ResourceExhausted,
        ] {
            assert_eq!(classify(&tonic::Status::new(c, "x")), Verdict::Permanent);
        }
    }

    #[test]
    fn resource_exhausted_retries_only_with_retry_info() {
        let st = with_retry_info(Code::ResourceExhausted, 3);
        assert_eq!(classify(&st), Verdict::Retry(Some(Duration::from_secs(3))));
        assert_eq!(retry_delay(b"\xff\xff garbage"), None);
    }
}
