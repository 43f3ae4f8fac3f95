//! The chunked transfer coding (RFC 9112 §7.1): an incremental decoder and the two pieces
//! of an encoder. This stands for Twisted's `twisted.web.http._ChunkedTransferDecoder`
//! and `toChunk`.
//!
//! The invariant a reader must keep: the decoder is a state machine fed byte by byte
//! (body data excepted, handed out as whole runs), holding every count it needs in its
//! state, so input cut anywhere decodes to the same data and the same error; and it never
//! consumes a byte past the body's last CRLF, which is where a pipelined request starts.
//! Framing is strict: hexadecimal sizes only, CRLF only, extensions checked character by
//! character (Twisted accepted `0x`, signs and control characters: CVE-2022-24801).

use super::error::ChunkError;

/// The last chunk and the empty trailer section that end a chunked body.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// The longest chunk-size line (size and extensions, CRLF not counted).
const MAX_SIZE_LINE: usize = 4 * 1024;

/// The most bytes of trailer fields (their CRLFs counted, the final empty line not).
const MAX_TRAILERS: usize = 16 * 1024;

/// Appends `data` as one chunk to `out`: its size in hexadecimal, CRLF, the data, CRLF.
/// Appends nothing for empty data (an empty chunk would end the body: that is
/// [`LAST_CHUNK`]).
///
/// # Examples
///
/// ```
/// use torsion_web::parse::{LAST_CHUNK, encode_chunk};
///
/// let mut out = Vec::new();
/// encode_chunk(b"hello, world", &mut out);
/// encode_chunk(b"", &mut out);
/// out.extend_from_slice(LAST_CHUNK);
/// assert_eq!(out, b"c\r\nhello, world\r\n0\r\n\r\n");
/// ```
pub fn encode_chunk(data: &[u8], out: &mut Vec<u8>) {
    if data.is_empty() {
        return;
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut at = digits.len();
    let mut len = data.len();
    while len > 0 || at == digits.len() {
        at -= 1;
        digits[at] = HEX[len % 16];
        len /= 16;
    }
    out.reserve(digits.len() - at + data.len() + 4);
    out.extend_from_slice(&digits[at..]);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// What one [`ChunkedDecoder::decode`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded<'a> {
    /// How many bytes of the input were consumed (framing and data).
    pub consumed: usize,
    /// The body data found, a sub-slice of the input (empty if none).
    pub data: &'a [u8],
    /// Whether the body has ended: the last chunk and the trailers have been read, and
    /// the bytes after `consumed` belong to whatever follows the body.
    pub done: bool,
}

/// Where the decoder is in the chunked framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In the chunk size's hexadecimal digits.
    Size {
        digits: bool,
    },
    /// In whitespace after the size, before a `;`.
    SizeSpace,
    /// In a chunk extension: outside quotes, in a quoted string, after a backslash in one.
    Extension {
        quoted: bool,
        escaped: bool,
    },
    /// After the size line's CR.
    SizeLf {
        extension: bool,
    },
    /// In a chunk's data.
    Data {
        remaining: u64,
    },
    /// After a chunk's data, before its CR, then its LF.
    DataCr,
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerStart,
    /// In a trailer field's name, then its value.
    TrailerName,
    TrailerValue,
    /// After a trailer line's CR; `last` for the final empty line.
    TrailerLf {
        last: bool,
    },
    /// The body has ended.
    Done,
    /// A framing error was found; it is reported again on every call.
    Failed(ChunkError),
}

/// Decodes a chunked body incrementally, as it arrives: Twisted's
/// `_ChunkedTransferDecoder`. Chunk extensions are checked and skipped; trailer fields
/// are checked and discarded.
///
/// # Examples
///
/// ```
/// use torsion_web::parse::ChunkedDecoder;
///
/// let mut decoder = ChunkedDecoder::new();
/// let mut input: &[u8] = b"5\r\nhello\r\n6;lang=en\r\n world\r\n0\r\n\r\nGET /next";
/// let mut body = Vec::new();
/// loop {
///     let step = decoder.decode(input)?;
///     body.extend_from_slice(step.data);
///     input = &input[step.consumed..];
///     if step.done || step.consumed == 0 {
///         break;
///     }
/// }
/// assert_eq!(body, b"hello world");
/// assert!(decoder.is_done());
/// assert_eq!(input, b"GET /next");
/// # Ok::<(), torsion_web::parse::ChunkError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    /// The size being read, then the size of the chunk whose data follows.
    size: u64,
    /// Bytes of the current size line so far.
    line: usize,
    /// Bytes of trailer fields so far.
    trailers: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder::new()
    }
}

impl ChunkedDecoder {
    /// A decoder at the start of a chunked body.
    pub fn new() -> Self {
        ChunkedDecoder {
            state: State::Size { digits: false },
            size: 0,
            line: 0,
            trailers: 0,
        }
    }

    /// Whether the whole body, trailers included, has been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Reads as much of `input` as one step takes: framing up to and including at most
    /// one run of body data, which is returned as a sub-slice of `input`. Call again with
    /// the rest (`&input[consumed..]`) until `consumed` is 0 (more bytes are needed) or
    /// `done` is true (the rest follows the body). Once done, consumes nothing.
    ///
    /// # Errors
    ///
    /// A [`ChunkError`] for malformed framing; every one means 400 Bad Request, and the
    /// decoder keeps returning it.
    pub fn decode<'a>(&mut self, input: &'a [u8]) -> Result<Decoded<'a>, ChunkError> {
        let mut at = 0;
        while at < input.len() {
            match self.state {
                State::Done => break,
                State::Failed(error) => return Err(error),
                State::Data { remaining } => {
                    let available = input.len() - at;
                    let n = usize::try_from(remaining).map_or(available, |r| r.min(available));
                    let left = remaining - n as u64;
                    self.state = if left == 0 {
                        State::DataCr
                    } else {
                        State::Data { remaining: left }
                    };
                    return Ok(Decoded {
                        consumed: at + n,
                        data: &input[at..at + n],
                        done: false,
                    });
                }
                _ => {
                    if let Err(error) = self.step(input[at]) {
                        self.state = State::Failed(error);
                        return Err(error);
                    }
                    at += 1;
                }
            }
        }
        if let State::Failed(error) = self.state {
            return Err(error);
        }
        Ok(Decoded {
            consumed: at,
            data: &[],
            done: self.is_done(),
        })
    }

    /// Reads one byte of framing.
    fn step(&mut self, b: u8) -> Result<(), ChunkError> {
        if matches!(
            self.state,
            State::Size { .. } | State::SizeSpace | State::Extension { .. }
        ) && b != b'\r'
        {
            self.line += 1;
            if self.line > MAX_SIZE_LINE {
                return Err(ChunkError::LineTooLong);
            }
        }
        if matches!(
            self.state,
            State::TrailerName | State::TrailerValue | State::TrailerLf { last: false }
        ) || (self.state == State::TrailerStart && b != b'\r')
        {
            self.trailers += 1;
            if self.trailers > MAX_TRAILERS {
                return Err(ChunkError::TrailerTooLarge);
            }
        }
        self.state = match self.state {
            State::Size { digits } => match b {
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                    let digit = match b {
                        b'0'..=b'9' => b - b'0',
                        b'a'..=b'f' => b - b'a' + 10,
                        _ => b - b'A' + 10,
                    };
                    self.size = self
                        .size
                        .checked_mul(16)
                        .and_then(|size| size.checked_add(u64::from(digit)))
                        .ok_or(ChunkError::BadSize)?;
                    State::Size { digits: true }
                }
                b';' if digits => State::Extension {
                    quoted: false,
                    escaped: false,
                },
                b' ' | b'\t' if digits => State::SizeSpace,
                b'\r' if digits => State::SizeLf { extension: false },
                _ => return Err(ChunkError::BadSize),
            },
            State::SizeSpace => match b {
                b' ' | b'\t' => State::SizeSpace,
                b';' => State::Extension {
                    quoted: false,
                    escaped: false,
                },
                _ => return Err(ChunkError::BadSize),
            },
            State::Extension {
                quoted: false,
                escaped: _,
            } => match b {
                b'"' => State::Extension {
                    quoted: true,
                    escaped: false,
                },
                b'\r' => State::SizeLf { extension: true },
                b';' | b'=' | b' ' | b'\t' => self.state,
                _ if is_tchar(b) => self.state,
                _ => return Err(ChunkError::BadExtension),
            },
            State::Extension {
                quoted: true,
                escaped: false,
            } => match b {
                b'"' => State::Extension {
                    quoted: false,
                    escaped: false,
                },
                b'\\' => State::Extension {
                    quoted: true,
                    escaped: true,
                },
                b'\t' | b' '..=0x7e | 0x80..=0xff => self.state,
                _ => return Err(ChunkError::BadExtension),
            },
            State::Extension {
                quoted: true,
                escaped: true,
            } => match b {
                b'\t' | b' '..=0x7e | 0x80..=0xff => State::Extension {
                    quoted: true,
                    escaped: false,
                },
                _ => return Err(ChunkError::BadExtension),
            },
            State::SizeLf { extension } => match b {
                b'\n' => {
                    let size = self.size;
                    self.size = 0;
                    self.line = 0;
                    if size == 0 {
                        State::TrailerStart
                    } else {
                        State::Data { remaining: size }
                    }
                }
                _ if extension => return Err(ChunkError::BadExtension),
                _ => return Err(ChunkError::BadSize),
            },
            State::DataCr => match b {
                b'\r' => State::DataLf,
                _ => return Err(ChunkError::BadTerminator),
            },
            State::DataLf => match b {
                b'\n' => State::Size { digits: false },
                _ => return Err(ChunkError::BadTerminator),
            },
            State::TrailerStart => match b {
                b'\r' => State::TrailerLf { last: true },
                _ if is_tchar(b) => State::TrailerName,
                _ => return Err(ChunkError::BadTerminator),
            },
            State::TrailerName => match b {
                b':' => State::TrailerValue,
                _ if is_tchar(b) => State::TrailerName,
                _ => return Err(ChunkError::BadTerminator),
            },
            State::TrailerValue => match b {
                b'\r' => State::TrailerLf { last: false },
                b'\t' | b' '..=0x7e | 0x80..=0xff => State::TrailerValue,
                _ => return Err(ChunkError::BadTerminator),
            },
            State::TrailerLf { last } => match b {
                b'\n' if last => State::Done,
                b'\n' => State::TrailerStart,
                _ => return Err(ChunkError::BadTerminator),
            },
            // Handled by `decode` before any byte reaches here.
            State::Data { .. } | State::Done | State::Failed(_) => self.state,
        };
        Ok(())
    }
}

/// A token character (RFC 9110 §5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
