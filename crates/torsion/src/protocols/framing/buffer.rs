//! The receive buffer every framer parses from: a `Vec` with a read offset (the string of
//! unparsed bytes each receiver of Twisted's `twisted.protocols.basic` keeps).
//!
//! The invariant to keep: **every byte is moved a bounded number of times**. A frame taken
//! out only moves the read offset; the unread bytes move to the front only once the read
//! ones are at least as many, so feeding and taking are O(1) amortised per byte, however
//! the stream is split.

/// Bytes received and not parsed yet: a `Vec` with a read offset.
#[derive(Debug, Clone, Default)]
pub(super) struct RecvBuffer {
    pub(super) data: Vec<u8>,
    /// Bytes before this index have been parsed.
    pub(super) start: usize,
}

impl RecvBuffer {
    /// Appends `bytes`, first moving the unread bytes to the front if the read ones are at
    /// least as many (each byte is moved at most once for each byte read before it: O(1)
    /// amortised). Returns how far the unread bytes moved back.
    pub(super) fn feed(&mut self, bytes: &[u8]) -> usize {
        let shift = self.compact();
        self.data.extend_from_slice(bytes);
        shift
    }

    fn compact(&mut self) -> usize {
        let shift = self.start;
        let live = self.data.len() - shift;
        if shift == 0 || shift < live {
            return 0;
        }
        self.data.copy_within(shift.., 0);
        self.data.truncate(live);
        self.start = 0;
        shift
    }

    pub(super) fn unread(&self) -> &[u8] {
        &self.data[self.start..]
    }

    pub(super) fn len(&self) -> usize {
        self.data.len() - self.start
    }

    pub(super) fn is_empty(&self) -> bool {
        self.start == self.data.len()
    }

    /// Marks the next `n` unread bytes read and returns them.
    pub(super) fn take(&mut self, n: usize) -> &[u8] {
        let from = self.start;
        self.start += n;
        &self.data[from..self.start]
    }

    pub(super) fn take_all(&mut self) -> &[u8] {
        self.take(self.len())
    }

    pub(super) fn take_all_owned(&mut self) -> Vec<u8> {
        let bytes = if self.start == 0 {
            std::mem::take(&mut self.data)
        } else {
            self.unread().to_vec()
        };
        self.clear();
        bytes
    }

    pub(super) fn clear(&mut self) {
        self.data.clear();
        self.start = 0;
    }

    /// Puts `bytes` in front of the unread bytes.
    pub(super) fn prepend(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.is_empty() {
            self.clear();
            self.data.extend_from_slice(bytes);
        } else if bytes.len() <= self.start {
            let at = self.start - bytes.len();
            self.data[at..self.start].copy_from_slice(bytes);
            self.start = at;
        } else {
            let mut data = Vec::with_capacity(bytes.len() + self.len());
            data.extend_from_slice(bytes);
            data.extend_from_slice(self.unread());
            self.data = data;
            self.start = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_buffer_compacts_only_when_the_read_bytes_outnumber_the_unread() {
        let mut buf = RecvBuffer::default();
        buf.feed(b"abcdef");
        buf.take(2);
        assert_eq!(buf.feed(b"g"), 0);
        assert_eq!(buf.unread(), b"cdefg");
        buf.take(3);
        assert_eq!(buf.feed(b"h"), 5);
        assert_eq!(buf.data, b"fgh");
        buf.take(1);
        buf.prepend(b"x");
        assert_eq!(buf.unread(), b"xgh");
        buf.prepend(b"yz");
        assert_eq!(buf.unread(), b"yzxgh");
        assert_eq!(buf.take_all_owned(), b"yzxgh");
        assert!(buf.is_empty());
    }
}
