//! The wire format: a message is its sequence number (little-endian) padded to the message
//! size; the client's hello is its id.

use super::*;

/// Message `seq` of `size` bytes: the sequence number, then a pattern derived from it, so a
/// corrupted or misplaced echo is noticed.
pub(super) fn message(seq: u64, size: usize) -> Vec<u8> {
    let mut m = Vec::with_capacity(size);
    m.extend_from_slice(&seq.to_le_bytes());
    m.extend((SEQ_BYTES..size).map(|i| (seq as u8).wrapping_add(i as u8)));
    m
}

/// The sequence number of an echo, if it is exactly the message that number stands for.
pub(super) fn parse(data: &[u8], size: usize) -> Option<u64> {
    let seq = u64::from_le_bytes(data.get(..SEQ_BYTES)?.try_into().ok()?);
    (data.len() == size && data == message(seq, size).as_slice()).then_some(seq)
}
