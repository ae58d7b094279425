//! HL7 v2 message structure: segments, fields, repetitions, components, subcomponents, with the
//! message's own delimiters (MSH-1, MSH-2) and escape sequences.
//!
//! Parsing is lenient about what devices get wrong (LF or CRLF between segments, trailing
//! separators, empty segments) and strict only where meaning would be lost: a message must start
//! with `MSH` and declare its delimiters.

use std::borrow::Cow;

/// Why a text is not an HL7 v2 message at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// It does not start with an MSH segment.
    NoHeader,
    /// MSH-1/MSH-2 do not give usable delimiters.
    BadDelimiters,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseError::NoHeader => {
                formatter.write_str("the message does not start with an MSH segment")
            }
            ParseError::BadDelimiters => {
                formatter.write_str("MSH-1 and MSH-2 do not declare usable delimiters")
            }
        }
    }
}

impl std::error::Error for ParseError {}

/// The delimiters a message declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delimiters {
    /// Between fields (MSH-1), usually `|`.
    pub field: char,
    /// Between components, usually `^`.
    pub component: char,
    /// Between repetitions, usually `~`.
    pub repetition: char,
    /// Starts and ends an escape sequence, usually `\`.
    pub escape: char,
    /// Between subcomponents, usually `&`.
    pub subcomponent: char,
}

impl Default for Delimiters {
    fn default() -> Delimiters {
        Delimiters {
            field: '|',
            component: '^',
            repetition: '~',
            escape: '\\',
            subcomponent: '&',
        }
    }
}

impl Delimiters {
    /// The MSH-2 encoding characters.
    pub fn encoding_characters(&self) -> String {
        [
            self.component,
            self.repetition,
            self.escape,
            self.subcomponent,
        ]
        .iter()
        .collect()
    }

    /// Decodes escape sequences (`\F\`, `\S\`, `\T\`, `\R\`, `\E\`, `\Xhh..\`) in `text`;
    /// unknown sequences are kept as written.
    pub fn unescape<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if !text.contains(self.escape) {
            return Cow::Borrowed(text);
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find(self.escape) {
            out.push_str(&rest[..start]);
            let after = &rest[start + self.escape.len_utf8()..];
            match after.find(self.escape) {
                Some(end) => {
                    let sequence = &after[..end];
                    match sequence {
                        "F" => out.push(self.field),
                        "S" => out.push(self.component),
                        "T" => out.push(self.subcomponent),
                        "R" => out.push(self.repetition),
                        "E" => out.push(self.escape),
                        hex if hex.starts_with('X')
                            && hex.len() > 1
                            && hex.len() % 2 == 1
                            && hex[1..].bytes().all(|byte| byte.is_ascii_hexdigit()) =>
                        {
                            for pair in hex.as_bytes()[1..].chunks(2) {
                                let text = std::str::from_utf8(pair).unwrap_or("3F");
                                let byte = u8::from_str_radix(text, 16).unwrap_or(b'?');
                                out.push(char::from(byte));
                            }
                        }
                        other => {
                            out.push(self.escape);
                            out.push_str(other);
                            out.push(self.escape);
                        }
                    }
                    rest = &after[end + self.escape.len_utf8()..];
                }
                None => {
                    out.push_str(&rest[start..]);
                    rest = "";
                }
            }
        }
        out.push_str(rest);
        Cow::Owned(out)
    }

    /// Escapes the delimiters in `text` so it can be placed in a field.
    pub fn escape(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        for character in text.chars() {
            let sequence = if character == self.escape {
                Some('E')
            } else if character == self.field {
                Some('F')
            } else if character == self.component {
                Some('S')
            } else if character == self.subcomponent {
                Some('T')
            } else if character == self.repetition {
                Some('R')
            } else {
                None
            };
            match sequence {
                Some(letter) => {
                    out.push(self.escape);
                    out.push(letter);
                    out.push(self.escape);
                }
                // Segment separators inside a value would split the segment.
                None if character == '\r' || character == '\n' => out.push(' '),
                None => out.push(character),
            }
        }
        out
    }
}

/// One segment: its name and its fields as written (field 1 is the first after the name; for
/// MSH, field 1 is the field separator itself and field 2 the encoding characters, as in the
/// standard's numbering).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment<'a> {
    /// `MSH`, `PID`, `OBX`, ...
    pub name: &'a str,
    fields: Vec<&'a str>,
}

impl<'a> Segment<'a> {
    /// Raw text of field `number` (1-based, standard numbering); empty if absent.
    pub fn raw(&self, number: usize) -> &'a str {
        number
            .checked_sub(1)
            .and_then(|index| self.fields.get(index))
            .copied()
            .unwrap_or("")
    }

    /// Number of fields present.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether the segment has no fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
}

/// A parsed message, borrowing its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    /// The delimiters it declares.
    pub delimiters: Delimiters,
    /// Its segments in order (empty lines skipped).
    pub segments: Vec<Segment<'a>>,
}

impl<'a> Message<'a> {
    /// Parses `text`. Segments may be separated by CR, LF or CRLF.
    pub fn parse(text: &'a str) -> Result<Message<'a>, ParseError> {
        let text = text.trim_start_matches(['\r', '\n', ' ']);
        if !text.starts_with("MSH") {
            return Err(ParseError::NoHeader);
        }
        let mut characters = text[3..].chars();
        let field = characters.next().ok_or(ParseError::BadDelimiters)?;
        let encoding: Vec<char> = characters
            .take_while(|character| *character != field)
            .collect();
        if field.is_alphanumeric() || field == '\r' || field == '\n' || encoding.len() < 2 {
            return Err(ParseError::BadDelimiters);
        }
        let defaults = Delimiters::default();
        let delimiters = Delimiters {
            field,
            component: encoding[0],
            repetition: encoding[1],
            escape: encoding.get(2).copied().unwrap_or(defaults.escape),
            subcomponent: encoding.get(3).copied().unwrap_or(defaults.subcomponent),
        };
        let distinct = [
            delimiters.field,
            delimiters.component,
            delimiters.repetition,
            delimiters.escape,
            delimiters.subcomponent,
        ];
        if (0..distinct.len()).any(|i| distinct[i + 1..].contains(&distinct[i])) {
            return Err(ParseError::BadDelimiters);
        }
        let mut segments = Vec::new();
        for line in text.split(['\r', '\n']) {
            if line.trim().is_empty() {
                continue;
            }
            let mut parts = line.split(delimiters.field);
            let name = parts.next().unwrap_or("").trim();
            let mut fields: Vec<&'a str> = Vec::new();
            if name == "MSH" {
                // MSH-1 is the separator itself; MSH-2 onwards follow. (A repeated MSH line
                // without its separator, as the fuzzer found, gets no MSH-1.)
                if let Some(separator) = line.get(3..3 + field.len_utf8())
                    && separator.starts_with(field)
                {
                    fields.push(separator);
                }
            }
            fields.extend(parts);
            segments.push(Segment { name, fields });
        }
        Ok(Message {
            delimiters,
            segments,
        })
    }

    /// The first segment called `name`.
    pub fn segment(&self, name: &str) -> Option<&Segment<'a>> {
        self.segments.iter().find(|segment| segment.name == name)
    }

    /// The header (always present after a successful parse).
    pub fn header(&self) -> &Segment<'a> {
        &self.segments[0]
    }

    /// Component `component` (1-based) of the first repetition of `field` text, unescaped.
    pub fn component<'t>(&self, field: &'t str, component: usize) -> Cow<'t, str> {
        let first = field.split(self.delimiters.repetition).next().unwrap_or("");
        let part = component
            .checked_sub(1)
            .and_then(|index| first.split(self.delimiters.component).nth(index))
            .unwrap_or("");
        let part = part
            .split(self.delimiters.subcomponent)
            .next()
            .unwrap_or("");
        self.delimiters.unescape(part)
    }

    /// The whole first repetition of `field`, unescaped (components kept with their separator).
    pub fn value<'t>(&self, field: &'t str) -> Cow<'t, str> {
        let first = field.split(self.delimiters.repetition).next().unwrap_or("");
        self.delimiters.unescape(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delimiters_fields_components_and_escapes() {
        let text = "MSH|^~\\&|MON^0012345678ABCDEF^EUI-64||||20261123080000||ORU^R01^ORU_R01|42|P|2.6\r\
                    OBX|1|ST|x^y^MDC||a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f\\X41\\\n\
                    \n\
                    PID|||MRN-1^^^HOSP~OTHER\r\n";
        let message = Message::parse(text).expect("parses");
        assert_eq!(message.delimiters, Delimiters::default());
        let names: Vec<&str> = message
            .segments
            .iter()
            .map(|segment| segment.name)
            .collect();
        assert_eq!(
            names,
            ["MSH", "OBX", "PID"],
            "CR, LF and CRLF separate segments"
        );
        let header = message.header();
        assert_eq!(header.raw(1), "|");
        assert_eq!(header.raw(2), "^~\\&");
        assert_eq!(header.raw(10), "42");
        assert_eq!(message.component(header.raw(9), 2), "R01");
        assert_eq!(message.component(header.raw(3), 2), "0012345678ABCDEF");
        let obx = message.segment("OBX").expect("OBX");
        assert_eq!(message.value(obx.raw(5)), "a|b^c&d~e\\fA");
        let pid = message.segment("PID").expect("PID");
        assert_eq!(
            message.component(pid.raw(3), 1),
            "MRN-1",
            "first repetition"
        );
        assert_eq!(message.component(pid.raw(3), 4), "HOSP");
        assert_eq!(pid.raw(40), "", "absent fields are empty");
    }

    #[test]
    fn custom_delimiters_and_refusals() {
        let message = Message::parse("MSH#*!@%#A#B\rPID###X*Y").expect("custom delimiters");
        assert_eq!(message.delimiters.field, '#');
        assert_eq!(message.delimiters.component, '*');
        let pid = message.segment("PID").expect("PID");
        assert_eq!(message.component(pid.raw(3), 2), "Y");
        assert_eq!(Message::parse("PID|1"), Err(ParseError::NoHeader));
        assert_eq!(Message::parse("MSH"), Err(ParseError::BadDelimiters));
        assert_eq!(Message::parse("MSH|^|"), Err(ParseError::BadDelimiters));
        assert_eq!(Message::parse("MSH|^^\\&|"), Err(ParseError::BadDelimiters));
    }

    #[test]
    fn a_second_msh_without_separator_does_not_panic() {
        // Found by the `oru` fuzz target: "MSH", an invalid byte as separator, LF, "MSH".
        let text = String::from_utf8_lossy(b"MSH\x8c\nMSH").into_owned();
        let message = Message::parse(&text).expect("parses");
        assert_eq!(message.segments.len(), 2);
        assert_eq!(message.segments[1].raw(1), "");
    }

    #[test]
    fn escaping_round_trips() {
        let delimiters = Delimiters::default();
        for text in ["plain", "a|b^c&d~e\\f", "\\", "", "line\rbreak"] {
            let escaped = delimiters.escape(text);
            assert!(!escaped.contains('|') && !escaped.contains('\r'));
            assert_eq!(delimiters.unescape(&escaped), text.replace('\r', " "));
        }
    }
}
