//! MLLP framing: `0x0B`, the message, `0x1C 0x0D`.
//!
//! The decoder is fed whatever a socket read returned and yields complete frames. It copes with
//! what devices really send: a frame split across reads, several frames in one read, bytes before
//! the start byte (reported, then skipped), and an end byte without the final CR.

/// Start of a frame (vertical tab).
pub const START: u8 = 0x0B;
/// End of a frame (file separator), normally followed by [`CARRIAGE_RETURN`].
pub const END: u8 = 0x1C;
/// The byte after [`END`].
pub const CARRIAGE_RETURN: u8 = 0x0D;

/// Wraps `message` in an MLLP frame.
pub fn encode_frame(message: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(message.len() + 3);
    frame.push(START);
    frame.extend_from_slice(message);
    frame.push(END);
    frame.push(CARRIAGE_RETURN);
    frame
}

/// What the decoder found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete message (without the framing bytes).
    Message(Vec<u8>),
    /// Bytes outside any frame (before a start byte), skipped. Reported so that nothing is
    /// dropped silently.
    Garbage(Vec<u8>),
    /// A frame longer than the limit, reported once, when its end byte arrives (or when
    /// [`Decoder::finish`] gives it up); its bytes were discarded except the first
    /// [`OVERSIZE_HEAD`], kept so that the sender can be answered by its MSH and the message
    /// identified in the dead letter.
    Oversize {
        /// How many bytes the frame had.
        discarded: usize,
        /// Its first bytes (at most [`OVERSIZE_HEAD`]).
        head: Vec<u8>,
    },
}

/// Bytes of an oversize frame kept for its report: enough for any real MSH segment.
pub const OVERSIZE_HEAD: usize = 4096;

/// An oversize frame being skipped to its end.
#[derive(Debug, Clone)]
struct Skipping {
    head: Vec<u8>,
    discarded: usize,
}

/// Incremental MLLP decoder.
#[derive(Debug, Clone)]
pub struct Decoder {
    buffer: Vec<u8>,
    max_frame: usize,
    /// Inside an oversize frame: skip to its end.
    skipping: Option<Skipping>,
}

impl Decoder {
    /// A decoder that refuses frames longer than `max_frame` bytes.
    pub fn new(max_frame: usize) -> Decoder {
        Decoder {
            buffer: Vec::new(),
            max_frame: max_frame.max(1),
            skipping: None,
        }
    }

    /// Appends bytes read from the connection.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// Bytes received that do not yet form a complete frame (an oversize frame's discarded
    /// bytes included).
    pub fn pending(&self) -> usize {
        self.buffer.len()
            + self
                .skipping
                .as_ref()
                .map_or(0, |skipping| skipping.discarded)
    }

    /// Gives up the frame in progress (the connection closed): an unfinished oversize frame is
    /// reported as such; other unfinished bytes stay for [`Decoder::pending`].
    pub fn finish(&mut self) -> Option<Frame> {
        self.skipping.take().map(|skipping| Frame::Oversize {
            discarded: skipping.discarded,
            head: skipping.head,
        })
    }

    /// The next complete frame or report, if any. Call until it returns `None`.
    pub fn next_frame(&mut self) -> Option<Frame> {
        if let Some(skipping) = self.skipping.as_mut() {
            match self.buffer.iter().position(|byte| *byte == END) {
                Some(end) => {
                    skipping.discarded += end;
                    let skip =
                        end + usize::from(self.buffer.get(end + 1) == Some(&CARRIAGE_RETURN)) + 1;
                    self.buffer.drain(..skip.min(self.buffer.len()));
                    return self.finish();
                }
                None => {
                    skipping.discarded += self.buffer.len();
                    self.buffer.clear();
                    return None;
                }
            }
        }
        if self.buffer.is_empty() {
            return None;
        }
        let Some(start) = self.buffer.iter().position(|byte| *byte == START) else {
            // No frame started: everything here is garbage unless more may follow. Report it
            // once it is clearly not the start of a frame.
            let garbage = std::mem::take(&mut self.buffer);
            return Some(Frame::Garbage(garbage));
        };
        if start > 0 {
            let garbage: Vec<u8> = self.buffer.drain(..start).collect();
            // A stray CR or LF between frames is common and harmless.
            if garbage.iter().all(|byte| matches!(byte, b'\r' | b'\n')) {
                return self.next_frame();
            }
            return Some(Frame::Garbage(garbage));
        }
        match self.buffer[1..].iter().position(|byte| *byte == END) {
            Some(offset) => {
                let end = offset + 1;
                let message = self.buffer[1..end].to_vec();
                let after = end + 1;
                let consumed = if self.buffer.get(after) == Some(&CARRIAGE_RETURN) {
                    after + 1
                } else {
                    after
                };
                self.buffer.drain(..consumed.min(self.buffer.len()));
                if message.len() > self.max_frame {
                    return Some(Frame::Oversize {
                        discarded: message.len(),
                        head: message[..message.len().min(OVERSIZE_HEAD)].to_vec(),
                    });
                }
                Some(Frame::Message(message))
            }
            None if self.buffer.len() - 1 > self.max_frame => {
                // Reported once, at its end: one frame, one answer.
                self.skipping = Some(Skipping {
                    head: self.buffer[1..self.buffer.len().min(OVERSIZE_HEAD + 1)].to_vec(),
                    discarded: self.buffer.len() - 1,
                });
                self.buffer.clear();
                None
            }
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(decoder: &mut Decoder) -> Vec<Frame> {
        std::iter::from_fn(|| decoder.next_frame()).collect()
    }

    #[test]
    fn split_frames_several_per_read_and_garbage() {
        let mut decoder = Decoder::new(1024);
        let mut stream = b"noise".to_vec();
        stream.extend(encode_frame(b"MSH|first"));
        stream.extend(encode_frame(b"MSH|second"));
        stream.extend(b"\r\n");
        stream.extend(encode_frame(b"MSH|third"));
        // Fed one byte at a time, then all at once: the same frames.
        let mut one_by_one = Vec::new();
        for byte in &stream {
            decoder.push(&[*byte]);
            one_by_one.extend(frames(&mut decoder));
        }
        let mut whole = Decoder::new(1024);
        whole.push(&stream);
        let all = frames(&mut whole);
        let messages = |found: &[Frame]| -> Vec<Vec<u8>> {
            found
                .iter()
                .filter_map(|frame| match frame {
                    Frame::Message(message) => Some(message.clone()),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(
            messages(&all),
            [
                b"MSH|first".to_vec(),
                b"MSH|second".to_vec(),
                b"MSH|third".to_vec()
            ]
        );
        assert_eq!(messages(&one_by_one), messages(&all));
        assert_eq!(
            all[0],
            Frame::Garbage(b"noise".to_vec()),
            "garbage is reported, not dropped"
        );
    }

    #[test]
    fn missing_final_carriage_return_and_oversize() {
        let mut decoder = Decoder::new(8);
        decoder.push(&[START]);
        decoder.push(b"MSH|a");
        decoder.push(&[END]);
        decoder.push(&[START]);
        decoder.push(b"MSH|b");
        decoder.push(&[END, CARRIAGE_RETURN]);
        assert_eq!(
            frames(&mut decoder),
            [
                Frame::Message(b"MSH|a".to_vec()),
                Frame::Message(b"MSH|b".to_vec())
            ]
        );
        // An oversize frame arriving in pieces is reported once, at its end, with its head.
        decoder.push(&[START]);
        decoder.push(b"0123456789");
        assert_eq!(frames(&mut decoder), []);
        decoder.push(b"more");
        assert_eq!(frames(&mut decoder), []);
        assert_eq!(decoder.pending(), 14);
        decoder.push(b"!");
        decoder.push(&[END, CARRIAGE_RETURN]);
        decoder.push(&encode_frame(b"MSH|c"));
        assert_eq!(
            frames(&mut decoder),
            [
                Frame::Oversize {
                    discarded: 15,
                    head: b"0123456789".to_vec()
                },
                Frame::Message(b"MSH|c".to_vec())
            ]
        );
        // Whole in one read: the same single report.
        decoder.push(&encode_frame(b"0123456789ABC"));
        assert_eq!(
            frames(&mut decoder),
            [Frame::Oversize {
                discarded: 13,
                head: b"0123456789ABC".to_vec()
            }]
        );
        // Cut off by the connection closing: `finish` reports it.
        decoder.push(&[START]);
        decoder.push(b"0123456789ABCDEF");
        assert_eq!(frames(&mut decoder), []);
        assert_eq!(
            decoder.finish(),
            Some(Frame::Oversize {
                discarded: 16,
                head: b"0123456789ABCDEF".to_vec()
            })
        );
        assert_eq!(decoder.pending(), 0);
    }
}
