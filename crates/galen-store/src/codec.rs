//! Binary encodings of the embedded store: write-ahead-log records and series chunks.
//!
//! Both start with a format version byte. A chunk holds the strictly increasing timestamps of one
//! series as varint deltas and its values XOR-ed with their predecessor (vital signs change little
//! between samples, so the XOR has long runs of trailing zeros): a 1 Hz heart rate costs about
//! 4 bytes a point instead of 16.

use crate::error::{Error, Result};

const WAL_VERSION: u8 = 1;
const CHUNK_VERSION: u8 = 1;

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
    let mut out = Vec::with_capacity(1 + points.len() * 20);
    out.push(WAL_VERSION);
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
    out
}

pub(crate) fn decode_wal(bytes: &[u8]) -> Result<Vec<WalPoint>> {
    let mut reader = Reader::new(bytes);
    if reader.byte()? != WAL_VERSION {
        return Err(Error::Corrupt(
            "unknown write-ahead log record version".into(),
        ));
    }
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
    let mut out = Vec::with_capacity(8 + points.len() * 6);
    out.push(CHUNK_VERSION);
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
    out
}

pub(crate) fn decode_chunk(bytes: &[u8]) -> Result<Vec<(i64, f64)>> {
    let mut reader = Reader::new(bytes);
    if reader.byte()? != CHUNK_VERSION {
        return Err(Error::Corrupt("unknown chunk version".into()));
    }
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
    }
}
