//! The remote-write request body, encoded straight from the shard queue.

use prost::encoding::{encode_key, encode_varint, encoded_len_varint, message, WireType};

use super::series::Queued;

/// Encode a `WriteRequest` with one `TimeSeries` per queued sample, straight from the queue
/// (no copies of the labels). Equal to encoding the [`crate::prompb::WriteRequest`] built from
/// the same samples.
pub fn encode_request(samples: &[Queued], buf: &mut Vec<u8>) {
    buf.clear();
    for (labels, sample) in samples {
        let len = labels
            .iter()
            .map(|l| message::encoded_len(1, l))
            .sum::<usize>()
            + message::encoded_len(2, sample);
        buf.reserve(len + 1 + encoded_len_varint(len as u64));
        encode_key(1, WireType::LengthDelimited, buf);
        encode_varint(len as u64, buf);
        for l in labels.iter() {
            message::encode(1, l, buf);
        }
        message::encode(2, sample, buf);
    }
}
