//! Binary encodings of the embedded store: write-ahead-log records and series chunks.
//!
//! Both start with a format version byte. Version 2 (written since schema 7) ends with a CRC-32
//! (IEEE 802.3 polynomial, as in zlib and ext4) of everything before it, little-endian: a bit
//! flipped on disk is reported as [`Error::Corrupt`] instead of being served as a wrong value.
//! Version 1 records (no checksum) are still read. A chunk holds the strictly increasing timestamps of one
//! series as varint deltas and its values XOR-ed with their predecessor (vital signs change little
//! between samples, so the XOR has long runs of trailing zeros): a 1 Hz heart rate costs about
//! 4 bytes a point instead of 16.

use crate::error::{Error, Result};

/// The checksummed format written now.
const SEALED: u8 = 2;
/// The first format, without a checksum; still read.
const UNSEALED: u8 = 1;
/// Bytes of the trailing checksum.
const CHECKSUM_BYTES: usize = 4;

/// Starts a record of the checksummed format.
fn start(capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity + 1 + CHECKSUM_BYTES);
    out.push(SEALED);
    out
}

/// Ends a record started by [`start`] with the checksum of its bytes.
fn seal(mut out: Vec<u8>) -> Vec<u8> {
    let checksum = crc32fast::hash(&out);
    out.extend_from_slice(&checksum.to_le_bytes());
    out
}

/// The payload of a record after its version byte, its checksum verified (version 2) or absent
/// (version 1). `what` names the record kind in errors.
fn unseal<'a>(bytes: &'a [u8], what: &str) -> Result<&'a [u8]> {
    match bytes.first() {
        Some(&SEALED) => {
            let Some(split) = bytes
                .len()
                .checked_sub(CHECKSUM_BYTES)
                .filter(|split| *split >= 1)
            else {
                return Err(Error::Corrupt(format!("{what} is truncated")));
            };
            let (body, stored) = bytes.split_at(split);
            let stored = u32::from_le_bytes(stored.try_into().unwrap_or_default());
            if crc32fast::hash(body) != stored {
                return Err(Error::Corrupt(format!("{what} fails its checksum")));
            }
            Ok(&body[1..])
        }
        Some(&UNSEALED) => Ok(&bytes[1..]),
        Some(_) => Err(Error::Corrupt(format!("unknown {what} version"))),
        None => Err(Error::Corrupt(format!("{what} is empty"))),
    }
}

/// One point as logged in the write-ahead log.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WalPoint {
    pub(crate) series: i64,
    pub(crate) time: i64,
    pub(crate) value: f64,
    pub(crate) external_id: Option<String>,
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

/// Reads from a byte slice, failing with [`Error::Corrupt`] on truncation.
struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, position: 0 }
    }

    fn byte(&mut self) -> Result<u8> {
        let byte = *self
            .bytes
            .get(self.position)
            .ok_or_else(|| Error::Corrupt("truncated record".into()))?;
        self.position += 1;
        Ok(byte)
    }

    fn varint(&mut self) -> Result<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(Error::Corrupt("varint too long".into()))
    }

    fn take(&mut self, length: usize) -> Result<&'a [u8]> {
        let end = self
            .position
            .checked_add(length)
            .filter(|end| *end <= self.bytes.len());
        let end = end.ok_or_else(|| Error::Corrupt("truncated record".into()))?;
        let slice = &self.bytes[self.position..end];
        self.position = end;
        Ok(slice)
    }

    fn f64(&mut self) -> Result<f64> {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(self.take(8)?);
        Ok(f64::from_le_bytes(raw))
    }

    fn done(&self) -> bool {
        self.position == self.bytes.len()
    }
}

pub(crate) fn encode_wal(points: &[WalPoint]) -> Vec<u8> {
    let mut out = start(points.len() * 20);
    for point in points {
        put_varint(&mut out, zigzag(point.series));
        put_varint(&mut out, zigzag(point.time));
        out.extend_from_slice(&point.value.to_le_bytes());
        match &point.external_id {
            None => put_varint(&mut out, 0),
            Some(id) => {
                put_varint(&mut out, id.len() as u64 + 1);
                out.extend_from_slice(id.as_bytes());
            }
        }
    }
    seal(out)
}

pub(crate) fn decode_wal(bytes: &[u8]) -> Result<Vec<WalPoint>> {
    let mut reader = Reader::new(unseal(bytes, "write-ahead log record")?);
    let mut points = Vec::new();
    while !reader.done() {
        let series = unzigzag(reader.varint()?);
        let time = unzigzag(reader.varint()?);
        let value = reader.f64()?;
        let id_length = reader.varint()?;
        let external_id = if id_length == 0 {
            None
        } else {
            let raw = reader.take(
                usize::try_from(id_length - 1).map_err(|_| Error::Corrupt("id length".into()))?,
            )?;
            Some(
                String::from_utf8(raw.to_vec())
                    .map_err(|_| Error::Corrupt("id is not UTF-8".into()))?,
            )
        };
        points.push(WalPoint {
            series,
            time,
            value,
            external_id,
        });
    }
    Ok(points)
}

/// Encodes points with strictly increasing times.
pub(crate) fn encode_chunk(points: &[(i64, f64)]) -> Vec<u8> {
    let mut out = start(8 + points.len() * 6);
    put_varint(&mut out, points.len() as u64);
    let mut previous_time = 0i64;
    let mut previous_bits = 0u64;
    for (index, (time, value)) in points.iter().enumerate() {
        if index == 0 {
            put_varint(&mut out, zigzag(*time));
        } else {
            put_varint(&mut out, time.wrapping_sub(previous_time) as u64);
        }
        previous_time = *time;
        let bits = value.to_bits();
        let xor = bits ^ previous_bits;
        previous_bits = bits;
        if xor == 0 {
            out.push(0);
        } else {
            let trailing = xor.trailing_zeros();
            out.push(trailing as u8 + 1);
            put_varint(&mut out, xor >> trailing);
        }
    }
    seal(out)
}

pub(crate) fn decode_chunk(bytes: &[u8]) -> Result<Vec<(i64, f64)>> {
    let mut reader = Reader::new(unseal(bytes, "chunk")?);
    let count =
        usize::try_from(reader.varint()?).map_err(|_| Error::Corrupt("chunk count".into()))?;
    let mut points = Vec::with_capacity(count.min(1 << 16));
    let mut time = 0i64;
    let mut bits = 0u64;
    for index in 0..count {
        if index == 0 {
            time = unzigzag(reader.varint()?);
        } else {
            time = time.wrapping_add(reader.varint()? as i64);
        }
        let shift = reader.byte()?;
        if shift != 0 {
            let trailing = u32::from(shift - 1);
            if trailing > 63 {
                return Err(Error::Corrupt("bad value encoding".into()));
            }
            bits ^= reader.varint()? << trailing;
        }
        points.push((time, f64::from_bits(bits)));
    }
    if !reader.done() {
        return Err(Error::Corrupt("trailing bytes in chunk".into()));
    }
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn chunk_round_trip(start in -1_000_000_000_000i64..4_000_000_000_000_000i64,
                            steps in proptest::collection::vec((1i64..10_000_000_000, any::<f64>()), 0..300)) {
            let mut time = start;
            let points: Vec<(i64, f64)> = steps.iter().map(|(delta, value)| { time += delta; (time, *value) }).collect();
            let decoded = decode_chunk(&encode_chunk(&points)).expect("decode");
            prop_assert_eq!(decoded.len(), points.len());
            for (left, right) in decoded.iter().zip(&points) {
                prop_assert_eq!(left.0, right.0);
                prop_assert_eq!(left.1.to_bits(), right.1.to_bits());
            }
        }

        #[test]
        fn wal_round_trip(points in proptest::collection::vec(
            (any::<i64>(), any::<i64>(), -1e9f64..1e9, proptest::option::of("[a-z0-9-]{0,20}")), 0..100)) {
            let points: Vec<WalPoint> = points.into_iter()
                .map(|(series, time, value, external_id)| WalPoint { series, time, value, external_id })
                .collect();
            prop_assert_eq!(decode_wal(&encode_wal(&points)).expect("decode"), points);
        }

        #[test]
        fn any_flipped_bit_is_reported(points in proptest::collection::vec((1i64..1_000_000, -1e6f64..1e6), 1..50),
                                      bit in any::<usize>()) {
            let mut time = 0;
            let points: Vec<(i64, f64)> = points.iter().map(|(delta, value)| { time += delta; (time, *value) }).collect();
            let mut encoded = encode_chunk(&points);
            let bit = bit % (encoded.len() * 8);
            encoded[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(matches!(decode_chunk(&encoded), Err(Error::Corrupt(_))));
            let mut wal = encode_wal(&points.iter().map(|(time, value)| WalPoint { series: 7, time: *time, value: *value, external_id: None }).collect::<Vec<_>>());
            let bit = bit % (wal.len() * 8);
            wal[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(matches!(decode_wal(&wal), Err(Error::Corrupt(_))));
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_chunk(&bytes);
            let _ = decode_wal(&bytes);
        }
    }

    #[test]
    fn vital_signs_compress() {
        let points: Vec<(i64, f64)> = (0..1000)
            .map(|second| {
                (
                    1_795_000_000_000_000 + second * 1_000_000,
                    60.0 + (second % 7) as f64,
                )
            })
            .collect();
        let encoded = encode_chunk(&points);
        assert!(
            encoded.len() < 6 * points.len(),
            "{} bytes for {} points",
            encoded.len(),
            points.len()
        );
    }

    #[test]
    fn truncation_is_corruption() {
        let encoded = encode_chunk(&[(1, 1.0), (2, 2.0)]);
        assert!(matches!(
            decode_chunk(&encoded[..encoded.len() - 1]),
            Err(Error::Corrupt(_))
        ));
        assert!(matches!(decode_chunk(&[9]), Err(Error::Corrupt(_))));
        assert!(matches!(decode_chunk(&[]), Err(Error::Corrupt(_))));
        assert!(matches!(
            decode_chunk(&[SEALED, 0, 0, 0]),
            Err(Error::Corrupt(_))
        ));
    }

    #[test]
    fn version_1_records_without_a_checksum_are_still_read() {
        // A version-1 chunk is the version-2 payload without the checksum (schema 6 wrote them).
        let sealed = encode_chunk(&[(1, 1.0), (2, 2.0)]);
        let payload = &sealed[1..sealed.len() - CHECKSUM_BYTES];
        let mut version_1 = vec![UNSEALED];
        version_1.extend_from_slice(payload);
        assert_eq!(
            decode_chunk(&version_1).expect("version 1"),
            vec![(1, 1.0), (2, 2.0)]
        );
        let mut wal = encode_wal(&[WalPoint {
            series: 3,
            time: 4,
            value: 5.0,
            external_id: None,
        }]);
        wal.truncate(wal.len() - CHECKSUM_BYTES);
        wal[0] = UNSEALED;
        assert_eq!(decode_wal(&wal).expect("version 1").len(), 1);
    }
}
